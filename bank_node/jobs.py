"""The bank's jobs, as functions the CLI, the demo and the tests call alike."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa

from node_runtime import tables
from node_runtime.parallel import make_executor
from node_runtime.progress import ProgressBars
from protocols import psi
from protocols.ids import IdType, prepare_ids

from .client import BureauConnection, OnProgress, run_psi
from .data_checks import refuse_without_usable_ids


def rejects_path_for(out: Path) -> Path:
    """``matched.csv`` -> ``matched.rejects.csv``, next to it."""
    return out.with_name(out.stem + ".rejects" + (out.suffix or ".csv"))


@dataclass(frozen=True)
class PsiSummary:
    rows: int
    bank_ids: int  # distinct valid IDs sent
    rejected: int
    duplicates: int
    intersection: int
    bureau_ids: int
    reveal: str
    session_id: str
    key_epoch: int
    out: str
    rejects: str
    seconds: float
    id_warnings: int = 0  # kept IDs that break a GB 32100 structure rule

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def psi_job(
    bureau: str,
    data: str | Path,
    id_column: str,
    out: str | Path,
    bank_id: str,
    id_type: IdType = IdType.USCC,
    reveal: psi.Reveal = psi.Reveal.BOTH,
    workers: int | None = None,
    executor_spec: str | None = None,
    on_progress: OnProgress | None = None,
    tls_dir: str | Path | None = None,
    read_options: tables.ReadOptions | None = None,
) -> PsiSummary:
    """Read the bank's file, run PSI with the bureau, write the matched IDs and the rejects."""
    started = time.perf_counter()
    out = Path(out)
    table = tables.read_table(data, id_column, columns=[], options=read_options)
    prepared = prepare_ids(table.column(id_column), id_type)
    ids = prepared.ids
    rejects = rejects_path_for(out)

    def write_rejects() -> None:
        where = tables.Whereabouts(data, table.num_rows, read_options)
        tables.write_rejects(prepared.rejects, rejects, prepared.warnings, where)

    if not ids:  # the rejects written, then refused before the bureau is asked anything
        write_rejects()
        refuse_without_usable_ids(prepared, str(rejects))
    executor = make_executor(workers, executor_spec)
    bars = ProgressBars() if on_progress is None else None
    try:
        with BureauConnection(bureau, bank_id, tls_dir=tls_dir) as connection:
            result = run_psi(
                connection, ids, reveal, executor, on_progress or bars or (lambda *a: None)
            )
    finally:
        if bars is not None:
            bars.close()
        if executor is not None:
            executor.shutdown(cancel_futures=True)
    # both parties hold them sorted; the bank's own file lists them in its order
    position = {v: i for i, v in enumerate(ids)}
    matched = sorted(result.matched_ids, key=position.__getitem__)
    tables.write_csv(pa.table({id_column: pa.array(matched, pa.string())}), out)
    write_rejects()
    return PsiSummary(
        rows=prepared.rows,
        bank_ids=len(ids),
        rejected=len(prepared.rejects),
        duplicates=prepared.duplicates,
        intersection=len(result.matched_ids),
        bureau_ids=result.bureau_set_size,
        reveal=reveal.value,
        session_id=result.session_id,
        key_epoch=result.key_epoch,
        out=str(out),
        rejects=str(rejects),
        seconds=round(time.perf_counter() - started, 3),
        id_warnings=len(prepared.warnings),
    )
