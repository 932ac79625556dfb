"""A small public credit set split as a bank and a bureau would hold it, with the bureau's half
mostly categorical text: the shape on which the defaults must train and score.

From the UCI "default of credit card clients" table (Taiwan, 2005; 30,000 rows): the bank
keeps its own relationship data (credit limit, bills, payments: numbers); the bureau holds
the registry and repayment history as its records would show them, as Chinese text
categories (sex, education, marriage, age band, and six months of repayment status).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

UCI_FILE = "UCI_Credit_Card.csv"
BANK_NUMBERS = ["LIMIT_BAL", "BILL_AMT1", "BILL_AMT2", "BILL_AMT3", "PAY_AMT1", "PAY_AMT2"]
PAY_MONTHS = ["PAY_0", "PAY_2", "PAY_3", "PAY_4", "PAY_5", "PAY_6"]
SEX = {1: "男", 2: "女"}
EDUCATION = {1: "研究生", 2: "本科", 3: "高中", 4: "其他"}
MARRIAGE = {1: "已婚", 2: "未婚", 3: "其他"}


def _pay_status(value: int) -> str:
    if value <= -2:
        return "无消费"
    if value == -1:
        return "按时全额还款"
    if value == 0:
        return "循环信用"
    return f"逾期{min(value, 6)}个月" + ("以上" if value >= 6 else "")


def _age_band(age: int) -> str:
    low = min(max(age // 10 * 10, 20), 60)
    return f"{low}岁以上" if low == 60 else f"{low}-{low + 9}岁"


def split_uci(
    data_dir: Path, out_dir: Path, train_rows: int = 1000, test_rows: int = 5000, seed: int = 7
) -> dict[str, Path]:
    """Write ``bank_train.csv`` (id, y, bank numbers), ``bank_test.csv`` (other clients,
    same columns) and ``bureau.csv`` (id and ten text columns for all of them)."""
    raw = pacsv.read_csv(
        Path(data_dir) / UCI_FILE,
        convert_options=pacsv.ConvertOptions(column_types={"ID": pa.string()}),
    )
    # Simulation, not cryptography: a seeded generator picks the rows.
    order = np.random.default_rng(seed).permutation(raw.num_rows)[: train_rows + test_rows]
    table = raw.take(pa.array(order))
    ids = table.column("ID")

    def ints(name: str) -> list[int]:
        return [int(v) for v in table.column(name).to_pylist()]

    bureau = {"id": ids}
    bureau["性别"] = pa.array([SEX.get(v, "其他") for v in ints("SEX")])
    bureau["学历"] = pa.array([EDUCATION.get(v, "其他") for v in ints("EDUCATION")])
    bureau["婚姻状况"] = pa.array([MARRIAGE.get(v, "其他") for v in ints("MARRIAGE")])
    bureau["年龄段"] = pa.array([_age_band(v) for v in ints("AGE")])
    for i, name in enumerate(PAY_MONTHS):
        bureau[f"还款状态_{i + 1}月前"] = pa.array([_pay_status(v) for v in ints(name)])
    bank = pa.table(
        {"id": ids, "y": table.column("default.payment.next.month")}
        | {name: table.column(name) for name in BANK_NUMBERS}
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "bank_train": out_dir / "bank_train.csv",
        "bank_test": out_dir / "bank_test.csv",
        "bureau": out_dir / "bureau.csv",
    }
    pacsv.write_csv(bank.slice(0, train_rows), paths["bank_train"])
    pacsv.write_csv(bank.slice(train_rows), paths["bank_test"])
    pacsv.write_csv(pa.table(bureau), paths["bureau"])
    return paths
