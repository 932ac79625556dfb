"""Optimisers each party runs on its own half of the weights, and the batch schedule both
parties derive from the seed they agreed on.

Both halves use the same configuration, so the joint update equals one optimiser over the
concatenated weights (SGD and Adam are coordinate-wise).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .errors import PolicyViolation

OPTIMIZERS = ("adam", "sgd")
PENALTIES = ("l2", "l1", "none")


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = "adam"
    learning_rate: float = 0.05
    momentum: float = 0.9  # SGD
    beta1: float = 0.9  # Adam
    beta2: float = 0.999
    epsilon: float = 1e-8
    decay: float = 0.5  # learning rate / (1 + decay * epoch)
    penalty: str = "l2"
    alpha: float = 1e-4  # penalty strength

    def check(self) -> None:
        if self.name not in OPTIMIZERS:
            raise PolicyViolation(f"unknown optimizer {self.name!r}; use one of {OPTIMIZERS}")
        if self.penalty not in PENALTIES:
            raise PolicyViolation(f"unknown penalty {self.penalty!r}; use one of {PENALTIES}")
        numbers = {
            "learning_rate": (self.learning_rate, 0.0, 10.0),
            "momentum": (self.momentum, 0.0, 0.9999),
            "beta1": (self.beta1, 0.0, 0.9999),
            "beta2": (self.beta2, 0.0, 0.999999),
            "epsilon": (self.epsilon, 1e-12, 1.0),
            "decay": (self.decay, 0.0, 100.0),
            "alpha": (self.alpha, 0.0, 100.0),
        }
        for name, (value, lo, hi) in numbers.items():
            if not (math.isfinite(value) and lo <= value <= hi) or (
                name == "learning_rate" and value == 0
            ):
                raise PolicyViolation(f"{name} = {value} is outside ({lo}, {hi}]")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Optimizer:
    """Keeps one party's weights and optimiser state. ``penalised`` marks the weights the
    penalty applies to (not the intercept)."""

    def __init__(
        self, config: OptimizerConfig, size: int, penalised: np.ndarray | None = None
    ) -> None:
        config.check()
        self.config = config
        self.weights = np.zeros(size)
        self.penalised = np.ones(size, dtype=bool) if penalised is None else penalised
        self._m = np.zeros(size)
        self._v = np.zeros(size)
        self._t = 0

    def state(self) -> dict[str, object]:
        """Everything a resumed run needs to continue exactly (floats survive JSON)."""
        return {
            "weights": self.weights.tolist(),
            "m": self._m.tolist(),
            "v": self._v.tolist(),
            "t": self._t,
        }

    def load_state(self, state: dict[str, object]) -> None:
        size = len(self.weights)
        for name in ("weights", "m", "v"):
            value = np.asarray(state[name], dtype=np.float64)
            if value.shape != (size,):
                raise ValueError(f"optimizer state {name} has the wrong size")
        self.weights = np.asarray(state["weights"], dtype=np.float64)
        self._m = np.asarray(state["m"], dtype=np.float64)
        self._v = np.asarray(state["v"], dtype=np.float64)
        self._t = int(state["t"])  # type: ignore[call-overload]

    def step(self, gradient: np.ndarray, epoch: int) -> None:
        c = self.config
        g = np.asarray(gradient, dtype=np.float64).copy()
        if c.penalty == "l2":
            g += c.alpha * self.weights * self.penalised
        elif c.penalty == "l1":
            g += c.alpha * np.sign(self.weights) * self.penalised
        lr = c.learning_rate / (1.0 + c.decay * epoch)
        self._t += 1
        if c.name == "adam":
            self._m = c.beta1 * self._m + (1 - c.beta1) * g
            self._v = c.beta2 * self._v + (1 - c.beta2) * g * g
            m_hat = self._m / (1 - c.beta1**self._t)
            v_hat = self._v / (1 - c.beta2**self._t)
            self.weights = self.weights - lr * m_hat / (np.sqrt(v_hat) + c.epsilon)
        else:
            self._m = c.momentum * self._m + g
            self.weights = self.weights - lr * self._m


# -- the schedule ---------------------------------------------------------------------------
# The split and the batch order are not secrets: both parties derive them from the seed in
# the training plan so that neither can choose batches to isolate rows.


def split_rows(rows: int, validation_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the training and the validation rows (each sorted)."""
    order = np.random.default_rng([seed, 0]).permutation(rows)
    held = int(round(rows * validation_fraction))
    return np.sort(order[held:]), np.sort(order[:held])


def epoch_batches(
    train_rows: np.ndarray, batch_size: int, seed: int, epoch: int
) -> list[np.ndarray]:
    """The batches of one epoch: a fresh permutation cut into nearly equal batches of at
    least ``batch_size`` rows (the remainder is spread, never a small last batch)."""
    order = np.random.default_rng([seed, 1, epoch]).permutation(train_rows)
    count = max(1, len(order) // batch_size)
    return list(np.array_split(order, count))
