"""The bank's own files: one reader for GBK/UTF-8 CSV, TSV and Excel, labels such as 是/否,
and the checks that stop a run on the bank's machine before PSI, before keys, before any
bureau quota is spent (a real bureau node on a loopback port, its audit log as witness)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from bank_node import cli as bank_cli
from bank_node.data_checks import check_bank_data, read_labels, unusable_column
from bureau_node.audit import AuditLog
from bureau_node.server import BureauNode
from node_runtime import tables
from protocols import vertical_lr as vlr
from protocols.errors import InputDataError
from protocols.ids import IdType
from xinrong.synthetic import BUREAU_DESCRIPTIONS, REGISTRY_FEATURES, generate_city, write_city

HEADERS = ["统一社会信用代码", "是否违约", "行业", "营业收入", "员工人数"]
ROWS = [
    ["91350100M000100Y43", "否", "批发和零售业", 1203.5, 12],
    ["91440300708461136T", "是", "制造业", 88.25, 140],
    ["9144030071526726XG", "否", "信息传输、软件和信息技术服务业", 5.75, 3],
    ["91330100716105852F", "是", "住宿和餐饮业", 310.0625, 27],
]


def _expected() -> pa.Table:
    return pa.table(
        {
            "统一社会信用代码": pa.array([r[0] for r in ROWS], pa.string()),
            "是否违约": pa.array([r[1] for r in ROWS], pa.string()),
            "行业": pa.array([r[2] for r in ROWS], pa.string()),
            "营业收入": pa.array([r[3] for r in ROWS], pa.float64()),
            "员工人数": pa.array([r[4] for r in ROWS], pa.int64()),
        }
    )


def _text(delimiter: str) -> str:
    lines = [delimiter.join(HEADERS)] + [delimiter.join(str(v) for v in r) for r in ROWS]
    return "\r\n".join(lines) + "\r\n"


def write_gbk_csv(path: Path) -> Path:
    path.write_bytes(_text(",").encode("gbk"))  # as Excel on Chinese Windows saves CSV
    return path


def write_xlsx(path: Path) -> Path:
    import xlsxwriter

    book = xlsxwriter.Workbook(str(path))
    sheet = book.add_worksheet("客户")
    for i, row in enumerate([HEADERS, *ROWS]):
        for j, value in enumerate(row):
            sheet.write(i, j, value)
    book.close()
    return path


# ============================================================================================
# One reader
# ============================================================================================


def test_gbk_csv_xlsx_and_tsv_read_into_the_same_table(tmp_path):
    gbk = write_gbk_csv(tmp_path / "clients.csv")
    with pytest.raises(UnicodeDecodeError):
        gbk.read_bytes().decode("utf-8")  # really not UTF-8
    tsv = tmp_path / "clients.tsv"
    tsv.write_text(_text("\t"), encoding="utf-8")
    xlsx = write_xlsx(tmp_path / "clients.xlsx")
    semicolons = tmp_path / "clients.txt"
    semicolons.write_bytes(_text(";").encode("gb18030"))
    expected = _expected()
    assert tables.detect_encoding(gbk) == "gb18030"
    for path, options in [
        (gbk, None),
        (tsv, None),
        (xlsx, None),
        (semicolons, tables.ReadOptions(delimiter=";")),
        (gbk, tables.ReadOptions(encoding="gbk")),
    ]:
        got = tables.read_table(path, "统一社会信用代码", options=options)
        assert got.equals(expected), (path, got)
    only = tables.read_table(xlsx, "统一社会信用代码", columns=["行业"])
    assert only.column_names == ["统一社会信用代码", "行业"]


def test_a_gbk_file_that_is_ascii_for_its_first_megabyte_is_read_as_gbk(tmp_path):
    """An export sorted so that its rows with Chinese text come last."""
    lines = ["id,industry,amount"]
    lines += [f"{i:07d},manufacturing,{i}" for i in range(40_000)]  # about 1.1 MB
    lines += [f"{40_000 + i:07d},制造业,{i}" for i in range(50)]
    path = tmp_path / "late.csv"
    path.write_bytes(("\n".join(lines) + "\n").encode("gbk"))
    assert path.stat().st_size > tables.DETECT_BYTES
    assert tables.detect_encoding(path) == "gb18030"
    industry = tables.read_table(path, "id").column("industry").to_pylist()
    assert industry[0] == "manufacturing" and industry[-1] == "制造业"
    # named UTF-8 by mistake: refused, not read as bytes (the whole file is checked too)
    with pytest.raises(InputDataError, match="not valid utf-8 text .* --encoding"):
        tables.read_table(path, "id", options=tables.ReadOptions(encoding="utf-8"))


def test_a_stray_byte_in_a_gbk_export_is_named_by_its_line(tmp_path):
    """A review's GBK export with one bad byte was refused naming a byte offset of the
    decoder's chunk and no line: the error now names the line, counted in the file."""
    lines = ["id,industry"] + [f"{i:07d},制造业" for i in range(60_000)]  # about 1.2 MB
    raw = bytearray(("\n".join(lines) + "\n").encode("gbk"))
    at = raw.index(b"0059000,") + 8
    raw[at : at + 1] = b"\xff"  # line 59,002: the header, then rows 0..59,000
    path = tmp_path / "stray.csv"
    path.write_bytes(bytes(raw))
    with pytest.raises(InputDataError, match=r"not valid gbk text \(.*, line 59,002, byte"):
        tables.read_table(path, "id", options=tables.ReadOptions(encoding="gbk"))
    # a character cut at a chunk's end: the stray byte after it is named to the byte
    head = b"id,industry\n" + b"1," + b"a" * (tables.DETECT_BYTES - 18) + b"\n2,"
    assert len(head) == tables.DETECT_BYTES - 1  # 制's two bytes straddle the chunks
    path.write_bytes(head + "制".encode("gbk") + b"\xff\n")
    failure = tables._failure_in(path, "gbk")
    assert failure is not None
    assert (failure.error.start, failure.line) == (tables.DETECT_BYTES + 1, 3)


def test_utf8_with_a_byte_order_mark(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + _text(",").encode("utf-8"))
    assert tables.read_table(path, "统一社会信用代码").equals(_expected())


def test_reader_errors_are_one_line(tmp_path):
    gbk = write_gbk_csv(tmp_path / "clients.csv")
    with pytest.raises(InputDataError, match="not valid utf-8 text .* --encoding"):
        tables.read_table(gbk, "统一社会信用代码", options=tables.ReadOptions(encoding="utf-8"))
    with pytest.raises(InputDataError, match="unknown encoding 'klingon'"):
        tables.ReadOptions(encoding="klingon")
    with pytest.raises(InputDataError, match="no column named '客户代码'; the file has: 统一"):
        tables.read_table(gbk, "客户代码")
    xlsx = write_xlsx(tmp_path / "c.xlsx")
    with pytest.raises(InputDataError, match="no sheet named 'x'; it has 客户"):
        tables.read_table(xlsx, "统一社会信用代码", options=tables.ReadOptions(sheet="x"))
    with pytest.raises(InputDataError, match="unknown file type '.docx'"):
        tables.read_table(tmp_path / "a.docx", "id")


def test_excel_ids_typed_as_numbers_stay_text(tmp_path):
    import xlsxwriter

    path = tmp_path / "ids.xlsx"
    book = xlsxwriter.Workbook(str(path))
    sheet = book.add_worksheet()
    for i, row in enumerate([["id", "x"], [1001, 1.5], [1002, None], [1003, 2.5]]):
        for j, value in enumerate(row):
            if value is not None:
                sheet.write(i, j, value)
    book.close()
    table = tables.read_table(path, "id")
    assert table.column("id").to_pylist() == ["1001", "1002", "1003"]
    assert table.column("x").to_pylist() == [1.5, None, 2.5]


def test_excel_uscc_stored_as_numbers_is_said(tmp_path, caplog):
    """A review's workbook held all-digit USCCs as numbers: Excel kept 15 digits, and 126
    rows were rejected for their check character with nothing saying why."""
    import xlsxwriter

    path = tmp_path / "ids.xlsx"
    book = xlsxwriter.Workbook(str(path))
    sheet = book.add_worksheet()
    sheet.write_row(0, 0, ["统一社会信用代码", "x"])
    sheet.write_row(1, 0, [913501038153253376, 1.5])
    book.close()
    with caplog.at_level("WARNING"):
        tables.read_table(path, "统一社会信用代码")
    assert "1 IDs in '统一社会信用代码' are stored by Excel as numbers" in caplog.text
    assert "format the column as text" in caplog.text


# ============================================================================================
# Labels
# ============================================================================================


def test_positive_label_maps_chinese_and_english_labels():
    table = _expected()
    assert read_labels(table, "是否违约", "是").tolist() == [0, 1, 0, 1]
    words = pa.table({"y": ["bad", "good", "good", " bad "]})
    assert read_labels(words, "y", "bad").tolist() == [1, 0, 0, 1]
    with pytest.raises(InputDataError, match="--positive-label"):
        read_labels(table, "是否违约")
    with pytest.raises(InputDataError, match="'Y' never occurs .* values are '否', '是'"):
        read_labels(table, "是否违约", "Y")
    three = pa.table({"y": ["是", "否", "不详"]})
    with pytest.raises(InputDataError, match="3 different values"):
        read_labels(three, "y", "是")
    with pytest.raises(InputDataError, match="on 1 rows \\(data rows 2\\)"):
        read_labels(pa.table({"y": ["1", None, "0"]}), "y")
    with pytest.raises(InputDataError, match="no label column 'label'.*did you mean 'labels'"):
        read_labels(pa.table({"labels": [1]}), "label")


# ============================================================================================
# Checks on the bank's table (no bureau needed)
# ============================================================================================


def _bank(n: int = 200, seed: int = 0) -> pa.Table:
    from xinrong.synthetic import generate_usccs

    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "uscc": pa.array(generate_usccs(n, rng).astype(str).tolist()),
            "y": pa.array((np.arange(n) % 4 == 0).astype(np.int64)),
            "income": pa.array(rng.normal(size=n)),
            "sector": pa.array(rng.choice(["A", "B", "C"], n).tolist()),
        }
    )


def test_dropped_columns_warn_and_the_rest_is_kept():
    table = _bank()
    n = table.num_rows
    table = table.append_column("企业名称", pa.array([f"福州某某公司{i}" for i in range(n)]))
    table = table.append_column("notes", pa.array([f"free text {i}" for i in range(n)]))
    table = table.append_column("branch", pa.array(["福州"] * n))
    table = table.append_column("empty", pa.nulls(n, pa.float64()))
    table = table.append_column("blank", pa.array([""] * n))
    said: list[str] = []
    y = read_labels(table, "y")
    checked = check_bank_data(table, "uscc", IdType.USCC, y, None, "y", say=said.append)
    assert checked.bank_features == ["income", "sector"]
    assert len(checked.warnings) == 5 and len(said) == 5
    text = "\n".join(checked.warnings)
    assert "'企业名称' dropped: its name says it identifies" in text
    assert "'notes' dropped: 200 different texts in 200 rows" in text
    assert "'branch' dropped: every value is '福州'" in text
    assert "'empty' dropped: every value is missing" in text
    assert "'blank' dropped: every value is missing" in text
    assert unusable_column(table.column("income"), "income") is None


def test_class_and_duplicate_checks():
    table = _bank()
    y = read_labels(table, "y")
    with pytest.raises(InputDataError, match="one class only: all 200 clients are 0"):
        check_bank_data(table, "uscc", IdType.USCC, np.zeros(200, np.int64), None, "y")
    few = np.zeros(200, np.int64)
    few[:5] = 1
    with pytest.raises(InputDataError, match="5 defaults and 195 non-defaults; .* at least 30"):
        check_bank_data(table, "uscc", IdType.USCC, few, None, "y")
    # the same client twice: once identical (kept once, counted), once conflicting (error)
    codes = table.column("uscc").to_pylist()
    twice = pa.concat_tables([table, table.slice(0, 1)])
    checked = check_bank_data(twice, "uscc", IdType.USCC, read_labels(twice, "y"), None, "y")
    assert checked.identical_duplicates == 1 and "kept once" in checked.warnings[-1]
    spaced = codes[1][:4] + " " + codes[1][4:]  # the same code as typed differently
    other = table.slice(1, 1).set_column(0, "uscc", pa.array([spaced]))
    other = other.set_column(1, "y", pa.array([1 - y[1]]))
    clash = pa.concat_tables([table, other])
    with pytest.raises(InputDataError, match=f"1 IDs appear on several rows .*{codes[1]}"):
        check_bank_data(clash, "uscc", IdType.USCC, read_labels(clash, "y"), None, "y")
    with pytest.raises(InputDataError, match="no bank column named 'incme'; did you mean 'income'"):
        check_bank_data(table, "uscc", IdType.USCC, y, ["incme"], "y")


# ============================================================================================
# Against a real bureau: each case stops before PSI and spends no quota
# ============================================================================================


@pytest.fixture(scope="module")
def city(tmp_path_factory) -> dict[str, Path]:
    return write_city(generate_city(3000, 1200, seed=11), tmp_path_factory.mktemp("city"))


@pytest.fixture(scope="module")
def bureau(city, tmp_path_factory):
    # one bank trains model after model on the same clients here, to test the bank's data
    # handling, not what its models read together (tests/test_attacks.py)
    limits = vlr.TrainingLimits(allow_test_keys=True, max_readable_share=1.0)
    node = BureauNode(
        city["bureau"], "uscc", tmp_path_factory.mktemp("state"), workers=0, training_limits=limits
    )
    node.start("127.0.0.1:0")
    yield node
    node.stop()


def _bank_args(bureau, data: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--bureau",
        f"127.0.0.1:{bureau.port}",
        "--insecure",
        "--data",
        str(data),
        "--id-column",
        "uscc",
        "--label",
        "y",
        "--model-dir",
        str(tmp_path / "model"),
        "--key-bits",
        "768",
        "--allow-test-keys",
        "--workers",
        "0",
        "--quiet",
        *extra,
    ]


def _variant(city, tmp_path: Path, change) -> Path:  # type: ignore[no-untyped-def]
    table = pacsv.read_csv(
        city["bank"], convert_options=pacsv.ConvertOptions(column_types={"uscc": pa.string()})
    )
    path = tmp_path / "bank.csv"
    pacsv.write_csv(change(table), path)
    return path


def _one_class(t: pa.Table) -> pa.Table:
    return t.set_column(t.column_names.index("y"), "y", pa.array(np.zeros(t.num_rows, np.int8)))


def _few_defaults(t: pa.Table) -> pa.Table:
    y = np.zeros(t.num_rows, np.int8)
    y[:5] = 1
    return t.set_column(t.column_names.index("y"), "y", pa.array(y))


def _conflict(t: pa.Table) -> pa.Table:
    row = t.slice(0, 1)
    flipped = row.set_column(
        row.column_names.index("y"),
        "y",
        pa.array([1 - row["y"][0].as_py()], row.schema.field("y").type),
    )
    return pa.concat_tables([t, flipped])


@pytest.mark.parametrize(
    ("change", "extra", "message"),
    [
        (_one_class, [], "label column 'y' has one class only"),
        (_few_defaults, [], "has 5 defaults and 1,186 "),  # distinct valid IDs, each once
        (_conflict, [], "1 IDs appear on several rows with different labels"),
        (lambda t: t, ["--bureau-features", "debt_ratoi"], "did you mean 'debt_ratio'"),
        (lambda t: t, ["--bank-features", "overdue_cnt"], "did you mean 'overdue_count_12m'"),
        (lambda t: t, ["--positive-label", "bad"], "--positive-label 'bad' never occurs"),
    ],
    ids=["one-class", "few-defaults", "conflict", "bureau-typo", "bank-typo", "positive-label"],
)
def test_a_run_that_cannot_succeed_stops_before_psi(
    city, bureau, tmp_path, capsys, change, extra, message
):
    data = _variant(city, tmp_path, change)
    before = AuditLog(bureau.store.root).records()
    code = bank_cli.main(_bank_args(bureau, data, tmp_path, *extra))
    err = capsys.readouterr().err
    assert code == 2
    # --quiet keeps the warnings (rows without a usable ID, repeats) and the one error
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    after = AuditLog(bureau.store.root).records()
    assert after == before  # no PSI, no training job: the bureau did no work for it
    assert not (tmp_path / "model" / "checkpoint.json").exists()


def test_a_model_directory_in_use_is_refused_before_psi_and_replaced_with_overwrite(
    city, bureau, tmp_path, capsys
):
    """A review's second `train` into a production --model-dir replaced the model and left
    the old scorecard beside it; the next batch run switched models unsaid. It is refused
    before anything is sent (with --min-iv, before an IV request is charged); --overwrite
    replaces the model, and the old scorecard goes."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "iv.csv").write_text("feature,iv\n")  # the old model's IV, from before it
    os.utime(model / "iv.csv", (1e9, 1e9))
    (model / "model.json").write_text(json.dumps({"model_id": "f" * 32, "created": "2026-11-01"}))
    (model / "scorecard.csv").write_text("feature,bin,points\n")
    before = AuditLog(bureau.store.root).records()
    for extra in ([], ["--min-iv", "0.02"]):
        code = bank_cli.main(_bank_args(bureau, city["bank"], tmp_path, *extra))
        err = capsys.readouterr().err
        assert code == 2 and f"already holds model {'f' * 32} (made 2026-11-01)" in err, err
        assert "--overwrite" in err
    assert AuditLog(bureau.store.root).records() == before
    args = _bank_args(bureau, city["bank"], tmp_path, "--overwrite", "--epochs", "1")
    assert bank_cli.main([*args, "--seed", "1"]) == 0
    assert json.loads((model / "model.json").read_text())["model_id"] != "f" * 32
    assert not (model / "scorecard.csv").exists() and not (model / "iv.csv").exists()
    # features chosen from an IV table elsewhere: the directory's own, older one goes too
    (model / "iv.csv").write_text("feature,party,iv\n")
    os.utime(model / "iv.csv", (1e9, 1e9))
    chosen = tmp_path / "chosen-iv.csv"
    bureau_names = sorted(set(BUREAU_DESCRIPTIONS) - REGISTRY_FEATURES)
    chosen.write_text("feature,party,iv\n" + "".join(f"{n},bureau,0.5\n" for n in bureau_names))
    first = json.loads((model / "model.json").read_text())["model_id"]
    kept = {m["model_id"] for m in bureau.models.list()}
    assert first in kept
    again = [*args, "--seed", "2", "--min-iv", "0.1", "--iv-table", str(chosen)]
    assert bank_cli.main(again) == 0, capsys.readouterr().err
    assert not (model / "iv.csv").exists() and chosen.exists()
    # the replaced model went at the bureau too: its bank half is gone (a review's monthly
    # retraining left them there, one of max_models each)
    assert first not in {m["model_id"] for m in bureau.models.list()}


def test_chinese_gbk_file_with_yes_no_labels_trains(city, bureau, tmp_path, capsys):
    """A GBK export with Chinese headers, 是/否 labels and three useless columns."""
    table = pacsv.read_csv(
        city["bank"], convert_options=pacsv.ConvertOptions(column_types={"uscc": pa.string()})
    )
    n = table.num_rows
    y = table.column("y").to_pylist()
    table = table.set_column(
        table.column_names.index("y"), "是否违约", pa.array(["是" if v else "否" for v in y])
    )
    table = table.rename_columns(
        ["统一社会信用代码" if c == "uscc" else c for c in table.column_names]
    )
    table = table.append_column(
        "企业名称", pa.array([f"福州市某某贸易有限公司{i}" for i in range(n)])
    )
    table = table.append_column("分行", pa.array(["福州分行"] * n))
    path = tmp_path / "客户.csv"
    text = pacsv.write_csv(table, tmp_path / "utf8.csv") or (tmp_path / "utf8.csv").read_text()
    path.write_bytes(text.encode("gb18030"))
    args = _bank_args(
        bureau, path, tmp_path, "--positive-label", "是", "--epochs", "2", "--seed", "1"
    )
    args[args.index("uscc")] = "统一社会信用代码"
    args[args.index("y")] = "是否违约"
    args.remove("--quiet")
    code = bank_cli.main(args)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "warning: bank column '企业名称' dropped" in captured.err
    assert "warning: bank column '分行' dropped: every value is '福州分行'" in captured.err
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["bank_features"] == 6 and summary["validation_auc"] > 0.6
    # two epochs from zero weights: the loss is still falling, and the analyst is told
    assert "warning: the loss was still falling at the last epoch" in captured.err
    assert summary["converged"] is False
    model = json.loads((tmp_path / "model" / "model.json").read_text())
    assert model["positive_label"] == "是"
    assert "企业名称" not in json.dumps(model["recipe"], ensure_ascii=False)


def test_convergence_warning():
    from bank_node.metrics import convergence_warning

    assert "more than 3 epochs (--epochs, or epochs= in Python)" in convergence_warning(
        [0.6, 0.5, 0.45], 3
    )
    assert convergence_warning([0.6, 0.5, 0.4999999], 3) is None  # levelled off
    assert convergence_warning([0.6, 0.5, 0.52], 3) is None
    assert convergence_warning([0.6, 0.5], 5) is None  # early stopping ended it


@pytest.mark.parametrize(
    "names",
    [
        ['=HYPERLINK("http://x","点击")', "tax_paid"],
        ["+1+1"],
        ["-2+3"],
        ["@SUM(A1)"],
        ["tax\tpaid"],
        [""],
        ["x" * 129],
        ["tax_paid", "tax_paid"],
    ],
)
def test_bureau_feature_names_that_a_spreadsheet_would_run_are_refused(names):
    """The bureau's names go into the bank's scores.csv, iv.csv and reports: a name a
    spreadsheet would read as a formula is refused where it arrives."""
    from protocols.errors import ProtocolViolation
    from protocols.features import check_peer_names

    with pytest.raises(ProtocolViolation):
        check_peer_names(names, "the bureau's catalogue")
    assert check_peer_names(["纳税信用等级", "court_judgements_3y"], "x") == [
        "纳税信用等级",
        "court_judgements_3y",
    ]


def test_numeric_columns_with_dashes_and_numbers_stored_as_text_stay_numeric(tmp_path):
    """Bank exports put "-" or "--" in an empty numeric cell, and Excel keeps numbers typed
    as text: such a column is numbers with missing values, not a category. Codes kept as
    text for their leading zeros stay text."""
    import xlsxwriter

    rows = [
        ["统一社会信用代码", "授信额度", "逾期天数", "行业代码"],
        ["91440300MA5F000001", 1200.5, "3", "001"],
        ["91440300MA5F000002", "-", "--", "002"],
        ["91440300MA5F000003", "1,300", 0, "017"],
        ["91440300MA5F000004", 900, " ", "-"],
    ]
    path = tmp_path / "clients.xlsx"
    book = xlsxwriter.Workbook(path)
    sheet = book.add_worksheet()
    for i, row in enumerate(rows):
        for j, value in enumerate(row):
            sheet.write_string(i, j, value) if isinstance(value, str) else sheet.write(i, j, value)
    book.close()
    csv = tmp_path / "clients.csv"
    csv.write_text("\n".join(",".join(str(v).replace(",", "") for v in r) for r in rows) + "\n")
    for source in (path, csv):
        table = tables.read_table(source, "统一社会信用代码")
        assert table.column("授信额度").to_pylist() == [1200.5, None, 1300, 900], source
        assert table.column("逾期天数").to_pylist() == [3, None, 0, None], source
        if source is path:  # a CSV has no "stored as text": its codes are numbers there
            assert table.column("行业代码").to_pylist() == ["001", "002", "017", "-"]


def test_a_csv_of_amounts_with_thousands_separators_reads_as_numbers(tmp_path):
    """Excel saves a formatted amount as "1,143.00" in a CSV: the column was read as text
    and trained as a category of every amount. Now it is numbers, with 暂无 ("not yet
    available") a missing value, as in a workbook; a text column is left alone."""
    path = tmp_path / "clients.csv"
    path.write_bytes(
        "统一社会信用代码,贷款金额,评级\n"
        '91440300MA5F000001,"1,143.00",A\n'
        "91440300MA5F000002,暂无,B\n"
        '91440300MA5F000003,"12,000",A\n'
        "91440300MA5F000004,87.5,C\n".encode("gb18030")
    )
    table = tables.read_table(path, "统一社会信用代码")
    assert table.column("贷款金额").to_pylist() == [1143.0, None, 12000.0, 87.5]
    assert table.column("评级").to_pylist() == ["A", "B", "A", "C"]


def test_numbers_with_a_unit_or_an_empty_mark_read_as_numbers_and_odd_cells_are_named(
    tmp_path, caplog
):
    """A review's GBK file: "79.8%", "99万元" and a column with one "（空）" were read as text
    and trained as categories (the IV of 额度使用率 fell from 0.592 to 0.0014; "104万元" got
    -124 points and "106万元" +70), without a word."""
    path = tmp_path / "clients.csv"
    path.write_bytes(
        "统一社会信用代码,额度使用率,贷款金额,员工数,备注\n"
        "91440300MA5F000001,79.8%,99万元,12,甲\n"
        "91440300MA5F000002,5%,104万元,（空）,乙\n"
        "91440300MA5F000003,100%,106万元,7,甲\n".encode("gb18030")
        + "".join(f"91440300MA5F{n:06d},{n % 90}%,{n}万元,{n},甲\n" for n in range(10, 40)).encode(
            "gb18030"
        )
        + "91440300MA5F000099,3%,1.2亿元,不知道,乙\n".encode("gb18030")
    )
    with caplog.at_level("WARNING"):
        table = tables.read_table(path, "统一社会信用代码")
    # in the base unit, as a workbook holds a cell shown as 79.8%
    assert table.column("额度使用率").to_pylist()[:3] == [0.798, 0.05, 1.0]
    assert table.column("员工数").type == pa.string()  # "不知道" is not a number: said
    assert (
        "column '员工数': 32 of 33 values are numbers" in caplog.text and "'不知道'" in caplog.text
    )
    assert table.column("贷款金额").type == pa.string()  # two units: left as text, and said
    assert "column '贷款金额': numbers in 2 units (万元, 亿元" in caplog.text
    assert table.column("备注").type == pa.string()
    one_unit = path.with_name("one-unit.csv")
    one_unit.write_bytes(
        '统一社会信用代码,贷款金额\n91440300MA5F000001,99万元\n91440300MA5F000002,"1,104万元"\n'
        .encode("gb18030")
    )  # fmt: skip
    assert tables.read_table(one_unit, "统一社会信用代码").column("贷款金额").to_pylist() == [
        990_000,
        11_040_000,
    ]


def test_text_where_a_model_expects_a_number_is_named():
    from protocols.features import FeatureRecipe

    recipe = FeatureRecipe.fit(pa.table({"amount": [1.0, 2.0, 3.0, 4.0]}), ["amount"])
    scoring = pa.table({"amount": ["5", "approx. 7", None, "8"]})
    with pytest.raises(InputDataError, match="column 'amount' holds 'approx. 7' where a number"):
        recipe.transform(scoring)


def test_a_gbk_file_with_few_chinese_characters_is_read_as_gbk(tmp_path):
    """An ASCII header, a 是/否 column and some full-width codes: the detector named cp1250
    or cp949, six clients' codes became garbage and the labels levels nobody wrote."""
    full_width = {c: chr(ord(c) + 0xFEE0) for c in "0123456789ABCDEFGHJKLMNPQRTUWXY"}
    lines = ["uscc,default,amount"]
    for i in range(300):
        code = f"91440300MA5F{i:06d}"
        if i % 50 == 7:
            code = "".join(full_width.get(c, c) for c in code)
        lines.append(f"{code},{'是' if i % 9 == 0 else '否'},{i}")
    path = tmp_path / "clients.csv"
    path.write_bytes(("\n".join(lines) + "\n").encode("gbk"))
    assert tables.detect_encoding(path) == "gb18030"
    table = tables.read_table(path, "uscc")
    assert set(table.column("default").to_pylist()) == {"是", "否"}
    assert table.column("uscc")[7].as_py() == "".join(full_width.get(c, c) for c in lines[8][:18])


def test_rows_without_a_usable_id_are_counted_before_training():
    """train and iv left such rows out without a word (801 rows, "PSI on 794 IDs")."""
    from bank_node.data_checks import warn_rejected_ids
    from protocols import uscc
    from protocols.ids import IdType, prepare_ids

    good = "91350100M000100Y3" + uscc.check_character("91350100M000100Y3")
    codes = [good, good[:-1] + ("X" if good[-1] != "X" else "Y"), "", good]
    said: list[str] = []
    warn_rejected_ids(prepare_ids(pa.array(codes), IdType.USCC), said.append)
    assert len(said) == 1 and said[0].startswith("warning: 2 of 4 rows have no usable ID")
    assert "data row 2" in said[0]


def test_a_workbook_whose_first_sheet_is_notes_names_its_sheets(tmp_path):
    import xlsxwriter

    path = tmp_path / "clients.xlsx"
    book = xlsxwriter.Workbook(path)
    book.add_worksheet("说明").write(0, 0, "本表为授信客户清单")
    data = book.add_worksheet("客户")
    for i, row in enumerate([["统一社会信用代码", "额度"], ["91440300MA5F000001", 5]]):
        for j, value in enumerate(row):
            data.write(i, j, value)
    book.close()
    with pytest.raises(InputDataError, match="sheets '说明', '客户': name the data's with --sheet"):
        tables.read_table(path, "统一社会信用代码")
    options = tables.ReadOptions(sheet="客户")
    assert tables.read_table(path, "统一社会信用代码", options=options).num_rows == 1


def test_commas_count_as_thousands_separators_only_where_they_belong(tmp_path):
    """A column of code lists ("3011,3012") stayed text, not 30113012."""
    path = tmp_path / "codes.csv"
    path.write_text('id,codes,amount\n1,"3011,3012","1,200"\n2,5412,"12,000.5"\n3,"7210,7220",7\n')
    table = tables.read_table(path, "id")
    assert table.column("codes").to_pylist() == ["3011,3012", "5412", "7210,7220"]
    assert table.column("amount").to_pylist() == [1200.0, 12000.5, 7.0]


def test_the_iv_table_lines_up_with_chinese_feature_names():
    """A review's IV table on stderr went askew: f-string padding counts 额 as one column,
    a terminal shows it in two."""
    import unicodedata

    from bank_node.toolkit import format_iv_table

    rows = [
        {"feature": "额度使用率", "party": "bank", "bins": 5, "iv": 0.59, "strength": "strong"},
        {"feature": "debt_ratio", "party": "bureau", "bins": 9, "iv": 0.1, "strength": "medium"},
    ]

    def columns(text: str) -> int:
        return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)

    lines = format_iv_table(rows).splitlines()
    where = [columns(line[: line.index(party)]) for line, party in zip(lines[1:], ("bank", "bur"))]
    assert where == [33, 33]


def test_a_title_row_above_the_header_is_named_and_passed_with_skip_rows(tmp_path):
    """Bank exports often start with a title (XX银行客户清单) above the header: a review's
    workbook failed with "the first row must name every column once" and no way round."""
    import xlsxwriter

    book_path = tmp_path / "clients.xlsx"
    book = xlsxwriter.Workbook(str(book_path))
    sheet = book.add_worksheet()
    sheet.write_row(0, 0, ["XX银行小微企业客户清单（2026年11月）"])
    sheet.write_row(1, 0, ["统一社会信用代码", "贷款金额"])
    sheet.write_row(2, 0, ["91440300MA5F000001", 99])
    book.close()
    with pytest.raises(InputDataError, match="a title above the header\\? --skip-rows"):
        tables.read_table(book_path, "统一社会信用代码")
    table = tables.read_table(
        book_path, "统一社会信用代码", options=tables.ReadOptions(skip_rows=1)
    )
    assert table.column("贷款金额").to_pylist() == [99]
    csv_path = tmp_path / "clients.csv"
    csv_path.write_bytes(
        "XX银行客户清单\n统一社会信用代码,贷款金额\n91440300MA5F000001,99\n".encode("gb18030")
    )
    with pytest.raises(InputDataError, match="--skip-rows"):
        tables.read_table(csv_path, "统一社会信用代码")
    table = tables.read_table(csv_path, "统一社会信用代码", options=tables.ReadOptions(skip_rows=1))
    assert table.column("统一社会信用代码").to_pylist() == ["91440300MA5F000001"]


def test_messages_about_rows_name_the_line_or_sheet_row_the_bank_sees(tmp_path):
    """The reader passes over a CSV's blank lines and a workbook's empty area above its
    table, and a quoted cell may span lines: a data row's number is then not where the bank
    finds it. Messages about labels give the line (the sheet row) as well."""
    import xlsxwriter

    from bank_node import training

    csv_path = tmp_path / "clients.csv"
    text = (
        "XX银行客户清单\n"  # line 1: a title
        "统一社会信用代码,是否违约,备注\n"  # 2: the header
        "\n"  # 3: blank
        '91440300MA5F000001,否,"两行\n的备注"\n'  # 4-5: data row 1, one cell over two lines
        "91440300MA5F000002,,\n"  # 6: data row 2, no label
        "\n\n"  # 7-8: blank
        "91440300MA5F000003,可能,\n"  # 9: data row 3, a label that is not one
    )
    csv_path.write_bytes(text.encode("gb18030"))
    options = tables.ReadOptions(skip_rows=1)
    table = tables.read_table(csv_path, "统一社会信用代码", options=options)
    assert table.num_rows == 3
    assert tables.source_lines(csv_path, 3, options).tolist() == [4, 6, 9]
    with pytest.raises(InputDataError, match=r"\(data rows 2; line 6 in the file\)"):
        training.read(csv_path, "统一社会信用代码", "是否违约", options)
    # what does not match the rows read is not guessed at
    assert tables.source_lines(csv_path, 4, options) is None
    book_path = tmp_path / "clients.xlsx"
    book = xlsxwriter.Workbook(str(book_path))
    sheet = book.add_worksheet()
    sheet.write_row(2, 1, ["统一社会信用代码", "是否违约"])  # the table starts at B3
    sheet.write_row(3, 1, ["91440300MA5F000001", "是"])
    sheet.write_row(5, 1, ["91440300MA5F000003", "否"])  # sheet row 5 left blank
    book.close()
    table = tables.read_table(book_path, "统一社会信用代码")
    assert tables.source_lines(book_path, table.num_rows).tolist() == [4, 5, 6]
    with pytest.raises(InputDataError, match=r"\(data rows 2; sheet row 5 in the file\)"):
        training.read(book_path, "统一社会信用代码", "是否违约", positive_label="是")
    # a plain file says nothing more than its data rows
    plain = tmp_path / "plain.csv"
    plain.write_text("uscc,label\n91440300MA5F000001,\n", encoding="utf-8")
    with pytest.raises(InputDataError) as refused:
        training.read(plain, "uscc", "label")
    assert "data rows 1)" in str(refused.value) and "line" not in str(refused.value)


def test_full_width_numbers_read_as_numbers_and_unknown_is_a_missing_mark(tmp_path, caplog):
    """Chinese input methods type full-width forms: "72.3％" read as text made the
    strongest bank feature a category of every value, with no word (a review: validation
    AUC 0.733 -> 0.675). A column that is mostly numbers and stays text is named."""
    path = tmp_path / "clients.csv"
    rows = ["uscc,使用率,员工,余额,变动,状态,备注"]
    wide = str.maketrans("0123456789", "０１２３４５６７８９")
    for i in range(40):
        odd = "待核实" if i == 3 else f"{i}.5"
        rows.append(
            f"91440300MA5F{i:06d},{i}.5％,{str(i).translate(wide)},"
            f'"1，{i:03d}.00",－{i},{"未知" if i % 5 == 0 else i},{odd}'
        )
    path.write_bytes("\n".join(rows).encode("gb18030"))
    with caplog.at_level("WARNING"):
        table = tables.read_table(path, "uscc")
    assert table.column("使用率").to_pylist()[:2] == [0.005, 0.015]
    assert table.column("员工").to_pylist()[:3] == [0, 1, 2]
    assert table.column("余额").to_pylist()[:2] == [1000, 1001]
    assert table.column("变动").to_pylist()[:2] == [0, -1]
    assert table.column("状态").to_pylist()[:2] == [None, 1]  # 未知: unknown, missing
    assert pa.types.is_string(table.column("备注").type)  # one odd cell in 40: said
    assert "'待核实'" in caplog.text and "column '备注'" in caplog.text


def test_an_out_file_named_for_another_format_is_refused_before_any_work(tmp_path, capsys):
    """A review's `predict --out scores.xlsx` wrote CSV text under that name, which Excel
    refused to open, and `report --out r.pdf` wrote HTML: each is now refused, naming the
    file to give instead."""
    model = tmp_path / "model"
    model.mkdir()
    address = ["--bureau", "127.0.0.1:9", "--insecure", "--quiet"]
    code = bank_cli.main(["predict", *address, "--model-dir", str(model), "--data",
                          str(tmp_path / "a.csv"), "--id-column", "uscc",
                          "--out", str(tmp_path / "scores.xlsx")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "predict writes CSV" in err and "name it scores.csv" in err, err
    code = bank_cli.main(["report", "--model-dir", str(model), "--out", str(tmp_path / "r.pdf")])
    err = capsys.readouterr().err
    assert code == 2 and "report writes an HTML page, not .pdf: name it r.html" in err, err
    # a .tsv was written comma-separated, and the bank's own reader could not read it back
    code = bank_cli.main(["predict", *address, "--model-dir", str(model), "--data",
                          str(tmp_path / "a.csv"), "--id-column", "uscc",
                          "--out", str(tmp_path / "scores.tsv")])  # fmt: skip
    assert code == 2 and "predict writes CSV" in capsys.readouterr().err


def test_predict_will_not_write_over_its_model_and_a_broken_model_is_named(
    bureau, city, tmp_path, capsys
):
    """A review's `predict --out MODEL_DIR/model.json` replaced the model, and the next
    predict ended in a JSON traceback."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.json").write_text('{"format": "xinrong-bank-model/1"}')
    address = ["--bureau", f"127.0.0.1:{bureau.port}", "--insecure", "--quiet"]
    common = ["predict", *address, "--model-dir", str(model), "--data", str(city["bank"])]
    code = bank_cli.main([*common, "--id-column", "uscc", "--out", str(model / "model.json")])
    err = capsys.readouterr().err
    assert code == 2 and "is the file given as --model-dir's model.json" in err, err
    assert (model / "model.json").read_text() == '{"format": "xinrong-bank-model/1"}'
    (model / "model.json").write_text("uscc,score\n91440300MA5F000001,0.1\n")
    code = bank_cli.main([*common, "--id-column", "uscc", "--out", str(tmp_path / "s.csv")])
    err = capsys.readouterr().err
    assert code == 2 and "not a Xinrong bank model (not JSON" in err and "Traceback" not in err


def test_a_gbk_file_whose_only_chinese_is_its_header_is_read(tmp_path, caplog):
    """A review's 200-row GBK export (a Chinese header over codes and numbers) was refused
    with "cannot tell the file's text encoding": the detector gives up on one short line.
    Bytes that decode as GB18030 are read as it, and said."""
    path = tmp_path / "clients.csv"
    rows = ["统一社会信用代码,开户月数,逾期次数,贷款金额"]
    rows += [f"91440300MA5F{i:06d},{i % 90},{i % 3},{1000 + i}" for i in range(200)]
    typed = (  # the review's IDs typed in full-width forms
        "９３３５０２０３ＭＡＨＪＷＢ２Ｆ５９ ９１３５０１１１１２５２８６２８４Ｃ "
        "９１３５０１０５ＭＡＢ０５ＦＬＬ０Ａ ９２３５０２０３ＭＡ１６ＸＣ７７９Ｒ "
        "９１３５０１８１ＭＡＰ６ＥＭ０８Ｘ３ ９１３５０１１１００７０７２８６７Ｑ "
        "９１３５０１０４ＭＡ６ＹＨＥＸＥ４９"
    ).split()
    for k, code in enumerate(typed):
        rows[10 + 25 * k] = code + rows[10 + 25 * k][18:]
    path.write_bytes("\r\n".join(rows).encode("gbk"))
    with caplog.at_level("WARNING"):
        table = tables.read_table(path, "统一社会信用代码")
    assert table.column_names == rows[0].split(",") and table.num_rows == 200
    assert "read as GB18030" in caplog.text


def test_output_csvs_carry_a_byte_order_mark_that_readers_skip(tmp_path):
    """Excel on Chinese Windows reads a CSV without a byte-order mark as GBK: a review's
    scores, scorecards and IV tables showed garbled Chinese headers and reason codes."""
    path = tmp_path / "scores.csv"
    tables.write_csv(pa.table({"统一社会信用代码": ["91440300MA5F000001"], "理由": ["涉诉"]}), path)
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    for read in (lambda: pacsv.read_csv(path), lambda: tables.read_table(path, "统一社会信用代码")):
        assert read().column_names == ["统一社会信用代码", "理由"]


def test_a_tab_separated_txt_and_excels_unicode_text_export_are_read(tmp_path):
    """A review's tab-separated .txt (Excel's "Unicode text" export is one, in UTF-16)
    failed with "no column named ...; the file has: 统一社会信用代码\\t企业名称 ... (a title
    above the header?)"."""
    text = "统一社会信用代码\t企业名称\t贷款金额\r\n91440300MA5F000001\t某某贸易有限公司\t99\r\n"
    for name, data in (
        ("gbk.txt", text.encode("gb18030")),
        ("unicode.txt", text.encode("utf-16")),  # with its byte-order mark, as Excel writes
    ):
        path = tmp_path / name
        path.write_bytes(data)
        table = tables.read_table(path, "统一社会信用代码")
        assert table.column_names == ["统一社会信用代码", "企业名称", "贷款金额"]
        assert table.column("贷款金额").to_pylist() == [99]


def test_a_models_categories_are_read_for_scoring_as_they_were_for_training(tmp_path):
    """A review: a model fitted when "３" and 未知 were read as text (categories) saw the same
    file, read by a later reader as numbers and missing values, move every row to another
    level, without a word. Scoring reads a model's category columns as text."""
    from bank_node.training import as_trained
    from protocols.features import FeatureRecipe

    path = tmp_path / "clients.csv"
    wide = "０１２３４５６７８９"
    rows = ["id,等级,年限"] + [
        f"E{i:05d},{wide[1 + i % 5]},{'未知' if i % 10 == 0 else 1 + i % 29}" for i in range(400)
    ]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    as_text = tables.ReadOptions(text_columns=("等级", "年限"))  # as the older reader had it
    recipe = FeatureRecipe.fit(tables.read_table(path, "id", options=as_text), ["等级", "年限"])
    assert [c.kind for c in recipe.columns] == ["category", "category"]
    trained = recipe.transform(tables.read_table(path, "id", options=as_text))
    scored = recipe.transform(tables.read_table(path, "id", options=as_trained(None, recipe)))
    np.testing.assert_array_equal(scored, trained)
    plain = recipe.transform(tables.read_table(path, "id"))  # today's reading: numbers
    assert np.any(plain != trained)


def test_levels_the_model_never_saw_are_said_when_they_are_most_of_a_column():
    """A file that spells its categories otherwise than the training file ("LLC" for
    有限责任公司) scores every row as the pooled other levels. Predict says so; levels seen in
    training, and a few new ones, are not worth a word."""
    from bank_node.training import warn_unlike_training
    from protocols.features import FeatureRecipe

    forms = ["有限责任公司"] * 60 + ["个体工商户"] * 30 + ["股份有限公司"] * 10
    train = pa.table({"legal_form": forms, "capital": [float(i) for i in range(100)]})
    recipe = FeatureRecipe.fit(train, ["legal_form", "capital"])
    said: list[str] = []
    same = pa.table({"legal_form": forms[::-1], "capital": [1.0] * 100})
    assert warn_unlike_training(recipe, same, said.append) == [] and said == []
    a_few_new = pa.table({"legal_form": ["合伙企业"] * 10 + forms[:90], "capital": [1.0] * 100})
    assert warn_unlike_training(recipe, a_few_new, said.append) == []
    english = pa.table({"legal_form": ["LLC"] * 70 + ["sole"] * 30, "capital": [1.0] * 100})
    (warning,) = warn_unlike_training(recipe, english, said.append)
    assert "'legal_form'" in warning and "100 of 100" in warning and "'LLC'" in warning
    assert said == [f"warning: {warning}"]


def test_a_second_run_into_a_model_directory_in_use_is_refused_at_once(
    city, bureau, tmp_path, capsys, held_elsewhere
):
    """A review started two `bank-node train` runs into one fresh --model-dir: both
    succeeded, and the second's model silently replaced the first's. While a run holds the
    directory (from before PSI until its model is saved), a second one, a resume too, is
    refused before anything is sent, naming the directory; then it can be used again."""
    from bank_node.training import hold_directory, train_job

    model = tmp_path / "model"
    before = AuditLog(bureau.store.root).records()
    release = held_elsewhere(model, "training job", "--model-dir")
    try:
        for extra in ([], ["--resume", "ab" * 16]):
            args = _bank_args(bureau, city["bank"], tmp_path, "--epochs", "1", *extra)
            assert bank_cli.main(args) == 2
            err = capsys.readouterr().err
            assert f"{model} is in use by another training job (pid {os.getpid()})" in err, err
            assert "choose another --model-dir" in err
        with pytest.raises(InputDataError, match="is in use by another training job"):
            train_job(
                f"127.0.0.1:{bureau.port}", city["bank"], "uscc", "y", model, "bank-a",
                key_bits=768, allow_test_keys=True, workers=0, quiet=True,
            )  # fmt: skip
        assert AuditLog(bureau.store.root).records() == before
        assert not (model / "model.json").exists() and not (model / "checkpoint.json").exists()
    finally:
        release()
    assert not model.exists()  # made for the lock alone, and removed with it
    with hold_directory(model, "training job", "--model-dir"):  # free again
        assert model.is_dir()


def _checkpoint(model: Path, data: Path) -> str:
    """The checkpoint of an interrupted job (the fields a resume's settings are checked
    against), as a run with the default settings and --epochs 6 wrote it."""
    job = "c" * 32
    model.mkdir()
    state = {
        "job_id": job,
        "data": str(data.resolve()),
        "id_column": "uscc",
        "id_type": "uscc",
        "label": "y",
        "positive_label": None,
        "bank_features": ["a", "b"],
        "bureau_features": None,
        "validation_fraction": 0.2,
        "seed": 7,
        "batch_size": 128,
        "epochs": 6,
        "patience": 4,
        "optimizer": {"name": "adam", "learning_rate": 0.05, "penalty": "l2", "alpha": 1e-4,
                      "decay": 0.5, "momentum": 0.9, "beta1": 0.9, "beta2": 0.999,
                      "epsilon": 1e-8},
        "key_bits": 768,
        "compare_bank_only": False,
        "read_options": {"encoding": None, "delimiter": None, "sheet": None, "skip_rows": 0,
                         "text_columns": []},
    }  # fmt: skip
    (model / "checkpoint.json").write_text(json.dumps(state))
    return job


def test_settings_given_with_resume_that_differ_from_the_jobs_are_refused(
    city, tmp_path, monkeypatch, capsys
):
    """A review resumed a 6-epoch job with --epochs 4 --learning-rate 0.5 and other bureau
    features: all were parsed and silently not used (the job went on with its own). They are
    refused, named with the job's values; the job's own values (the first command with
    --resume added), and the resume command the bank prints, pass. The bank's own resume
    after a restarted bureau keeps the first run's settings and is not refused."""
    from protocols.errors import PeerError

    ran: list[str | None] = []

    def fake_train(args, job_id, announce):  # type: ignore[no-untyped-def]
        ran.append(args.resume)
        return 0

    monkeypatch.setattr(bank_cli, "_train", fake_train)
    model = tmp_path / "model"
    job = _checkpoint(model, city["bank"])
    base = ["train", "--bureau", "127.0.0.1:1", "--insecure", "--allow-test-keys"]
    base += ["--model-dir", str(model), "--resume", job]
    changed = [
        "--epochs", "4", "--learning-rate", "0.5", "--bureau-features", "debt_ratio",
        "--data", str(tmp_path / "other.csv"),
    ]  # fmt: skip
    assert bank_cli.main([*base, *changed]) == 2
    err = capsys.readouterr().err
    assert f"--resume continues job {job} with the settings it started with; drop" in err
    for said in ("--epochs 4 (the job's: 6)", "--learning-rate 0.5 (the job's: 0.05)",
                 "--bureau-features debt_ratio", "--data"):  # fmt: skip
        assert said in err, err
    assert ran == []
    same = ["--epochs", "6", "--seed", "7", "--key-bits", "768", "--data", str(city["bank"])]
    same += ["--id-column", "uscc", "--label", "y", "--bank-features", "b,a"]
    assert bank_cli.main([*base, *same]) == 0 and ran == [job]
    assert bank_cli.main(base) == 0 and ran == [job, job]  # as _resume_hint prints it
    # --min-iv chose the job's features at its start: the first command with --resume added
    # passes it too (a review's was refused)
    assert bank_cli.main([*base, *same, "--min-iv", "0.02"]) == 0 and ran == [job, job, job]

    # a new job with its own settings; the bureau restarts, the bank resumes on its own
    attempts = iter([PeerError("the bureau is stopping"), None])

    def restarting(args, job_id, announce):  # type: ignore[no-untyped-def]
        announce(job_id)
        exc = next(attempts)
        if exc is not None:
            exc.nothing_done = True
            raise exc
        ran.append(args.resume)
        return 0

    import bank_node.training

    started: list[str] = []
    monkeypatch.setattr(bank_cli, "_train", restarting)
    monkeypatch.setattr(bank_cli, "_wait_for_restart", lambda args, job_id, exc: True)
    monkeypatch.setattr(bank_node.training, "held_job", lambda d: started[-1] if started else None)
    fresh = tmp_path / "fresh"
    new = ["train", "--bureau", "127.0.0.1:1", "--insecure", "--model-dir", str(fresh)]
    new += ["--data", str(city["bank"]), "--id-column", "uscc", "--label", "y", "--epochs", "4"]
    original = restarting

    def checkpointed(args, job_id, announce):  # type: ignore[no-untyped-def]
        started.append(job_id)  # its first epoch was checkpointed before the stop
        return original(args, job_id, announce)

    monkeypatch.setattr(bank_cli, "_train", checkpointed)
    assert bank_cli.main(new) == 0
    assert ran[-1] is not None and len(ran) == 4  # resumed from its checkpoint
    # refused at its start (nothing registered, nothing held): started again, not resumed
    attempts = iter([PeerError("the bureau is stopping"), None])
    started.clear()
    monkeypatch.setattr(bank_cli, "_train", restarting)
    assert bank_cli.main(new) == 0
    assert ran[-1] is None and len(ran) == 5


def test_a_file_with_no_usable_id_is_refused_before_psi_with_its_rejects(tmp_path, capsys):
    """A review's first PSI on the public data sets (integer IDs, read as USCCs) got only
    the bureau's "a PSI session needs at least one of the bank's IDs" for 4,000 IDs, and no
    rejects file. Refused before the bureau is asked, the rejects written, the hint given."""
    data = tmp_path / "guest.csv"
    data.write_text("id,y\n" + "".join(f"{i},{i % 2}\n" for i in range(1, 41)))
    out = tmp_path / "matched.csv"
    code = bank_cli.main(["psi", "--bureau", "127.0.0.1:9", "--insecure", "--data", str(data),
                          "--id-column", "id", "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "none of the 40 rows has a usable ID" in err and "--id-type text" in err
    assert not out.exists() and (tmp_path / "matched.rejects.csv").exists()


def test_a_header_that_differs_only_in_width_or_spaces_and_a_semicolon_file_are_named(tmp_path):
    """Chinese Excel exports: a review's headers with full-width brackets or a trailing space
    were "not found" with no hint (the difference invisible in the message); a semicolon
    file was told about --skip-rows."""
    wide = tmp_path / "wide.csv"
    wide.write_text("uscc,近6月日均余额（万元）,授信使用率 \n91350100M000100Y43,1.5,0.2\n")
    for asked in ("近6月日均余额(万元)", "授信使用率"):
        with pytest.raises(InputDataError, match="differs only in full-width characters"):
            tables.read_table(wide, "uscc", columns=[asked])
    semi = tmp_path / "semi.csv"
    semi.write_text("uscc;y\n91350100M000100Y43;1\n")
    with pytest.raises(InputDataError, match="pass --delimiter ';'"):
        tables.read_table(semi, "uscc", options=tables.ReadOptions(delimiter=","))


# ============================================================================================
# A credit team's files (a usability review): what predict, train and --quiet say
# ============================================================================================


def _scoring_model(tmp_path: Path) -> tuple[Path, list[str]]:
    """A bank's half of a model on two columns (income with 10% missing, a sector) whose
    bureau cannot be reached, for `predict --fallback bank-only`; and valid training IDs."""
    from bank_node.training import MODEL_FORMAT
    from protocols.features import FeatureRecipe
    from xinrong.synthetic import generate_usccs

    rng = np.random.default_rng(3)
    ids = generate_usccs(100, rng).astype(str).tolist()
    income = [None if i % 10 == 0 else float(v) for i, v in enumerate(rng.normal(size=100))]
    train = pa.table({"uscc": ids, "income": income, "sector": ["A", "B"] * 50})
    recipe = FeatureRecipe.fit(train, ["income", "sector"])
    model = {
        "format": MODEL_FORMAT,
        "model_id": "m",
        "id_type": "uscc",
        "bureau": "127.0.0.1:9",  # nothing answers there
        "bureau_features": [],
        "recipe": recipe.to_json(),
        "weights": [0.0] * (len(recipe.outputs) + 1),
        "neutral_bureau_score": 0.0,
        "calibration": {"slope": 1.0, "intercept": 0.0},
    }
    directory = tmp_path / "model"
    directory.mkdir()
    (directory / "model.json").write_text(json.dumps(model))
    return directory, ids


def _predict(model: Path, data: Path, out: Path, *extra: str) -> int:
    return bank_cli.main(["predict", "--insecure", "--model-dir", str(model), "--data",
                          str(data), "--id-column", "uscc", "--out", str(out), "--fallback",
                          "bank-only", *extra])  # fmt: skip


def test_a_column_missing_on_far_more_rows_than_in_training_is_said(tmp_path, capsys):
    """A review's applicants file had the bank's strongest column blank on all 300 rows (on
    two thirds in another): every applicant got the training median, with no word, where a
    column in another unit is said. Said now, with the training share, even with --quiet."""
    from bank_node.training import warn_unlike_training
    from protocols.features import FeatureRecipe

    model, ids = _scoring_model(tmp_path)
    recipe = FeatureRecipe.from_json(json.loads((model / "model.json").read_text())["recipe"])
    assert recipe.columns[0].training_missing_share == pytest.approx(0.1)

    def applicants(income: list[float | None], sector: list[str]) -> pa.Table:
        return pa.table({"uscc": ids[: len(income)], "income": pa.array(income, pa.float64()),
                         "sector": sector})  # fmt: skip

    said: list[str] = []
    as_in_training = applicants([None] * 6 + [1.0] * 54, ["A"] * 60)  # 10% missing
    assert warn_unlike_training(recipe, as_in_training, said.append) == [] and said == []
    a_quarter = applicants([None] * 15 + [1.0] * 45, ["A"] * 60)  # within 20 points
    assert warn_unlike_training(recipe, a_quarter, said.append) == []
    two_thirds = applicants([None] * 40 + [1.0] * 20, ["A"] * 60)
    (warning,) = warn_unlike_training(recipe, two_thirds, said.append)
    assert "'income': 40 of 60 values are missing (10% of the training rows" in warning
    assert "training fill value (the training median" in warning
    # a category column left empty: said once as missing (not as a level never seen too)
    empty_sector = applicants([1.0] * 60, [""] * 60)
    (warning,) = warn_unlike_training(recipe, empty_sector, said.append)
    assert "'sector': 60 of 60 values are missing (0% of" in warning
    # one applicant's missing value (an online decision) is no broken export (a review)
    assert warn_unlike_training(recipe, applicants([None], ["A"]), said.append) == []
    # the command line, with --quiet: said on stderr and listed in the JSON line
    data = tmp_path / "applicants.csv"
    data.write_text("uscc,income,sector\n" + "".join(f"{i},,A\n" for i in ids[:30]))
    assert _predict(model, data, tmp_path / "scores.csv", "--quiet") == 0
    captured = capsys.readouterr()
    assert "warning: column 'income': 30 of 30 values are missing" in captured.err
    summary = json.loads(captured.out.splitlines()[-1])
    assert len(summary["warnings"]) == 1 and "'income'" in summary["warnings"][0]


def test_scores_say_why_an_id_is_invalid(tmp_path, capsys):
    """A review: a USCC with a typo (17 characters) was scored like an enterprise the
    bureau does not know, bureau_matched false and nothing else; scores.csv now says why."""
    model, ids = _scoring_model(tmp_path)
    data = tmp_path / "applicants.csv"
    given = [ids[0], "9150122269721484C", ids[1], "", "9.13501E+17"]
    data.write_text("uscc,income,sector\n" + "".join(f"{i},1.5,A\n" for i in given))
    out = tmp_path / "scores.csv"
    assert _predict(model, data, out) == 0
    scores = tables.read_table(out, "uscc")
    assert scores.column_names[:4] == ["uscc", "score", "bureau_matched", "id_problem"]
    problems = [p or "" for p in scores.column("id_problem").to_pylist()]
    assert problems[0] == problems[2] == ""
    assert problems[1] == "wrong length: 17 characters, expected 18"
    assert problems[3] == "empty"
    assert (
        problems[4].startswith("wrong length: 11") and "stored by Excel as numbers" in problems[4]
    )
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["invalid_ids"] == 3


def test_two_columns_of_one_name_are_refused_as_in_a_workbook(tmp_path, capsys):
    """A review's CSV with two columns headed 授信使用率 ended `train` and `iv` in a
    KeyError traceback (a workbook is refused cleanly); a script got a bare KeyError."""
    import pyarrow.parquet as pq

    text = "uscc,授信使用率,income,授信使用率\n91350100M000100Y43,0.1,2.0,0.2\n"
    csv_file, tsv_file = tmp_path / "twice.csv", tmp_path / "twice.tsv"
    csv_file.write_text(text, encoding="utf-8")
    tsv_file.write_text(text.replace(",", "\t"), encoding="utf-8")
    parquet_file = tmp_path / "twice.parquet"
    pq.write_table(pacsv.read_csv(csv_file), parquet_file)
    for path in (csv_file, tsv_file, parquet_file):
        for columns in (None, ["授信使用率"]):  # all (train, iv), or chosen (predict)
            with pytest.raises(InputDataError, match="2 columns have the name '授信使用率'"):
                tables.read_table(path, "uscc", columns=columns)
        # a column not read is not in question
        assert tables.read_table(path, "uscc", columns=["income"]).column_names[1] == "income"
    model, _ = _scoring_model(tmp_path)
    csv_file.write_text("uscc,income,sector,income\n91350100M000100Y43,1,A,2\n")
    assert _predict(model, csv_file, tmp_path / "s.csv") == 2
    err = capsys.readouterr().err
    assert "error: " in err and "2 columns have the name 'income'" in err and "Traceback" not in err


def test_ids_excel_wrote_in_e_notation_get_a_hint_and_never_conflict():
    """A CSV that went through Excel: 9.13501E+17 stands for many clients. The rejects got no
    hint (a workbook's do), and `train` refused with "3 IDs appear on several rows with
    different labels (9.13501E+17 ...)": invalid IDs went into the label check."""
    from protocols.ids import prepare_ids

    (reject,) = prepare_ids(pa.array(["9.13501E+17"]), IdType.USCC).rejects
    assert reject.reason.startswith("wrong length: 11 characters, expected 18; a number in E")
    assert "stored by Excel as numbers" in reject.reason
    (plain,) = prepare_ids(pa.array(["9150122269721484C"]), IdType.USCC).rejects
    assert "Excel" not in plain.reason
    table = _bank()
    excel = pa.array(["9.13501E+17", "9.13501E+17", "91350100M000100Y4"] * 2)
    mangled = pa.table({
        "uscc": excel, "y": pa.array([0, 1, 0, 1, 1, 0]), "income": pa.array([1.0] * 6),
        "sector": pa.array(["A"] * 6),
    })  # fmt: skip
    both = pa.concat_tables([table, mangled.cast(table.schema)])
    checked = check_bank_data(both, "uscc", IdType.USCC, read_labels(both, "y"), None, "y")
    assert checked.bank_features == ["income", "sector"] and checked.identical_duplicates == 0
    # no valid ID at all: said as such, not as "one class only"
    only = mangled.cast(table.schema)
    with pytest.raises(InputDataError, match="none of the 6 rows has a usable ID"):
        check_bank_data(only, "uscc", IdType.USCC, read_labels(only, "y"), None, "y", 1)
    # on stderr too, where the first rejected row is not one of Excel's
    from bank_node.data_checks import warn_rejected_ids

    said: list[str] = []
    valid = table.column("uscc")[0].as_py()
    given = pa.array(["", *excel.to_pylist(), valid])
    warn_rejected_ids(prepare_ids(given, IdType.USCC), said.append)
    assert "(data row 1: '', empty); 4 of them are numbers in E notation" in said[0], said


def test_repeated_clients_with_other_features_are_said_with_the_row_kept():
    """A review's file had one row per loan: 300 clients twice, same label, other amounts.
    Said as "rows repeat an earlier row's ID and label; kept once", as if identical."""
    table = _bank()
    same = pa.concat_tables([table, table.slice(0, 2)])
    checked = check_bank_data(same, "uscc", IdType.USCC, read_labels(same, "y"), None, "y")
    assert (
        checked.warnings[-1] == "2 rows repeat an earlier row's ID, label and features; kept once"
    )
    loans = table.slice(0, 3).set_column(2, "income", pa.array([9.0, 9.0, table["income"][2]]))
    second = pa.concat_tables([table, loans])
    said: list[str] = []
    checked = check_bank_data(
        second, "uscc", IdType.USCC, read_labels(second, "y"), None, "y", say=said.append
    )
    assert checked.identical_duplicates == 3
    assert checked.warnings[-1].startswith(
        "3 rows repeat an earlier row's ID and label, 2 of them with other values in 'income'"
    )
    assert "the first row of each ID is kept" in said[-1] and said[-1].startswith("warning: ")


def test_warnings_reach_stderr_and_the_log_file_with_quiet(tmp_path, capsys):
    """README: "--quiet keeps only warnings"; a review's --quiet --log-file run lost "110 of
    1,200 rows have no usable ID and are left out" and the dropped columns, on both."""
    import argparse
    import logging

    log_file = tmp_path / "run.log"
    handler = logging.FileHandler(log_file, encoding="utf-8")
    logging.getLogger().addHandler(handler)
    try:
        say = bank_cli._say(argparse.Namespace(quiet=True))
        say("private set intersection on 1,090 IDs")
        say("warning: 110 of 1,200 rows have no usable ID and are left out")
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    err = capsys.readouterr().err
    assert err == "warning: 110 of 1,200 rows have no usable ID and are left out\n"
    logged = log_file.read_text(encoding="utf-8")
    assert "110 of 1,200 rows have no usable ID" in logged and "intersection" not in logged
    bank_cli._say(argparse.Namespace(quiet=False))("matched 1,090 of 1,200 IDs")
    assert capsys.readouterr().err == "matched 1,090 of 1,200 IDs\n"
    # --json (which is --quiet too): nothing but the JSON line and errors, as documented
    bank_cli._say(argparse.Namespace(quiet=True, json=True))("warning: 110 of 1,200 rows")
    assert capsys.readouterr().err == ""


def test_the_error_that_ends_a_run_is_in_its_log_file(tmp_path):
    """A review's --quiet --log-file run left a log that ended without the error that ended
    the run (it went to stderr only)."""
    log_file = tmp_path / "run.log"
    done = subprocess.run(
        [sys.executable, "-m", "bank_node", "psi", "--bureau", "127.0.0.1:9", "--insecure",
         "--data", str(tmp_path / "missing.csv"), "--id-column", "uscc",
         "--out", str(tmp_path / "m.csv"), "--quiet", "--log-file", str(log_file)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "error:" in done.stderr, done.stderr
    logged = log_file.read_text(encoding="utf-8")
    assert "ERROR" in logged and "missing.csv" in logged, logged
