"""A synthetic city of small and micro enterprises (SMEs), for demos and benchmarks.

One call, :func:`generate_city`, draws

* the **bureau** table: every enterprise registered in the city (Fuzhou district codes), keyed
  by a valid, distinct Unified Social Credit Code (USCC), with registration, employment,
  operations, watch-list and financial-statement features, skewed and with missing values
  (pyarrow nulls) where real platforms have gaps;
* the **bank** table: one bank's clients, with the bank's internal features and the default
  label ``y``. Most clients are enterprises of the city, some come from other cities (valid
  codes the bureau does not know), a few IDs are dirty (spacing, case, full-width characters:
  they still normalise to a bureau code) or plain invalid (wrong check character, wrong
  length: validation must reject them), and a handful of rows are duplicated.

The latent model
----------------
Every enterprise has a few hidden quantities (standard-normal unless said otherwise):

``age``     registration age in years (log-normal, median 4 years). Recorded by the bureau.
``size``    scale of the business (shifted by legal form and industry, older firms larger).
``c``       *operating distress*: weak sales, arrears, thin margins. Young firms and cyclical
            industries (construction, catering, real estate) carry more of it. Both parties see
            noisy consequences of it, the bureau much more clearly (below).
``g``       *compliance and legal trouble*: unpaid tax, disputes, violations, neglected filings.
            Right-skewed (gamma, shape 0.6, unit variance): most firms have next to none, a
            minority a lot. Only the bureau sees its consequences.
``l``       *liquidity stress* in the bank relationship: thin balances, a stretched credit
            line. Only the bank sees its consequences.

The association graph (关联图谱, :mod:`xinrong.synthetic_graph`) links the city's enterprises
through hashed persons (legal representatives, shareholders, executives with heavy-tailed
numbers of firms), business groups (a parent owning its subsidiaries, guarantee chains inside
the group that sometimes close into circles), shared addresses (registration hubs, more often
chosen by firms with trouble ``g``) and phones, and loan guarantees (larger firms guarantee
more, mutual pairs, circles of 3 to 6). It is drawn from the latent state, never from a label,
with a random stream of its own. ``deregistered`` (a registry column) marks dead firms, more
likely under ``c`` and ``g``; they are in the registry and the graph, never bank clients.

Contagion: ``k`` sums the distress ``max(c_j + g_j - 0.5, 0)`` of the firms a firm guarantees
(weight 1), of its guarantors (0.5), of its parents and subsidiaries (0.7), and half of their
own ``k`` one step on (chains and circles amplify it).

The default label is ``y ~ Bernoulli(sigmoid(b0 + 0.9 c + 1.25 g + 1.2 l + 0.7 log1p(k) +
0.2 log1p(guarantees given)))``; the intercept ``b0`` is solved so that the portfolio default
rate is :data:`DEFAULT_RATE`. For clients from outside the city the bureau-side part is
absent: ``y ~ Bernoulli(sigmoid(b0' + 0.9 c + 1.2 l))`` with its own intercept.

No observed column enters the label and no bureau column enters a bank feature: each side's
features are independent noisy consequences of the latent state (the one shared fact is the
registration age, which bounds the bank's account age). The reasons a risk model finds are
therefore the documented mechanisms:

* bureau: abnormal-operation listing, court judgements, administrative penalties and registry
  churn (``g``, and ``c``); no tax paid (tax arrears: ``g`` and ``c``), few months with VAT
  invoices (``c``, and ``g``: abnormal taxpayers lose invoicing), shrinking insured headcount,
  falling revenue and a high debt ratio (``c``); young registration age and risky industries
  (they shift ``c``); missing social-insurance data is itself more common under distress and
  trouble;
* bank: overdue payments and high credit-line utilisation (``c`` and ``l``); low balances and
  cash inflows relative to the loan (``c``, ``l``, against ``size``).

Why the bureau's features add lift: they are the well-known SME default predictors a bank
cannot see. Tax, invoice, social-insurance and court records cover the *whole* firm, while a
bank sees only the flows through its own accounts (SMEs bank with several banks), so the
bureau measures ``c`` far better than the bank does (R^2 about 0.7 against 0.25 for a linear
fit on either side's features); and ``g`` is visible only in public-sector records. Among the
bank's clients, for example, about 11% are on the abnormal-operation list and default at
about 30% (against 5% for the rest); about 39% paid no tax and default at about 14% (against
4.5%).

Calibration (logistic regression on :class:`protocols.features.FeatureRecipe`
inputs, bank clients the bureau knows, 80/20 split, ``generate_city(50_000, 5_000, seed)``,
seeds 1 to 3): bank features alone give an AUC of about 0.66, bank and bureau columns
together about 0.76, and with the bureau's graph features about 0.80 (graph lift about
+0.04; ``benchmarks/graph_lift.py --plaintext``). Before the graph's contagion was added to
the label the first two were 0.71 and 0.82: the contagion is risk that neither side's own
columns see. A single 20% hold-out of this size has only about 75 defaults, so the lift of
one split scatters by about 0.03.

Data products and later months: the registry (industry codes, founding dates, status,
revenue, assets, insured headcount now and a year ago) and the dated watch events, and the
same city a month on (``month=2``: new events, moved headcounts, the bureau's table and the
bank's clients updated), are drawn in :mod:`xinrong.synthetic_products` from the same latent
state with streams of their own: month 1's enterprise and bank columns are as they were.

Everything is vectorised numpy and reproducible from the seed: 2,000,000 enterprises take a
few seconds.
"""

from __future__ import annotations

import datetime
import json
import pathlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from protocols import uscc

from . import synthetic_products as sp
from .synthetic_graph import BETA_CONTAGION, BETA_GUARANTOR, CityGraph, draw_graph

__all__ = [
    "BANK_COLUMNS",
    "BUREAU_COLUMNS",
    "DEFAULT_RATE",
    "FUZHOU_DISTRICTS",
    "OUTSIDE_DISTRICTS",
    "City",
    "generate_city",
    "generate_usccs",
    "org_check_character",
    "write_city",
]

DEFAULT_RATE = 0.08

# Administrative divisions (GB/T 2260) of Fuzhou and its counties, with the share of
# registrations each takes (the municipal bureau "350100" registers some larger firms).
FUZHOU_DISTRICTS: dict[str, float] = {
    "350100": 0.06,  # Fuzhou municipal bureau
    "350102": 0.15,  # Gulou
    "350103": 0.11,  # Taijiang
    "350104": 0.13,  # Cangshan
    "350105": 0.06,  # Mawei
    "350111": 0.12,  # Jin'an
    "350112": 0.06,  # Changle
    "350121": 0.08,  # Minhou
    "350122": 0.04,  # Lianjiang
    "350123": 0.02,  # Luoyuan
    "350124": 0.02,  # Minqing
    "350125": 0.02,  # Yongtai
    "350128": 0.03,  # Pingtan
    "350181": 0.10,  # Fuqing
}
# Other cities, for bank clients the Fuzhou bureau does not know.
OUTSIDE_DISTRICTS: dict[str, float] = {
    "350203": 0.15,  # Xiamen Siming
    "350206": 0.15,  # Xiamen Huli
    "350211": 0.10,  # Xiamen Jimei
    "350502": 0.10,  # Quanzhou Licheng
    "350582": 0.10,  # Jinjiang
    "350302": 0.10,  # Putian Chengxiang
    "350702": 0.05,  # Nanping Yanping
    "310115": 0.10,  # Shanghai Pudong
    "440305": 0.10,  # Shenzhen Nanshan
    "330106": 0.05,  # Hangzhou Xihu
}

# Characters 1-2 of the code: registration authority and entity type, with their shares.
# "91" enterprise and "92" individual-owned business (market regulation), "93" farmers'
# cooperative, "Y1" registered by another authority.
_KINDS = ("91", "92", "93", "Y1")
_KIND_P = (0.78, 0.195, 0.02, 0.005)
_KIND_COMPANY, _KIND_INDIVIDUAL, _KIND_COOP, _KIND_OTHER = range(4)

INDUSTRIES = (
    "wholesale_retail",
    "manufacturing",
    "construction",
    "leasing_business_services",
    "information_technology",
    "accommodation_catering",
    "transport_logistics",
    "real_estate",
    "agriculture",
    "science_technical_services",
    "resident_services",
)
_INDUSTRY_P = np.array([0.29, 0.13, 0.08, 0.12, 0.08, 0.06, 0.05, 0.03, 0.04, 0.06, 0.06])
_INDUSTRY_RISK = np.array([0.10, 0.0, 0.35, 0.0, -0.15, 0.30, 0.10, 0.40, 0.20, -0.20, 0.10])
_INDUSTRY_SIZE = np.array([-0.1, 0.35, 0.30, 0.0, 0.0, -0.30, 0.10, 0.40, -0.2, -0.1, -0.4])

LEGAL_FORMS = (
    "limited_liability",
    "one_person_llc",
    "joint_stock",
    "partnership",
    "sole_proprietorship",
    "individual_business",
    "farmer_cooperative",
    "other",
)
# Enterprises ("91") split over the first five forms; the other kinds have one form each.
_COMPANY_FORM_P = np.array([0.64, 0.20, 0.02, 0.06, 0.08])
_FORM_SIZE = np.array([0.2, -0.2, 1.2, 0.0, -0.5, -0.9, -0.5, 0.0])

BUREAU_COLUMNS = (
    "uscc",
    "reg_age_years",
    "registered_capital_10k_cny",
    "industry",
    "legal_form",
    "changes_3y",
    "insured_employees",
    "employee_trend_12m",
    "tax_paid_12m_10k_cny",
    "invoice_amount_12m_10k_cny",
    "invoice_months_active_12m",
    "court_judgements_3y",
    "admin_penalties_3y",
    "abnormal_operation",
    "total_assets_10k_cny",
    "debt_ratio",
    "revenue_growth",
    "deregistered",
)
BANK_COLUMNS = (
    "uscc",
    "account_age_months",
    "avg_balance_6m_10k_cny",
    "cash_inflow_6m_10k_cny",
    "overdue_count_12m",
    "credit_utilization",
    "loan_amount_10k_cny",
    "y",
)

# Label model: weights of the latents in the default log-odds, and the gamma shape of ``g``.
_BETA_C, _BETA_G, _BETA_L = 0.9, 1.25, 1.2
_G_SHAPE = 0.6

_ORG_WEIGHTS = np.array([3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)
_ALPHABET_BYTES = np.frombuffer(uscc.ALPHABET.encode("ascii"), dtype=np.uint8)
_ALPHABET_VALUE = np.full(256, -1, dtype=np.int64)
_ALPHABET_VALUE[_ALPHABET_BYTES] = np.arange(len(uscc.ALPHABET))
_USCC_WEIGHTS = np.array(uscc.WEIGHTS, dtype=np.int64)
_DIGITS = np.frombuffer(b"0123456789", dtype=np.uint8)


# --------------------------------------------------------------------------- codes


def org_check_character(body8: str) -> str:
    """GB 11714 check character of an 8-character organisation code body (scalar reference).

    Weights 3, 7, 9, 10, 5, 8, 4, 2; digits count as themselves, letters A..Z as 10..35;
    ``c = 11 - (sum mod 11)``, written ``X`` for 10 and ``0`` for 11.
    """
    if len(body8) != 8:
        raise ValueError(f"need 8 characters, got {len(body8)}")
    total = 0
    for weight, char in zip(_ORG_WEIGHTS.tolist(), body8):
        if char.isdigit():
            value = int(char)
        elif "A" <= char <= "Z":
            value = ord(char) - ord("A") + 10
        else:
            raise ValueError(f"{char!r} is not an organisation-code character")
        total += weight * value
    check = 11 - total % 11
    return "X" if check == 10 else "0" if check == 11 else str(check)


def _org_check_bytes(body: np.ndarray) -> np.ndarray:
    """Vectorised :func:`org_check_character` over an ``(n, 8)`` uint8 array of ASCII."""
    values = np.where(body >= ord("A"), body.astype(np.int64) - 55, body.astype(np.int64) - 48)
    check = 11 - (values @ _ORG_WEIGHTS) % 11
    out = (check + ord("0")).astype(np.uint8)
    out[check == 10] = ord("X")
    out[check == 11] = ord("0")
    return out


def _uscc_check_bytes(first17: np.ndarray) -> np.ndarray:
    """USCC check characters (with :mod:`protocols.uscc`'s alphabet and weights) for
    an ``(n, 17)`` uint8 array."""
    values = _ALPHABET_VALUE[first17]
    if (values < 0).any():
        raise ValueError("character outside the USCC alphabet")
    return _ALPHABET_BYTES[(31 - (values @ _USCC_WEIGHTS) % 31) % 31]


def _draw_org_bodies(count: int, rng: np.random.Generator) -> np.ndarray:
    """``(count, 8)`` distinct organisation-code bodies: two thirds new-style ("MA" and six
    characters from the USCC alphabet), the rest old-style all-digit codes."""
    body = np.empty((count, 8), dtype=np.uint8)
    todo = np.arange(count)
    while todo.size:
        n = todo.size
        new_style = rng.random(n) < 0.65
        chunk = _DIGITS[rng.integers(0, 10, size=(n, 8))]
        chunk[new_style, 0] = ord("M")
        chunk[new_style, 1] = ord("A")
        chunk[new_style, 2:] = _ALPHABET_BYTES[rng.integers(0, 31, size=(int(new_style.sum()), 6))]
        body[todo] = chunk
        # The organisation code alone identifies the enterprise nationally: keep it distinct.
        key = _ALPHABET_VALUE[body] @ (31 ** np.arange(8, dtype=np.int64))
        order = np.argsort(key, kind="stable")
        repeated = np.zeros(count, dtype=bool)
        repeated[order[1:]] = key[order[1:]] == key[order[:-1]]
        todo = np.flatnonzero(repeated)
    return body


def _draw_districts(
    count: int, rng: np.random.Generator, districts: dict[str, float]
) -> np.ndarray:
    names = list(districts)
    p = np.array([districts[d] for d in names], dtype=float)
    table = np.frombuffer("".join(names).encode("ascii"), dtype=np.uint8).reshape(-1, 6)
    return table[rng.choice(len(names), size=count, p=p / p.sum())]


def _assemble(kind: np.ndarray, district: np.ndarray, body: np.ndarray) -> np.ndarray:
    """``S18`` codes from kind indices, ``(n, 6)`` district and ``(n, 8)`` org-body bytes."""
    n = int(kind.shape[0])
    out = np.empty((n, 18), dtype=np.uint8)
    prefixes = np.frombuffer("".join(_KINDS).encode("ascii"), dtype=np.uint8).reshape(-1, 2)
    out[:, 0:2] = prefixes[kind]
    out[:, 2:8] = district
    out[:, 8:16] = body
    out[:, 16] = _org_check_bytes(body)
    out[:, 17] = _uscc_check_bytes(out[:, :17])
    return out.view("S18").ravel()


def _kind_of(codes: np.ndarray) -> np.ndarray:
    """Kind index (see ``_KINDS``) of ``S18`` codes."""
    raw = np.ascontiguousarray(codes).view(np.uint8).reshape(-1, 18)
    kind = np.full(raw.shape[0], _KIND_OTHER, dtype=np.int8)
    is_9 = raw[:, 0] == ord("9")
    kind[is_9 & (raw[:, 1] == ord("1"))] = _KIND_COMPANY
    kind[is_9 & (raw[:, 1] == ord("2"))] = _KIND_INDIVIDUAL
    kind[is_9 & (raw[:, 1] == ord("3"))] = _KIND_COOP
    return kind


def generate_usccs(
    count: int,
    rng: np.random.Generator,
    *,
    districts: dict[str, float] | None = None,
) -> np.ndarray:
    """``count`` distinct valid USCCs (dtype ``S18``).

    Layout: authority and type (``91`` enterprise, ``92`` individual-owned business, ``93``
    farmers' cooperative, ``Y1`` other authority), a district code drawn from ``districts``
    (name -> share; Fuzhou by default), an organisation code (8 characters and its GB 11714
    check character) and the USCC check character.
    """
    if count < 0:
        raise ValueError("count must be non-negative")
    kind = rng.choice(len(_KINDS), size=count, p=_KIND_P)
    district = _draw_districts(count, rng, districts or FUZHOU_DISTRICTS)
    return _assemble(kind, district, _draw_org_bodies(count, rng))


def _string_array(codes: np.ndarray) -> pa.Array:
    """A pyarrow string array over ``S18`` codes without a Python round trip."""
    n = int(codes.shape[0])
    data = np.ascontiguousarray(codes).view(np.uint8)
    offsets = np.arange(0, 18 * (n + 1), 18, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))


# --------------------------------------------------------------------------- latent state


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class _Latent:
    kind: np.ndarray
    age: np.ndarray  # years
    za: np.ndarray  # standardised log age
    industry: np.ndarray
    form: np.ndarray
    size: np.ndarray
    c: np.ndarray  # operating distress (both sides see consequences)
    g: np.ndarray  # compliance and legal trouble, right-skewed (bureau side only)
    l: np.ndarray  # liquidity stress (bank side only)  # noqa: E741

    def take(self, index: np.ndarray) -> _Latent:
        return _Latent(**{k: v[index] for k, v in vars(self).items()})


def _draw_latent(kind: np.ndarray, rng: np.random.Generator) -> _Latent:
    n = int(kind.shape[0])
    za = rng.standard_normal(size=n)
    za[kind == _KIND_INDIVIDUAL] -= 0.3
    age = np.clip(np.exp(np.log(4.0) + 0.85 * za), 0.05, 45.0)
    industry = np.asarray(rng.choice(len(INDUSTRIES), size=n, p=_INDUSTRY_P / _INDUSTRY_P.sum()))
    form = np.full(n, LEGAL_FORMS.index("other"), dtype=np.int64)
    company = kind == _KIND_COMPANY
    form[company] = rng.choice(5, size=int(company.sum()), p=_COMPANY_FORM_P)
    form[kind == _KIND_INDIVIDUAL] = LEGAL_FORMS.index("individual_business")
    form[kind == _KIND_COOP] = LEGAL_FORMS.index("farmer_cooperative")
    size = rng.standard_normal(n) + _FORM_SIZE[form] + _INDUSTRY_SIZE[industry] + 0.25 * za
    c = 0.8 * rng.standard_normal(n) - 0.35 * za + _INDUSTRY_RISK[industry] - 0.1 * size
    g = rng.gamma(_G_SHAPE, 1.0 / np.sqrt(_G_SHAPE), size=n)  # right-skewed, unit variance
    l = rng.standard_normal(size=n)  # noqa: E741
    return _Latent(kind, age, za, industry, form, size, c, g, l)


# --------------------------------------------------------------------------- bureau


def _money(x: np.ndarray) -> np.ndarray:
    return np.round(x, 2)


def _bureau_table(codes: np.ndarray, lat: _Latent, rng: np.random.Generator) -> pa.Table:
    n = int(codes.shape[0])
    kind, size, c, g, age = lat.kind, lat.size, lat.c, lat.g, lat.age
    individual = kind == _KIND_INDIVIDUAL
    e = rng.standard_normal  # fresh, independent noise for every feature

    # Registration.
    capital = np.exp(np.log(50.0) + 0.9 * size + 0.8 * e(n))
    digits = np.floor(np.log10(capital)) - 1  # two significant figures, as registered
    capital = np.round(capital / 10.0**digits) * 10.0**digits
    changes = rng.poisson((np.exp(-0.8 + 0.15 * size) + 0.25 * g) * np.minimum(age, 3.0) / 3.0)

    # Employment (social insurance). Missing when the enterprise is not linked; more often
    # for individual businesses and cooperatives, and more often under distress or trouble
    # (contributions stop).
    employees = rng.poisson(np.exp(0.9 + 0.9 * size + 0.5 * e(n)))
    miss_emp = rng.random(n) < _sigmoid(
        -2.3 + 0.3 * c + 0.3 * g + 1.6 * individual + 2.0 * (kind == _KIND_COOP)
    )
    trend = np.round(np.exp(0.03 - 0.15 * c + 0.10 * e(n)), 3)
    miss_trend = miss_emp | (employees == 0) | (age < 1.0)

    # Operations (tax and invoices). Abnormal taxpayers (``g``) lose invoicing and stop paying
    # tax as well as firms in distress; most micro firms are below the VAT threshold anyway.
    p_month = _sigmoid(2.2 - 1.3 * c - 0.4 * g + 0.4 * size - 1.0 * individual)
    months = rng.binomial(12, p_month)
    months = np.minimum(months, np.ceil(age * 12.0).astype(np.int64))
    invoice = _money(np.exp(np.log(80.0) + 1.1 * size - 0.3 * c + 0.6 * e(n)) * months / 12.0)
    miss_invoice = rng.random(size=n) < 0.05
    p_zero_tax = _sigmoid(-1.0 + 0.9 * c + 0.9 * g - 0.7 * size + 0.8 * individual)
    zero_tax = (rng.random(n) < p_zero_tax) | ((months == 0) & (rng.random(n) < 0.9))
    tax = np.where(zero_tax, 0.0, _money(np.exp(np.log(3.0) + 1.0 * size - 0.4 * c + 0.7 * e(n))))
    miss_tax = rng.random(n) < (0.10 + 0.15 * individual)

    # Watch list. Events come at a rate that grows linearly with the trouble ``g``, so the
    # counts are proportional to it in the tail, where most of the bureau-only risk sits.
    court = rng.poisson(np.exp(-2.2 + 0.35 * c + 0.2 * size) + 0.3 * g)
    penalties = rng.poisson(np.exp(-2.5 + 0.2 * c) + 0.25 * g)
    abnormal = (rng.random(n) < _sigmoid(-4.0 + 1.5 * g + 0.7 * c)).astype(np.int8)

    # Audited financial statements: larger companies only, about 40% of all enterprises.
    has_fs = (kind == _KIND_COMPANY) & (rng.random(n) < _sigmoid(-0.1 + 0.9 * size))
    assets = _money(np.exp(np.log(300.0) + 1.2 * size + 0.5 * e(n)))
    debt_ratio = np.round(np.clip(0.55 + 0.14 * c + 0.08 * g + 0.14 * e(n), 0.02, 1.8), 3)
    growth = np.round(np.exp(0.04 - 0.2 * c + 0.25 * e(n)) - 1.0, 3)

    def col(values: np.ndarray, kind_: pa.DataType, missing: np.ndarray | None = None) -> pa.Array:
        return pa.array(values, type=kind_, mask=missing)

    def category(index: np.ndarray, names: Sequence[str]) -> pa.Array:
        return pc.take(pa.array(names, pa.string()), pa.array(index.astype(np.int32)))

    return pa.table(
        {
            "uscc": _string_array(codes),
            "reg_age_years": col(np.round(age, 2), pa.float64()),
            "registered_capital_10k_cny": col(capital, pa.float64()),
            "industry": category(lat.industry, INDUSTRIES),
            "legal_form": category(lat.form, LEGAL_FORMS),
            "changes_3y": col(changes, pa.int32()),
            "insured_employees": col(employees, pa.int32(), miss_emp),
            "employee_trend_12m": col(trend, pa.float64(), miss_trend),
            "tax_paid_12m_10k_cny": col(tax, pa.float64(), miss_tax),
            "invoice_amount_12m_10k_cny": col(invoice, pa.float64(), miss_invoice),
            "invoice_months_active_12m": col(months, pa.int8(), miss_invoice),
            "court_judgements_3y": col(court, pa.int32()),
            "admin_penalties_3y": col(penalties, pa.int32()),
            "abnormal_operation": col(abnormal, pa.int8()),
            "total_assets_10k_cny": col(assets, pa.float64(), ~has_fs),
            "debt_ratio": col(debt_ratio, pa.float64(), ~has_fs),
            "revenue_growth": col(growth, pa.float64(), ~has_fs),
        }
    )


# --------------------------------------------------------------------------- bank


def _bank_features(lat: _Latent, rng: np.random.Generator) -> dict[str, np.ndarray]:
    n = int(lat.size.shape[0])
    size, c, l = lat.size, lat.c, lat.l  # noqa: E741
    e = rng.standard_normal
    months_alive = np.maximum(1, np.ceil(lat.age * 12.0)).astype(np.int64)
    account_age = np.maximum(1, np.ceil(months_alive * rng.beta(2.0, 1.5, size=n))).astype(np.int64)
    loan = np.maximum(1.0, np.round(np.exp(np.log(100.0) + 0.9 * size + 0.5 * e(n))))
    balance = _money(np.exp(np.log(15.0) + 0.9 * size - 0.35 * c - 0.55 * l + 0.6 * e(n)))
    inflow = _money(np.exp(np.log(120.0) + 1.0 * size - 0.3 * c - 0.3 * l + 0.5 * e(n)))
    overdue = rng.poisson(np.exp(-1.7 + 0.55 * c + 0.6 * l))
    utilisation = np.round(_sigmoid(0.4 + 0.45 * c + 0.7 * l + 0.7 * e(n)), 3)
    return {
        "account_age_months": account_age,
        "avg_balance_6m_10k_cny": balance,
        "cash_inflow_6m_10k_cny": inflow,
        "overdue_count_12m": overdue,
        "credit_utilization": utilisation,
        "loan_amount_10k_cny": loan,
    }


def _intercept_for(score: np.ndarray, rate: float) -> float:
    """The intercept ``b`` with ``mean(sigmoid(b + score)) == rate`` (bisection)."""
    if score.size == 0:
        return float(np.log(rate / (1.0 - rate)))
    lo, hi = -30.0, 30.0
    for _ in range(60):
        mid = (lo + hi) / 2.0
        if _sigmoid(mid + score).mean() < rate:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


def _dirty_variant(code: str, style: int, rng: np.random.Generator) -> str:
    """A code as a person might type it; it still normalises to ``code``."""
    if style == 0 and code.lower() != code:
        return code.lower()
    if style == 1:
        return f"{code[:2]} {code[2:8]} {code[8:17]} {code[17]}"
    if style == 2:
        return "".join(chr(ord(ch) + 0xFEE0) for ch in code)
    cut = int(rng.integers(4, 14))
    return f" {code[:cut].lower()}\u3000{code[cut:]} "


def _invalid_variant(code: str, style: int, rng: np.random.Generator) -> str:
    """A code that validation must reject: wrong check character or wrong length."""
    if style == 0:
        value = uscc.ALPHABET.index(code[-1])
        return code[:-1] + uscc.ALPHABET[(value + int(rng.integers(1, 31))) % 31]
    at = int(rng.integers(2, 17))
    if style == 1:
        return code[:at] + code[at + 1 :]
    return code[:at] + uscc.ALPHABET[int(rng.integers(0, 31))] + code[at:]


def _composition(bank_clients: int) -> dict[str, int]:
    duplicates = 0 if bank_clients < 20 else min(50, max(1, bank_clients // 1000))
    unique = bank_clients - duplicates
    outside = round(0.08 * unique)
    dirty = round(0.02 * unique)
    invalid = dirty // 3
    return {
        "rows": bank_clients,
        "in_city_clean": unique - outside - dirty,
        "in_city_reformatted": dirty - invalid,
        "invalid": invalid,
        "outside_city": outside,
        "duplicated_rows": duplicates,
    }


# --------------------------------------------------------------------------- city


@dataclass(frozen=True)
class City:
    """A synthetic city: the bureau's enterprise table and one bank's client table.

    See the module docstring (or :meth:`describe`) for the latent model. ``composition``
    counts the bank rows by kind: clean in-city clients, in-city clients with reformatted
    IDs (spaces, lower case, full-width), invalid IDs, clients from outside the city and
    duplicated rows.
    """

    bureau: pa.Table
    bank: pa.Table
    seed: int | None = None
    composition: dict[str, int] = field(default_factory=dict)
    edges: pa.Table | None = None  # the association graph (see xinrong.synthetic_graph)
    # the data products' registry and events (see xinrong.synthetic_products)
    registry: pa.Table | None = None
    events: pa.Table | None = None
    month: int = 1
    data_date: datetime.date = sp.MONTH_1_DATE

    def describe(self) -> str:
        y = self.bank.column("y").to_numpy() if self.bank.num_rows else np.zeros(0)
        lines = [
            f"Synthetic SME city (seed {self.seed}): {self.bureau.num_rows:,} enterprises, "
            f"{self.bank.num_rows:,} bank rows, default rate {y.mean() if y.size else 0:.3f}.",
            "Bank rows: "
            + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in self.composition.items()),
            f"Latent model: y ~ Bernoulli(sigmoid(b0 + {_BETA_C} c + {_BETA_G} g + {_BETA_L} l)) "
            "with c operating distress (seen by both sides, by the bureau more clearly), g "
            "compliance/legal trouble (right-skewed, bureau only), l liquidity stress (bank "
            f"only); clients outside the city: sigmoid(b0' + {_BETA_C} c + {_BETA_L} l). "
            "Features are independent noisy consequences of the latents.",
        ]
        return "\n".join(lines)


def generate_city(
    enterprises: int, bank_clients: int, seed: int, graph: bool = True, month: int = 1
) -> City:
    """Draw a city of ``enterprises`` SMEs and a bank with ``bank_clients`` client rows, as
    its data stand at the end of ``month`` (1 is the data date 2026-11-30, each later month
    the same city a month on: see :mod:`xinrong.synthetic_products`).

    ``graph=False`` draws the city exactly as before issue 15: no association graph, no
    contagion, no ``deregistered`` column (for tests about something else)."""
    if enterprises < 0 or bank_clients < 0:
        raise ValueError("sizes must be non-negative")
    if month < 1:
        raise ValueError("months count from 1")
    comp = _composition(bank_clients)
    in_city = comp["in_city_clean"] + comp["in_city_reformatted"] + comp["invalid"]
    if in_city > enterprises:
        raise ValueError(
            f"{bank_clients} bank clients need at least {in_city} enterprises in the city"
        )
    # Simulation, not cryptography: a seeded PCG64 generator is what we want here.
    rng = np.random.default_rng(seed)
    n_out = comp["outside_city"]

    # Codes: one batch of distinct organisation codes for the city and the outside clients.
    total = enterprises + n_out
    kind = rng.choice(len(_KINDS), size=total, p=_KIND_P)
    body = _draw_org_bodies(total, rng)
    district = np.concatenate(
        [
            _draw_districts(enterprises, rng, FUZHOU_DISTRICTS),
            _draw_districts(n_out, rng, OUTSIDE_DISTRICTS),
        ]
    )
    codes = _assemble(kind, district, body)
    city_codes, outside_codes = codes[:enterprises], codes[enterprises:]

    latent = _draw_latent(kind, rng)
    city_lat = latent.take(np.arange(enterprises))
    out_lat = latent.take(np.arange(enterprises, total))
    bureau = _bureau_table(city_codes, city_lat, rng)
    # The graph has a stream of its own: the enterprise columns above stay as they were.
    graph_rng = np.random.default_rng([seed, 15])
    deregistered = np.zeros(enterprises, dtype=bool)
    city_graph: CityGraph | None = None
    contagion = np.zeros(enterprises)
    if graph:
        deregistered = graph_rng.random(enterprises) < _sigmoid(
            -5.0 + 1.6 * city_lat.c + 1.2 * city_lat.g
        )
        bureau = bureau.append_column("deregistered", pa.array(deregistered.astype(np.int8)))
        city_graph = draw_graph(city_lat.size, city_lat.c, city_lat.g, graph_rng)
        contagion += BETA_CONTAGION * np.log1p(city_graph.contagion(city_lat.c, city_lat.g))
        contagion += BETA_GUARANTOR * np.log1p(city_graph.guarantees_given())

    # Bank clients from the city: larger, established enterprises are likelier to bank here
    # (weighted sampling without replacement, Efraimidis-Spirakis keys).
    weight = np.exp(0.5 * city_lat.size) * np.where(city_lat.kind == _KIND_COMPANY, 1.0, 0.5)
    weight = weight * np.where(city_lat.age > 0.5, 1.0, 0.3)
    if graph:
        weight = np.where(deregistered, 1e-12, weight)  # closed firms are not clients
    keys = rng.exponential(size=enterprises) / weight
    chosen = np.argpartition(keys, in_city - 1)[:in_city] if in_city else np.zeros(0, np.int64)
    chosen = rng.permutation(np.sort(chosen))
    client_lat = city_lat.take(chosen)

    full_score = _BETA_C * client_lat.c + _BETA_G * client_lat.g + _BETA_L * client_lat.l
    full_score = full_score + contagion[chosen]
    bank_score = _BETA_C * out_lat.c + _BETA_L * out_lat.l
    p_in = _sigmoid(_intercept_for(full_score, DEFAULT_RATE) + full_score)
    p_out = _sigmoid(_intercept_for(bank_score, DEFAULT_RATE) + bank_score)
    y = np.concatenate([rng.random(in_city) < p_in, rng.random(n_out) < p_out]).astype(np.int8)

    features_in = _bank_features(client_lat, rng)
    features_out = _bank_features(out_lat, rng)
    features = {k: np.concatenate([features_in[k], features_out[k]]) for k in features_in}

    # The products and the months after the first: streams of their own (month 1's
    # enterprise and bank columns stay what they were).
    drivers = sp.Drivers(
        kind_company=city_lat.kind == _KIND_COMPANY,
        industry=city_lat.industry,
        size=city_lat.size,
        c=city_lat.c,
        g=city_lat.g,
    )
    products = sp.draw_registry(bureau, drivers, deregistered, np.random.default_rng([seed, 14]))
    month_1_age = bureau.column("reg_age_years").to_numpy()
    client_c = np.concatenate([client_lat.c, out_lat.c])
    client_l = np.concatenate([client_lat.l, out_lat.l])
    for later in range(2, month + 1):
        products = sp.advance(products, drivers, np.random.default_rng([seed, 14, later, 0]))
        bank_rng = np.random.default_rng([seed, 14, later, 1])
        features = sp.drift_bank(features, client_c, client_l, 1, bank_rng)
    if month > 1:
        bureau = sp.updated_bureau(bureau, products, month_1_age)

    ids = [code.decode("ascii") for code in city_codes[chosen]]
    ids += [code.decode("ascii") for code in outside_codes]
    n_clean = comp["in_city_clean"]
    n_reformatted = comp["in_city_reformatted"]
    for row in range(n_clean, n_clean + n_reformatted):
        ids[row] = _dirty_variant(ids[row], int(rng.integers(0, 4)), rng)
    for row in range(n_clean + n_reformatted, in_city):
        ids[row] = _invalid_variant(ids[row], int(rng.integers(0, 3)), rng)

    # Duplicated rows: exact copies of clean rows (in the city or outside).
    clean_rows = np.concatenate([np.arange(n_clean), np.arange(in_city, in_city + n_out)])
    if comp["duplicated_rows"] and clean_rows.size:
        copies = rng.choice(clean_rows, size=comp["duplicated_rows"], replace=False)
    else:
        copies = np.zeros(0, dtype=np.int64)
    rows = rng.permutation(np.concatenate([np.arange(in_city + n_out), copies]))
    id_array = pa.array(ids, pa.string()).take(pa.array(rows))

    types = {
        "account_age_months": pa.int32(),
        "avg_balance_6m_10k_cny": pa.float64(),
        "cash_inflow_6m_10k_cny": pa.float64(),
        "overdue_count_12m": pa.int32(),
        "credit_utilization": pa.float64(),
        "loan_amount_10k_cny": pa.float64(),
    }
    columns: dict[str, pa.Array] = {"uscc": id_array}
    for name, kind_ in types.items():
        columns[name] = pa.array(features[name][rows], type=kind_)
    columns["y"] = pa.array(y[rows], type=pa.int8())
    bank = pa.table(columns)
    edges = None if city_graph is None else city_graph.table(_string_array(city_codes), graph_rng)
    ids = bureau.column("uscc").combine_chunks()
    return City(
        bureau=bureau,
        bank=bank,
        seed=seed,
        composition=comp,
        edges=edges,
        registry=sp.registry_table(ids, products),
        events=sp.events_table(ids, products),
        month=month,
        data_date=products.date,
    )


BUREAU_DESCRIPTIONS = {
    "reg_age_years": "years since registration (business registry)",
    "registered_capital_10k_cny": "registered capital, 10k CNY (business registry)",
    "industry": "industry section of the national classification (business registry)",
    "legal_form": "legal form of the enterprise (business registry)",
    "changes_3y": "registry changes in the last 3 years: address, legal person, capital",
    "insured_employees": "employees with social insurance (human resources bureau)",
    "employee_trend_12m": "relative change of insured employees over 12 months",
    "tax_paid_12m_10k_cny": "taxes paid in the last 12 months, 10k CNY (tax bureau)",
    "invoice_amount_12m_10k_cny": "VAT invoices issued in the last 12 months, 10k CNY",
    "invoice_months_active_12m": "months with any VAT invoice in the last 12",
    "court_judgements_3y": "court judgements as defendant in the last 3 years",
    "admin_penalties_3y": "administrative penalties in the last 3 years",
    "abnormal_operation": "1 if on the abnormal-operation list (market regulator)",
    "total_assets_10k_cny": "total assets from the last filed statement, 10k CNY",
    "debt_ratio": "liabilities / assets from the last filed statement",
    "revenue_growth": "revenue growth year on year from filed statements",
    "deregistered": "1 if deregistered or its licence revoked (business registry)",
}
# Values anyone can look up for any enterprise: the registry fields (the bureau also sells
# them as its registration product). Marked public in the catalogue only when asked
# (``write_city(..., public=REGISTRY_FEATURES)``): with them known, the model policy finds
# the city's model on all 17 features exposed (SECURITY.md, "Model policy"). Court
# judgements, penalties and the abnormal-operation list are published in China too.
REGISTRY_FEATURES = frozenset(
    {"reg_age_years", "registered_capital_10k_cny", "industry", "legal_form", "deregistered"}
)


def bureau_catalogue(public: frozenset[str] = frozenset()) -> dict[str, object]:
    """The features sidecar the city's bureau reads (``bureau.features.json``)."""
    return {
        name: {"description": text, "public": True} if name in public else text
        for name, text in BUREAU_DESCRIPTIONS.items()
    }


def write_city(
    city: City, out_dir: pathlib.Path, public: frozenset[str] = frozenset()
) -> dict[str, pathlib.Path]:
    """Write ``bureau.parquet`` and ``bank_clients.csv`` (IDs as quoted text) to ``out_dir``,
    and beside them the products' ``registry.parquet`` and ``events.parquet`` (their data
    date in the parquet metadata key ``xinrong.data_date``), and the catalogue (``public``:
    the features it marks public)."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "bureau": out_dir / "bureau.parquet",
        "bank": out_dir / "bank_clients.csv",
        "bureau_catalogue": out_dir / "bureau.features.json",
    }
    if city.edges is not None:
        paths["graph"] = out_dir / "edges.parquet"
        pq.write_table(city.edges, paths["graph"], compression="zstd")
    for name, table in (("registry", city.registry), ("events", city.events)):
        if table is not None:
            paths[name] = out_dir / f"{name}.parquet"
            pq.write_table(table, paths[name], compression="zstd")
    pq.write_table(city.bureau, paths["bureau"], compression="zstd")
    paths["bureau_catalogue"].write_text(
        json.dumps(bureau_catalogue(public), indent=2, ensure_ascii=False) + "\n"
    )
    pacsv.write_csv(
        city.bank,
        paths["bank"],
        write_options=pacsv.WriteOptions(quoting_style="needed"),
    )
    return paths
