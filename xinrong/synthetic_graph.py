"""The synthetic city's association graph (关联图谱), and the contagion it carries into the
default model. Used by :mod:`xinrong.synthetic`; see its docstring for the whole latent model.

The graph, drawn from the latent state but never from a label:

* **persons** (hashed, never in clear) are legal representatives, shareholders and executives;
  how many firms a person holds is heavy-tailed (Pareto popularity), so a few people sit in
  dozens of firms;
* **business groups** (about 15% of firms, sizes Pareto-distributed up to 300): a parent firm
  owns its subsidiaries, one controller owns the parent and represents half the members, and
  members guarantee each other's loans along a chain that sometimes closes into a circle;
* **addresses**: most firms have their own (a few share a building); about 4% sit at
  registration hubs (集中注册地) of up to thousands of firms, chosen more often among firms with
  compliance trouble ``g`` (shells); hub firms often share the registration agent's phone;
* **guarantees** outside groups: larger firms guarantee more, 30% of pairs guarantee each
  other (互保), and separate guarantee circles (担保圈) of 3 to 6 firms. The edge weight is the
  guaranteed amount (10k CNY).

Contagion. Distress travels along guarantees and ownership: a neighbour ``j`` in distress
(``s_j = max(c_j + g_j - 0.5, 0)``) weighs on a firm that guarantees it (weight 1), that it
guarantees (0.5), or that owns it or is owned by it (0.7); a second round passes it one step
further along the same edges (factor 0.5), so circles and chains amplify it. Guarantees given
are also contingent liabilities of their own. The default log-odds gain
``BETA_CONTAGION * log1p(k) + BETA_GUARANTOR * log1p(guarantees given)``: the logarithm
because a parent with 300 subsidiaries is not 300 times as exposed as one with one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

BETA_CONTAGION = 0.7
BETA_GUARANTOR = 0.2
RELATIONS = ("shareholder", "legal_rep", "executive", "address", "phone", "guarantee")
_SH, _LR, _EX, _AD, _PH, _GU = range(6)


@dataclass(frozen=True)
class CityGraph:
    """Edges over node indices: ``0 .. n - 1`` the city's enterprises, then persons,
    addresses and phones (``names`` gives every node's ID as written to the edge file)."""

    src: np.ndarray
    dst: np.ndarray
    relation: np.ndarray
    weight: np.ndarray  # NaN but for guarantees
    since_year: np.ndarray
    n_enterprises: int
    n_persons: int
    n_addresses: int
    n_phones: int

    def contagion(self, c: np.ndarray, g: np.ndarray) -> np.ndarray:
        """The documented contagion term ``k`` of every enterprise (see the module)."""
        n = self.n_enterprises
        stress = np.maximum(c + g - 0.5, 0.0)
        guarantee = (self.relation == _GU) & (self.src < n) & (self.dst < n)
        owns = (self.relation == _SH) & (self.src < n) & (self.dst < n)
        gs, gd = self.src[guarantee], self.dst[guarantee]
        os_, od = self.src[owns], self.dst[owns]
        rows = np.concatenate([gs, gd, os_, od])
        cols = np.concatenate([gd, gs, od, os_])
        weights = np.concatenate(
            [np.full(gs.size, 1.0), np.full(gd.size, 0.5), np.full(2 * os_.size, 0.7)]
        )
        exposure = sp.csr_matrix((weights, (rows, cols)), shape=(n, n))
        first = exposure @ stress
        return first + 0.5 * (exposure @ first)

    def guarantees_given(self) -> np.ndarray:
        n = self.n_enterprises
        chosen = (self.relation == _GU) & (self.src < n)
        return np.bincount(self.src[chosen], minlength=n)[:n]

    def table(self, enterprise_ids: pa.Array, rng: np.random.Generator) -> pa.Table:
        """The edge file: ``src``, ``dst``, ``relation``, ``since``, ``weight``."""
        others = self.n_persons + self.n_addresses + self.n_phones
        names = pa.concat_arrays([enterprise_ids, _hashed(others, rng)])
        since = (self.since_year - 1970).astype(np.float64) * 365.25
        return pa.table(
            {
                "src": names.take(pa.array(self.src)),
                "dst": names.take(pa.array(self.dst)),
                "relation": pa.DictionaryArray.from_arrays(
                    pa.array(self.relation.astype(np.int8)), pa.array(RELATIONS)
                ).cast(pa.string()),
                "since": pa.array(since.astype(np.int32), pa.date32()),
                "weight": pa.array(self.weight, pa.float64(), mask=np.isnan(self.weight)),
            }
        )


_HEX = np.frombuffer(
    "".join(f"{i:02x}" for i in range(256)).encode("ascii"), dtype=np.uint8
).reshape(256, 2)


def _hashed(count: int, rng: np.random.Generator) -> pa.Array:
    """Stand-ins for keyed hashes (HMAC-SHA-256 under the bureau's key, truncated to 128
    bits) of ID-card numbers, addresses and phones: 32 hex characters that look just as
    random, drawn without a Python object per node."""
    text = _HEX[rng.integers(0, 256, size=(count, 16), dtype=np.uint8)].reshape(count, 32)
    offsets = np.arange(0, 32 * (count + 1), 32, dtype=np.int32)
    return pa.StringArray.from_buffers(count, pa.py_buffer(offsets), pa.py_buffer(text.tobytes()))


def _popular(count: int, draws: int, rng: np.random.Generator, tail: float) -> np.ndarray:
    """``draws`` indices below ``count`` with Pareto(``tail``) popularity: heavy-tailed."""
    weight = rng.pareto(tail, size=count) + 1.0
    cumulative = np.cumsum(weight)
    return np.minimum(
        np.searchsorted(cumulative, rng.random(draws) * cumulative[-1]), count - 1
    ).astype(np.int64)


class _Edges:
    def __init__(self) -> None:
        self.parts: list[tuple[np.ndarray, np.ndarray, int, np.ndarray | None]] = []

    def add(
        self,
        src: np.ndarray | list[int],
        dst: np.ndarray | list[int],
        relation: int,
        weight: np.ndarray | None = None,
    ) -> None:
        self.parts.append((np.asarray(src, np.int64), np.asarray(dst, np.int64), relation, weight))


def draw_graph(
    size: np.ndarray, c: np.ndarray, g: np.ndarray, rng: np.random.Generator
) -> CityGraph:
    """The city's graph, from the enterprises' latent ``size``, distress ``c`` and trouble
    ``g`` (who sits at registration hubs, who guarantees how much)."""
    n = int(size.shape[0])
    n_persons = max(1, int(0.8 * n))
    person0 = n  # node index of the first person
    edges = _Edges()
    firms = np.arange(n)

    # Legal representatives: one per firm, people with heavy-tailed numbers of firms.
    legal_rep = _popular(n_persons, n, rng, 1.6)
    # Business groups.
    in_group = np.zeros(n, dtype=bool)
    order = rng.permutation(n)
    at = 0
    group_parent, group_member = [], []
    controllers = _popular(n_persons, n // 2 + 1, rng, 1.6)  # more than there are groups
    while at < 0.15 * n and n >= 4:
        members = int(min(300, 2 + np.floor(rng.pareto(1.3) * 2)))
        chosen = order[at : at + members]
        at += members
        if chosen.size < 2:
            break
        group_parent.append(np.full(chosen.size - 1, chosen[0]))
        group_member.append(chosen[1:])
        in_group[chosen] = True
        controller = int(controllers[len(group_parent)])
        edges.add([person0 + controller], [chosen[0]], _SH)
        represented = chosen[rng.random(chosen.size) < 0.5]
        legal_rep[represented] = controller
        chain = rng.random(chosen.size - 1) < 0.5
        edges.add(
            chosen[:-1][chain], chosen[1:][chain], _GU, _amounts(size[chosen[1:][chain]], rng)
        )
        if chosen.size >= 3 and rng.random() < 0.3:
            edges.add([chosen[-1]], [chosen[0]], _GU, _amounts(size[chosen[:1]], rng))
            edges.add(
                chosen[:-1][~chain],
                chosen[1:][~chain],
                _GU,
                _amounts(size[chosen[1:][~chain]], rng),
            )
    if group_parent:
        edges.add(np.concatenate(group_parent), np.concatenate(group_member), _SH)
    edges.add(person0 + legal_rep, firms, _LR)

    # Shareholders and executives (persons) of firms outside groups.
    outside = firms[~in_group]
    holders = rng.poisson(0.5, size=outside.size)
    owned = np.repeat(outside, holders)
    edges.add(person0 + _popular(n_persons, owned.size, rng, 1.6), owned, _SH)
    executives = np.repeat(firms, rng.poisson(0.2, size=n))
    edges.add(person0 + _popular(n_persons, executives.size, rng, 1.6), executives, _EX)

    # Addresses: registration hubs for about 4% of firms, more often shells (high g).
    n_hub_firms = int(0.04 * n)
    n_hubs = max(1, n // 5000)
    keys = rng.exponential(size=n) / np.exp(1.2 * g)
    hub_firms = np.argpartition(keys, n_hub_firms)[:n_hub_firms] if n_hub_firms else firms[:0]
    hub_share = 1.0 / np.arange(1, n_hubs + 1)
    hub_of = rng.choice(n_hubs, size=hub_firms.size, p=hub_share / hub_share.sum())
    address = np.empty(n, dtype=np.int64)
    own = np.ones(n, dtype=bool)
    own[hub_firms] = False
    slots = max(1, int(0.9 * own.sum()))
    address[own] = n_hubs + rng.integers(0, slots, size=int(own.sum()))  # a few share a building
    address[hub_firms] = hub_of
    n_addresses = n_hubs + slots
    address0 = person0 + n_persons
    edges.add(firms, address0 + address, _AD)

    # Phones: half the firms list one; hub firms mostly the agent's (one agent per 20 firms).
    agents = max(1, n_hub_firms // 20)
    phone = np.full(n, -1, dtype=np.int64)
    listed = rng.random(n) < 0.5
    phone[listed] = agents + np.arange(int(listed.sum()))
    agent_phone = rng.random(hub_firms.size) < 0.7
    phone[hub_firms[agent_phone]] = (
        hub_of[agent_phone] * 7 + rng.integers(0, 7, agent_phone.sum())
    ) % agents
    n_phones = agents + int(listed.sum())
    phone0 = address0 + n_addresses
    has_phone = phone >= 0
    edges.add(firms[has_phone], phone0 + phone[has_phone], _PH)

    # Guarantees outside groups: larger firms guarantee more; mutual pairs; circles.
    count = int(0.12 * n)
    guarantor = _weighted(np.exp(0.6 * size), count, rng)
    borrower = rng.integers(0, n, size=count)
    keep = guarantor != borrower
    guarantor, borrower = guarantor[keep], borrower[keep]
    edges.add(guarantor, borrower, _GU, _amounts(size[borrower], rng))
    mutual = rng.random(guarantor.size) < 0.3
    edges.add(borrower[mutual], guarantor[mutual], _GU, _amounts(size[guarantor[mutual]], rng))
    circles = n // 400
    for length in (3, 4, 5, 6):
        ring = rng.choice(n, size=(circles // 4, length), replace=True)
        following = np.roll(ring, -1, axis=1)
        ok = ring != following
        edges.add(ring[ok], following[ok], _GU, _amounts(size[following[ok]], rng))
    return _assemble(edges, n, n_persons, n_addresses, n_phones, rng)


def _weighted(weight: np.ndarray, draws: int, rng: np.random.Generator) -> np.ndarray:
    cumulative = np.cumsum(weight)
    return np.minimum(
        np.searchsorted(cumulative, rng.random(draws) * cumulative[-1]), weight.size - 1
    ).astype(np.int64)


def _amounts(borrower_size: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.round(
        np.exp(np.log(100.0) + 0.8 * borrower_size + 0.5 * rng.standard_normal(borrower_size.size))
    )


def _assemble(
    edges: _Edges, n: int, n_persons: int, n_addresses: int, n_phones: int, rng: np.random.Generator
) -> CityGraph:
    src = np.concatenate([p[0] for p in edges.parts])
    dst = np.concatenate([p[1] for p in edges.parts])
    relation = np.concatenate([np.full(p[0].size, p[2], np.int8) for p in edges.parts])
    weight = np.concatenate(
        [p[3] if p[3] is not None else np.full(p[0].size, np.nan) for p in edges.parts]
    )
    shuffle = rng.permutation(src.size)
    return CityGraph(
        src=src[shuffle],
        dst=dst[shuffle],
        relation=relation[shuffle],
        weight=weight[shuffle],
        since_year=rng.integers(2008, 2026, size=src.size),
        n_enterprises=n,
        n_persons=n_persons,
        n_addresses=n_addresses,
        n_phones=n_phones,
    )
