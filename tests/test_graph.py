"""Association-graph features: known answers on hand-made graphs, independence from the edge
order, the edge file's checks, and the catalogue and refresh at the bureau."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bureau_node import edges as edge_file
from bureau_node import graph
from bureau_node.features import BureauFeatures
from bureau_node.graph import RELATIONS, Edges, graph_features
from bureau_node.graph_source import GraphSource
from protocols.errors import InputDataError
from protocols.ids import IdType
from xinrong.synthetic import generate_usccs

R = {name: i for i, name in enumerate(RELATIONS)}


def make_edges(rows: list[tuple[int, int, str]], weights: list[float] | None = None) -> Edges:
    return Edges(
        src=np.array([a for a, _, _ in rows], dtype=np.int64),
        dst=np.array([b for _, b, _ in rows], dtype=np.int64),
        relation=np.array([R[r] for _, _, r in rows], dtype=np.int8),
        weight=np.array(weights if weights is not None else [np.nan] * len(rows)),
    )


def no_flags(n: int) -> dict[str, np.ndarray]:
    return {f: np.zeros(n, dtype=bool) for f in graph.FLAGS}


def test_three_firm_guarantee_circle():
    # firms 0 -> 1 -> 2 -> 0 guarantee each other; firm 3 guarantees firm 0 from outside
    rows = [(0, 1, "guarantee"), (1, 2, "guarantee"), (2, 0, "guarantee"), (3, 0, "guarantee")]
    f = graph_features(4, 4, make_edges(rows, [100.0, 200.0, 300.0, 50.0]), no_flags(4))
    assert f["graph_guarantee_circle_size"].tolist() == [3, 3, 3, 0]
    assert f["graph_guarantees_given"].tolist() == [1, 1, 1, 1]
    assert f["graph_guarantees_received"].tolist() == [2, 1, 1, 0]
    assert f["graph_guarantee_amount_given"].tolist() == [100, 200, 300, 50]
    assert f["graph_guarantee_amount_received"].tolist() == [350, 100, 200, 0]
    # 0, 1, 2 are related to each other directly; 3 to 0 directly, to 1 and 2 through 0
    # (and 1 and 2 to 3 through 0)
    assert f["graph_related_guarantee"].tolist() == [3, 3, 3, 3]
    assert f["graph_component_size"].tolist() == [4, 4, 4, 4]


def test_pagerank_of_a_circle_is_uniform_and_matches_a_dense_solution():
    circle = make_edges([(0, 1, "guarantee"), (1, 2, "guarantee"), (2, 0, "guarantee")])
    f = graph_features(3, 3, circle, no_flags(3))
    np.testing.assert_allclose(f["graph_guarantee_pagerank"], [1.0, 1.0, 1.0], atol=1e-9)

    rng = np.random.default_rng(4)
    n = 30
    pairs = {(int(a), int(b)) for a, b in rng.integers(0, n, size=(70, 2)) if a != b}
    src = np.array([a for a, _ in sorted(pairs)])
    dst = np.array([b for _, b in sorted(pairs)])
    # dense reference: r = d (M r + dangling r / n) + (1 - d) / n, solved directly
    d = graph.PAGERANK_DAMPING
    out = np.bincount(src, minlength=n)
    m = np.zeros((n, n))
    m[dst, src] = 1.0 / out[src]
    m[:, out == 0] = 1.0 / n
    reference = np.linalg.solve(np.eye(n) - d * m, np.full(n, (1 - d) / n))
    np.testing.assert_allclose(graph.pagerank(src, dst, n), reference, atol=1e-9)


def test_star_of_firms_at_one_address():
    # firms 0..4 registered at address node 7; firm 5 at its own address node 8; firm 6 none
    rows = [(i, 7, "address") for i in range(5)] + [(5, 8, "address")]
    f = graph_features(7, 9, make_edges(rows), no_flags(7))
    assert f["graph_largest_address_cluster"].tolist() == [5, 5, 5, 5, 5, 1, 0]
    assert f["graph_related_address"].tolist() == [4, 4, 4, 4, 4, 0, 0]
    assert f["graph_component_size"].tolist() == [5, 5, 5, 5, 5, 1, 1]
    assert f["graph_largest_phone_cluster"].tolist() == [0] * 7
    assert np.isnan(f["graph_share_watch_list"][5:]).all()  # nothing related: unknown


def test_a_registration_hub_is_not_expanded_into_pairs(monkeypatch):
    monkeypatch.setattr(graph, "HUB_CAP", 3)
    rows = [(i, 9, "address") for i in range(5)] + [(5, 10, "address"), (6, 10, "address")]
    f = graph_features(7, 11, make_edges(rows), no_flags(7))
    assert f["graph_related_address"].tolist() == [0, 0, 0, 0, 0, 1, 1]
    assert f["graph_largest_address_cluster"].tolist() == [5, 5, 5, 5, 5, 2, 2]


def test_firm_whose_only_shareholder_is_on_a_watch_list():
    # firm 0 (on the watch list) owns firm 1; person node 3 owns firm 2
    rows = [(0, 1, "shareholder"), (3, 2, "shareholder")]
    flags = no_flags(3)
    flags["watch_list"] = np.array([True, False, False])
    f = graph_features(3, 4, make_edges(rows), flags)
    assert f["graph_related_shareholder"].tolist() == [1, 1, 0]
    assert f["graph_related_watch_list"].tolist() == [0, 1, 0]
    assert f["graph_share_watch_list"][:2].tolist() == [0.0, 1.0]
    assert np.isnan(f["graph_share_watch_list"][2])
    assert f["graph_related_defendant"].tolist() == [0, 0, 0]


def test_related_enterprises_are_counted_once():
    # persons 2 and 3 are both legal representatives... of firms 0 and 1; 0 guarantees 1 too
    rows = [(2, 0, "legal_rep"), (2, 1, "legal_rep"), (3, 0, "legal_rep"), (3, 1, "legal_rep")]
    rows += [(0, 1, "guarantee"), (1, 0, "guarantee")]
    flags = no_flags(2)
    flags["defendant"] = np.array([False, True])
    f = graph_features(2, 4, make_edges(rows), flags)
    assert f["graph_related_legal_rep"].tolist() == [1, 1]
    assert f["graph_related_guarantee"].tolist() == [1, 1]
    assert f["graph_related_defendant"].tolist() == [1, 0]  # over all relations, once
    assert f["graph_share_defendant"].tolist() == [1.0, 0.0]
    assert f["graph_guarantee_circle_size"].tolist() == [2, 2]  # mutual guarantee (互保)


edge_lists = st.lists(
    st.tuples(
        st.integers(0, 11),
        st.integers(0, 11),
        st.sampled_from(RELATIONS),
        st.one_of(st.just(float("nan")), st.floats(0, 1e6)),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(edge_lists, st.randoms(use_true_random=False), st.integers(0, 5))
def test_features_do_not_depend_on_edge_order(rows, shuffler, repeats):
    n_enterprises, n_nodes = 8, 12
    flags = {
        "watch_list": np.arange(n_enterprises) % 3 == 0,
        "defendant": np.arange(n_enterprises) % 2 == 1,
    }

    def features(order: list) -> dict[str, np.ndarray]:
        weights = [w for *_, w in order]
        return graph_features(
            n_enterprises, n_nodes, make_edges([r[:3] for r in order], weights), flags
        )

    first = features(rows)
    shuffled = list(rows) + [rows[i % len(rows)] for i in range(repeats)] if rows else []
    shuffler.shuffle(shuffled)
    second = features(shuffled)
    for name in first:
        if "amount" in name:  # a repeated guarantee adds its amount: compare the rest
            continue
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)
    reordered = list(rows)
    shuffler.shuffle(reordered)
    third = features(reordered)
    for name in first:  # repeated guarantees' amounts are sums: equal up to rounding
        np.testing.assert_allclose(first[name], third[name], rtol=1e-12, err_msg=name)


# --------------------------------------------------------------------------- the edge file

HASH_A = "a" * 64
HASH_B = "0123456789abcdef" * 2


@pytest.fixture
def bureau_file(tmp_path):
    codes = [c.decode() for c in generate_usccs(4, np.random.default_rng(1))]
    table = pa.table(
        {
            "uscc": codes,
            "abnormal_operation": pa.array([1, 0, 0, 0], pa.int8()),
            "court_judgements_3y": pa.array([0, 2, 0, None], pa.int32()),
        }
    )
    path = tmp_path / "bureau.csv"
    pacsv.write_csv(table, path)
    return path, codes


def write_edges(path, rows):
    header = "src,dst,relation,since,weight\n"
    path.write_text(header + "".join(",".join(map(str, r)) + "\n" for r in rows))


def test_bad_edges_are_reported_and_never_abort(bureau_file, tmp_path):
    path, codes = bureau_file
    outside = generate_usccs(1, np.random.default_rng(99))[0].decode()
    rows = [
        (codes[0], codes[1], "guarantee", "2020-01-01", "500"),  # good
        (HASH_A, codes[1], "Legal_Rep ", "", ""),  # good: relation normalised
        (codes[2].lower(), HASH_B.upper(), "address", "", ""),  # good: normalised both
        (outside, codes[3], "shareholder", "", ""),  # good: an enterprise outside the file
        (HASH_A.upper(), codes[2], "legal_rep", "", ""),  # good: the same person as row 2
        (codes[0], codes[1], "friendship", "", ""),
        ("Zhang San", codes[1], "legal_rep", "", ""),
        ("350102199001011234", codes[1], "shareholder", "", ""),  # an ID card in clear
        (codes[2], codes[2], "phone", "", ""),
        (codes[0], codes[3], "guarantee", "", "-5"),
        (codes[0], codes[3], "guarantee", "", "lots"),
        ("", codes[3], "guarantee", "", ""),
    ]
    edges_path = tmp_path / "edges.csv"
    write_edges(edges_path, rows)
    features = BureauFeatures(path, "uscc", IdType.USCC)
    checked = edge_file.check_edges(
        edge_file.read_edge_table(edges_path), features.ids, IdType.USCC
    )
    assert checked.rows == 12 and checked.edges.src.size == 5
    reasons = {r.row - 1: r.reason for r in checked.rejects}
    assert sorted(reasons) == [5, 6, 7, 8, 9, 10, 11]
    assert "unknown relation 'friendship'" in reasons[5]
    assert "never in clear" in reasons[6] and "never in clear" in reasons[7]
    assert "same node" in reasons[8]
    assert "non-negative" in reasons[9] and "non-negative" in reasons[10]
    assert "src" in reasons[11]
    assert checked.n_nodes == 4 + 3  # the hash of a person, an address, an outside firm
    assert checked.edges.weight[0] == 500.0

    source = GraphSource(edges_path, tmp_path / "state")
    summary = source.load(features)
    assert summary.rejected == 7 and summary.edges == 5
    rejects = pacsv.read_csv(tmp_path / "state" / "graph-rejects.csv")
    assert rejects.column("row").to_pylist() == [6, 7, 8, 9, 10, 11, 12]


def test_nodes_are_numbered_by_row_then_by_first_appearance(bureau_file, tmp_path):
    # enterprises by their row; other endpoints after them, in order of first appearance
    # down the src column, then down the dst column; a hashed ID written otherwise (upper
    # case, spaces) is the node of its final form, and an enterprise outside the file comes
    # after the hashed IDs in final form
    path, codes = bureau_file
    outside = generate_usccs(1, np.random.default_rng(99))[0].decode()
    hash_c = "c" * 40
    rows = [
        (HASH_B, codes[2], "legal_rep", "", ""),
        (codes[3], HASH_A, "phone", "", ""),
        (outside, codes[0], "shareholder", "", ""),
        (f" {HASH_A.upper()}", codes[1], "legal_rep", "", ""),
        (codes[1], hash_c, "address", "", ""),
        (codes[0], HASH_B, "phone", "", ""),
    ]
    edges_path = tmp_path / "edges.csv"
    write_edges(edges_path, rows)
    ids = BureauFeatures(path, "uscc", IdType.USCC).ids
    from_file = edge_file.check_edges(edges_path, ids, IdType.USCC)
    # final form: HASH_B (first in src) 4, then down dst HASH_A 5 and hash_c 6; then the
    # others: the outside enterprise 7, and the spaced upper-case HASH_A, which is node 5
    assert from_file.edges.src.tolist() == [4, 3, 7, 5, 1, 0]
    assert from_file.edges.dst.tolist() == [2, 5, 0, 1, 6, 4]
    assert from_file.n_nodes == 8 and not from_file.rejects
    # read whole or one column at a time, the same numbers
    from_table = edge_file.check_edges(edge_file.read_edge_table(edges_path), ids, IdType.USCC)
    for field in ("src", "dst", "relation", "weight"):
        np.testing.assert_array_equal(
            getattr(from_file.edges, field), getattr(from_table.edges, field), err_msg=field
        )


def test_distinct_pairs_are_the_same_when_nodes_are_too_many_for_one_key():
    rng = np.random.default_rng(5)
    src, dst = rng.integers(0, 6, 50), rng.integers(0, 6, 50)
    weight = rng.random(50)
    small = graph._sorted_distinct(src, dst, 6, weight)
    huge = graph._sorted_distinct(src, dst, 2**32, weight)  # sorted by lexsort instead
    for a, b in zip(small, huge):
        np.testing.assert_allclose(a, b, rtol=1e-15)


def test_edge_file_without_its_columns_is_a_clear_error(tmp_path):
    path = tmp_path / "edges.csv"
    path.write_text("from,to,relation\na,b,phone\n")
    with pytest.raises(InputDataError, match="missing src, dst"):
        edge_file.read_edge_table(path)
    with pytest.raises(InputDataError, match="no such edge file"):
        edge_file.read_edge_table(tmp_path / "none.parquet")


def test_catalogue_offers_graph_features_and_refreshes_when_the_file_changes(bureau_file, tmp_path):
    path, codes = bureau_file
    edges_path = tmp_path / "edges.csv"
    write_edges(edges_path, [(codes[0], codes[1], "guarantee", "", "")])
    features = BureauFeatures(path, "uscc", IdType.USCC)
    source = GraphSource(edges_path, tmp_path / "state")
    source.load(features)
    catalogue = {f.name: f for f in features.catalogue()}
    assert catalogue["abnormal_operation"].kind == "numeric"
    for name in graph.feature_descriptions(("watch_list", "defendant")):
        assert catalogue[name].kind == "numeric" and catalogue[name].description, name
    assert "guarantee circle" in catalogue["graph_guarantee_circle_size"].description
    rows = features.rows_of([codes[1], codes[0]])
    assert rows.column("graph_related_watch_list").to_pylist() == [1.0, 0.0]
    assert rows.column("graph_guarantee_circle_size").to_pylist() == [0.0, 0.0]
    assert features.choose(("graph_guarantees_given",)) == ["graph_guarantees_given"]

    assert not source.refresh_if_changed(features)
    time.sleep(0.01)
    write_edges(
        edges_path,
        [(codes[0], codes[1], "guarantee", "", ""), (codes[1], codes[0], "guarantee", "", "")],
    )
    os.utime(edges_path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert source.refresh_if_changed(features)
    rows = features.rows_of([codes[1], codes[0]])
    assert rows.column("graph_guarantee_circle_size").to_pylist() == [2.0, 2.0]
    # a restart with unchanged files reads the features back instead of computing them
    again = BureauFeatures(path, "uscc", IdType.USCC)
    summary = GraphSource(edges_path, tmp_path / "state").load(again)
    assert summary.seconds == 0.0
    assert again.rows_of([codes[0]]).equals(features.rows_of([codes[0]]))


def test_bureau_features_command_lists_graph_features(bureau_file, tmp_path, capsys):
    from bureau_node.cli import main

    path, codes = bureau_file
    edges_path = tmp_path / "edges.csv"
    write_edges(
        edges_path, [(codes[0], HASH_A, "phone", "", ""), (codes[1], HASH_A, "phone", "", "")]
    )
    assert (
        main(["features", "--data", str(path), "--id-column", "uscc", "--graph", str(edges_path)])
        == 0
    )
    listed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    names = [f["name"] for f in listed["features"]]
    assert "graph_largest_phone_cluster" in names and "abnormal_operation" in names
    # no deregistered column in this file: its flag's features are left out, not zero
    assert "graph_share_deregistered" not in names


def test_a_graph_feature_can_be_marked_public(tmp_path):
    """The public marks were kept only for the file's own columns: a graph feature marked
    public in the catalogue (shareholder links are registry data) was listed as not."""
    import json

    import pyarrow as pa

    from bureau_node.features import BureauFeatures
    from protocols.ids import IdType
    from xinrong.synthetic import generate_city, write_city

    paths = write_city(generate_city(300, 50, seed=1), tmp_path)
    catalogue = json.loads(paths["bureau_catalogue"].read_text())
    catalogue["graph_links"] = {"description": "links", "public": True}
    paths["bureau_catalogue"].write_text(json.dumps(catalogue))
    features = BureauFeatures(paths["bureau"], "uscc", IdType.USCC)
    assert features.public == frozenset()
    features.set_graph(pa.table({"graph_links": [1.0] * features.table.num_rows}), {})
    assert features.public == {"graph_links"}
    assert [f.public for f in features.catalogue() if f.name == "graph_links"] == [True]


def test_an_edge_file_saved_as_gbk_is_read(tmp_path):
    """An edge file exported on Chinese Windows (GBK, a person 张三 among the endpoints)
    stopped the node with Arrow's "invalid UTF8 data" (a review); it is read as the bank's
    files are, its encoding detected."""
    a, b = (c.decode() for c in generate_usccs(2, np.random.default_rng(3)))
    text = f"src,dst,relation\n{a},{b},guarantee\n张三,{a},legal_rep\n"
    path = tmp_path / "edges.csv"
    path.write_bytes(text.encode("gbk"))
    table = edge_file.read_edge_table(path)
    assert table.column("src").to_pylist() == [a, "张三"]
