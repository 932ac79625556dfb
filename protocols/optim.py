"""Optimisers each party runs on its own half of the weights, and the batch schedule both
parties derive from the seed they agreed on.

The bank's own weights are in clear and may use any optimiser here. The bureau's weights exist
only as two additive shares (``ShareSgd``): the optimiser on them must be linear in the
weights and the gradient (SGD, momentum, L2), so that each party can update its share alone;
with ``name = "sgd"`` the joint update equals one optimiser over the concatenated weights.
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


FIXED_BITS = 32  # the optimiser's coefficients as integers over 2^32 (on shares)


class ShareSgd:
    """One party's additive share of weights that nobody holds in clear, updated by SGD with
    momentum and an L2 penalty: ``m = mu m + g + alpha w; w = w - lr m``. Every operation is
    linear, so the two parties' shares, each updated alone with its share of the gradient,
    always sum to the weights one such optimiser would hold, up to one unit of the fixed
    point per operation (each side rounds its own share down; integers never wrap).

    Shares are integers at scale 2^``scale_bits``; the coefficients are integers over
    2^FIXED_BITS, identical on both sides, so no float touches a share. Adam and L1 are not
    linear: with them in the plan, they serve the bank's own weights, and the shares take
    momentum SGD with the plan's rate, momentum and decay (and no penalty with L1)."""

    def __init__(self, config: OptimizerConfig, size: int, scale_bits: int) -> None:
        config.check()
        self.config = config
        self.scale_bits = scale_bits
        self.share = [0] * size
        self.momentum = [0] * size

    def state(self) -> dict[str, object]:
        # as decimal strings: shares outgrow JSON's exact integers in other readers
        return {"share": [str(v) for v in self.share], "momentum": [str(v) for v in self.momentum]}

    def load_state(self, state: dict[str, Any]) -> None:
        share = [int(v) for v in state["share"]]
        momentum = [int(v) for v in state["momentum"]]
        if len(share) != len(self.share) or len(momentum) != len(self.momentum):
            raise ValueError("the shared optimiser state has the wrong size")
        self.share, self.momentum = share, momentum

    def _fixed(self, value: float) -> int:
        return int(round(value * (1 << FIXED_BITS)))

    def step(self, gradient: list[int], gradient_bits: int, divisor: int, epoch: int) -> None:
        """``gradient``: this party's share of ``divisor * 2^gradient_bits * g``."""
        c = self.config
        momentum = self._fixed(c.momentum)  # also when the bank's own weights use Adam
        alpha = self._fixed(c.alpha if c.penalty == "l2" else 0.0)
        rate = self._fixed(c.learning_rate / (1.0 + c.decay * epoch))
        shift = self.scale_bits - gradient_bits + FIXED_BITS
        if shift < 0:
            raise ValueError("the gradient is finer than the weights")
        unit = (1 << shift) // divisor  # 2^(scale - gradient bits) / divisor, over 2^FIXED_BITS
        for i, g in enumerate(gradient):
            m = (momentum * self.momentum[i] + alpha * self.share[i] + unit * g) >> FIXED_BITS
            self.momentum[i] = m
            self.share[i] -= (rate * m) >> FIXED_BITS


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
    return list(np.array_split(order, _batch_count(len(order), batch_size)))


def _batch_count(rows: int, batch_size: int) -> int:
    return max(1, rows // batch_size)


def largest_batch(rows: int, batch_size: int) -> int:
    """The most rows a batch of ``epoch_batches`` holds (under twice the batch size)."""
    return -(-rows // _batch_count(rows, batch_size))


def fixed_batches(
    train_rows: np.ndarray, batch_size: int, seed: int, epoch: int
) -> list[np.ndarray]:
    """The first epoch's batches in every epoch, in a fresh order each epoch: a step from
    cross moments (``protocols.moments``) needs a batch's rows to stay together for the
    whole job."""
    batches = epoch_batches(train_rows, batch_size, seed, 0)
    order = np.random.default_rng([seed, 2, epoch]).permutation(len(batches))
    return [batches[i] for i in order.tolist()]
