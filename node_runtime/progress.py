"""Progress bars for long steps: on stderr in a terminal, as widgets in a Jupyter notebook
(tqdm.auto), silent elsewhere (a log file, a pipe) or when the user asked for quiet."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def visible() -> bool:
    """Whether a bar would be seen: stderr is a terminal, or we run in a Jupyter kernel."""
    return sys.stderr.isatty() or "ipykernel" in sys.modules


class ProgressBars:
    """A callable ``(step, done, total)`` that keeps one bar per step."""

    def __init__(self, enabled: bool | None = None, unit: str = "id") -> None:
        self.enabled = visible() if enabled is None else enabled
        self.unit = unit
        self._bars: dict[str, tqdm] = {}

    def __call__(self, step: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        bar = self._bars.get(step)
        if bar is None:
            bar = self._bars[step] = tqdm(
                total=total,
                desc=step,
                unit=self.unit,
                unit_scale=True,
                leave=False,
                file=sys.stderr,
            )
        bar.total = total
        bar.update(done - bar.n)

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()

    def __enter__(self) -> ProgressBars:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
