"""Calibration of the served `confidence` = sigmoid(q_halt): expected calibration error (ECE) and a
one-parameter temperature fitted on a validation split.

Calibrated confidence = sigmoid(q_halt / T). T > 1 softens an over-confident Q-head, T < 1 sharpens an
under-confident one; T = 1 is the raw value. A temperature keeps the ranking of answers (and so PTRM's
best-q choice and halting at q_halt > 0) unchanged: only the reported number moves.
"""

from __future__ import annotations

import math

import numpy as np

ECE_BINS = 10
# log-spaced search grid, then a golden-section refinement: deterministic, no optimiser dependency
_T_GRID = np.exp(np.linspace(math.log(0.02), math.log(50.0), 121))


def sigmoid(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free form of 1 / (1 + exp(-x))


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """Sum over equal-width confidence bins of (bin share) x |accuracy - mean confidence| (0 = perfect)."""
    conf = np.asarray(confidence, dtype=np.float64)
    hit = np.asarray(correct, dtype=np.float64)
    if conf.shape != hit.shape or conf.ndim != 1:
        raise ValueError(f"confidence {conf.shape} and correct {hit.shape} must be equal 1-D shapes")
    if conf.size == 0:
        return float("nan")
    idx = np.minimum((conf * bins).astype(np.int64), bins - 1)  # confidence 1.0 falls in the last bin
    ece = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(hit[m].mean() - conf[m].mean())
    return float(ece)


def _nll(q_halt: np.ndarray, correct: np.ndarray, t: float) -> float:
    z = np.asarray(q_halt, dtype=np.float64) / t
    y = np.asarray(correct, dtype=np.float64)
    # BCE with logits, stable: max(z,0) - z*y + log(1 + exp(-|z|))
    return float(np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))))


def fit_temperature(q_halt: np.ndarray, correct: np.ndarray) -> float:
    """The T > 0 minimising the log-loss of sigmoid(q_halt / T) against `correct` (1.0 if undefined)."""
    q = np.asarray(q_halt, dtype=np.float64)
    y = np.asarray(correct, dtype=np.float64)
    if q.size == 0 or y.min() == y.max():
        return 1.0  # all right or all wrong: any sharpening "helps", which says nothing; keep the raw value
    losses = [_nll(q, y, t) for t in _T_GRID]
    i = int(np.argmin(losses))
    lo, hi = math.log(_T_GRID[max(0, i - 1)]), math.log(_T_GRID[min(len(_T_GRID) - 1, i + 1)])
    g = (math.sqrt(5) - 1) / 2
    for _ in range(40):  # golden section on log T within the bracketing grid cells
        a, b = hi - g * (hi - lo), lo + g * (hi - lo)
        if _nll(q, y, math.exp(a)) <= _nll(q, y, math.exp(b)):
            hi = b
        else:
            lo = a
    return float(math.exp((lo + hi) / 2))


def calibration_report(q_halt: np.ndarray, correct: np.ndarray, temperature: float = 1.0) -> dict[str, float]:
    """ECE and the averages behind it for sigmoid(q_halt / temperature)."""
    conf = sigmoid(np.asarray(q_halt, dtype=np.float64) / temperature)
    hit = np.asarray(correct, dtype=bool)
    return {"ece": round(expected_calibration_error(conf, hit), 4), "mean_confidence": round(float(conf.mean()), 4),
            "accuracy": round(float(hit.mean()), 4), "n": int(hit.size), "temperature": round(float(temperature), 4)}
