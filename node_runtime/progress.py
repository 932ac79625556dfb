"""Progress bars on stderr for long steps; silent when stderr is not a terminal or when
the user asked for quiet."""

from __future__ import annotations

import sys

from tqdm import tqdm


class ProgressBars:
    """A callable ``(step, done, total)`` that keeps one bar per step."""

    def __init__(self, enabled: bool | None = None, unit: str = "id") -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
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
