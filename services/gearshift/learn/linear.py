"""Closed-form linear fits shared by the offline fitters (numpy only)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]


def ridge(x: F32, y: npt.NDArray[np.float64], alpha: float) -> tuple[F32, float]:
    """Ridge regression with an unpenalised intercept (closed form)."""
    x64 = x.astype(np.float64)
    mean_x = x64.mean(axis=0)
    mean_y = float(y.mean())
    xc = x64 - mean_x
    gram = xc.T @ xc + alpha * np.eye(x.shape[1])
    coef = np.linalg.solve(gram, xc.T @ (y - mean_y))
    return coef.astype(np.float32), mean_y - float(mean_x @ coef)


def logistic_1d(x: npt.NDArray[np.float64], y: npt.NDArray[np.bool_]) -> tuple[float, float]:
    """(a, b) of P(y) = sigmoid(a x + b), by Newton's method (a tiny L2 keeps it finite)."""
    a, b = 1.0, 0.0
    t = y.astype(np.float64)
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(a * x + b)))
        w = p * (1 - p)
        grad = np.array([np.sum((p - t) * x) + 1e-3 * a, np.sum(p - t)])
        hess = np.array(
            [[np.sum(w * x * x) + 1e-3, np.sum(w * x)], [np.sum(w * x), np.sum(w) + 1e-9]]
        )
        step = np.linalg.solve(hess, grad)
        a, b = a - float(step[0]), b - float(step[1])
        if np.abs(step).max() < 1e-9:
            break
    return a, b
