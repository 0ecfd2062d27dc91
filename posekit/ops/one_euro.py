"""One-Euro filter (Casiez, Roussel, Vogel, CHI 2012) for keypoint tracks, in numpy.

A low-pass filter whose cutoff rises with speed: slow joints are smoothed hard (jitter goes),
fast joints follow with little lag. One filter holds the state of K joints of one person; each
joint keeps its own last time, so a joint missing for some frames neither moves its filter nor
is dragged toward a placeholder value, and resumes from its last estimate with the true gap.
"""
from __future__ import annotations

import math

import numpy as np


def _alpha(cutoff: np.ndarray | float, dt: np.ndarray) -> np.ndarray:
    """Smoothing factor of an exponential filter with `cutoff` Hz sampled every `dt` s."""
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff, dtype=np.float64))
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """Filter (K, D) points over time (pixels; time in seconds).

    min_cutoff (Hz): cutoff at rest; lower = smoother still joints, more lag.
    beta: how fast the cutoff grows with speed (per px/s); higher = less lag when moving.
    d_cutoff (Hz): cutoff of the speed estimate (the paper's 1 Hz).
    The speed is the norm of a joint's D-dimensional velocity, so x and y share one cutoff
    (filtering them apart would bend a diagonal motion)."""

    def __init__(self, min_cutoff: float = 0.5, beta: float = 0.04, d_cutoff: float = 1.0):
        for name, value in (("min_cutoff", min_cutoff), ("d_cutoff", d_cutoff)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"one_euro {name} must be a positive number of Hz, got {value}")
        if not (math.isfinite(beta) and beta >= 0):
            raise ValueError(f"one_euro beta must be >= 0, got {beta}")
        self.min_cutoff, self.beta, self.d_cutoff = float(min_cutoff), float(beta), float(d_cutoff)
        self.x: np.ndarray | None = None   # (K, D) last estimate per joint
        self.dx: np.ndarray | None = None  # (K, D) last filtered velocity
        self.t: np.ndarray | None = None   # (K,) time of each joint's last valid sample (NaN: never seen)

    def __call__(self, points: np.ndarray, t: float, valid: np.ndarray | None = None) -> np.ndarray:
        """The filtered (K, D) points at time `t` (s). `valid` (K,) bool: joints observed now
        (default: finite ones). An invalid joint is returned as given and leaves its state alone."""
        points = np.asarray(points, dtype=np.float64)
        if points.ndim != 2:
            raise ValueError(f"OneEuroFilter: points must be (K, D), got {points.shape}")
        ok = np.isfinite(points).all(axis=1)
        if valid is not None:
            ok &= np.asarray(valid, dtype=bool).reshape(len(points))
        if self.x is None or self.x.shape != points.shape:
            self.x = np.zeros_like(points)
            self.dx = np.zeros_like(points)
            self.t = np.full(len(points), np.nan)
        out = points.copy()
        first = ok & np.isnan(self.t)
        self.x[first], self.t[first] = points[first], t
        update = ok & ~first
        if update.any():
            dt = t - self.t[update]
            if np.any(dt <= 0):
                raise ValueError(f"OneEuroFilter: time must increase (got t={t} after {np.nanmax(self.t)})")
            dt = dt[:, None]
            x_prev, dx_prev = self.x[update], self.dx[update]
            dx = (points[update] - x_prev) / dt
            a_d = _alpha(self.d_cutoff, dt)
            dx_hat = a_d * dx + (1.0 - a_d) * dx_prev
            cutoff = self.min_cutoff + self.beta * np.linalg.norm(dx_hat, axis=1, keepdims=True)
            a = _alpha(cutoff, dt)
            x_hat = a * points[update] + (1.0 - a) * x_prev
            self.x[update], self.dx[update], self.t[update] = x_hat, dx_hat, t
            out[update] = x_hat
        return out
