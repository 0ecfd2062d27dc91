"""Training curves (matplotlib) from metrics.csv rows: loss and learning rate, validation
loss, validation metrics."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average with shrinking windows at the ends (same length as the input)."""
    if window <= 1 or len(values) < 3:
        return values
    kernel = np.ones(window)
    num = np.convolve(values, kernel, mode="same")
    den = np.convolve(np.ones_like(values), kernel, mode="same")
    return num / den


def _floats(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    steps, vals = [], []
    for r in rows:
        v = r.get(key)
        if v in (None, ""):
            continue
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if np.isfinite(f):
            steps.append(int(float(r["step"])))
            vals.append(f)
    return steps, vals


def plot_training_curves(rows: list[dict], path: str | Path, *, metric_keys: list[str] | None = None,
                         loss_key: str = "val/val_loss", initial: dict | None = None, dpi: int = 100) -> Path:
    """curves.png (`training_curves_figure`) written to `path`."""
    fig = training_curves_figure(rows, metric_keys=metric_keys, loss_key=loss_key, initial=initial, dpi=dpi)
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def training_curves_figure(rows: list[dict], *, metric_keys: list[str] | None = None,
                           loss_key: str = "val/val_loss", initial: dict | None = None, dpi: int = 100):
    """The training figure from metrics.csv rows, three panels: training loss (raw, faint, and smoothed) with
    the learning rate on its own axis (log when it spans a decade); the validation loss
    (`loss_key`); the validation metrics (`metric_keys`, default every other `val/` scalar
    without a "/" in its name). `initial` ({"val/...": value}) adds the untrained model's scores
    at step 0, so even a single validation shows where training started. Values are labelled."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import FuncFormatter

    fig, (ax_loss, ax_vloss, ax_metric) = plt.subplots(1, 3, figsize=(14, 3.8), dpi=dpi)
    steps, losses = _floats(rows, "loss")
    if steps:
        x, y = np.asarray(steps), np.asarray(losses)
        ax_loss.plot(x, y, color="tab:blue", alpha=0.25 if len(y) >= 5 else 1.0, linewidth=0.8, label="train loss")
        if len(y) >= 5:
            ax_loss.plot(x, _smooth(y, max(3, len(y) // 15)), color="tab:blue", linewidth=2,
                         label="train loss (smoothed)")
        if (y > 0).all() and y.max() / max(y.min(), 1e-12) > 20:
            ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("training")
    lr_steps, lrs = _floats(rows, "lr")
    lines, labels = ax_loss.get_legend_handles_labels()
    if lr_steps:
        lr_ax = ax_loss.twinx()
        lr_ax.plot(lr_steps, lrs, color="tab:orange", linewidth=1.2, label="learning rate")
        if all(v > 0 for v in lrs) and max(lrs) / min(lrs) > 10:
            lr_ax.set_yscale("log")
        else:  # a flat or gently decaying schedule: linear from 0, so a constant lr reads as one
            lr_ax.set_ylim(0, max(max(lrs), 1e-12) * 1.15)
            lr_ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.2g}"))
        lr_ax.set_ylabel("learning rate", color="tab:orange")
        lr_ax.tick_params(axis="y", colors="tab:orange", labelsize=7)
        more, more_labels = lr_ax.get_legend_handles_labels()
        lines, labels = lines + more, labels + more_labels
    if lines:
        ax_loss.legend(lines, labels, loc="upper right", fontsize=7)

    initial = initial or {}

    def draw(ax, key, color=None):
        s, v = _floats(rows, key)
        if not s:
            return False
        start = initial.get(key)
        if start is not None and np.isfinite(float(start)) and 0 not in s:
            s, v = [0, *s], [float(start), *v]
        (line,) = ax.plot(s, v, marker="o", markersize=5, label=key.removeprefix("val/"), color=color)
        if start is not None and s[0] == 0:
            ax.plot([0], [v[0]], marker="o", markersize=7, markerfacecolor="white", color=line.get_color())
            ax.annotate(f"untrained {v[0]:.4g}", (0, v[0]), textcoords="offset points", xytext=(4, -12),
                        fontsize=8, color=line.get_color())
        ax.annotate(f"{v[-1]:.4g}", (s[-1], v[-1]), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8,
                    color=line.get_color())
        ax.margins(y=0.15)
        if key == loss_key and min(v) > 0 and max(v) / min(v) > 20:  # an untrained loss far above the rest
            ax.set_yscale("log")
        if len(s) == 1:  # one point: give the axis some room around it
            ax.set_xlim(s[0] * 0.5 - 1, s[0] * 1.5 + 1)
        else:
            lo, hi = min(s), max(s)
            ax.set_xlim(lo - 0.05 * (hi - lo), hi + 0.12 * (hi - lo))
        return True

    if not draw(ax_vloss, loss_key, "tab:red"):
        ax_vloss.text(0.5, 0.5, f"no {loss_key}", ha="center", va="center", transform=ax_vloss.transAxes,
                      color="0.5")
    ax_vloss.set_title("validation loss")
    ax_vloss.set_xlabel("step")
    keys = metric_keys or sorted({k for r in rows for k in r if k.startswith("val/") and k != loss_key
                                  and "/" not in k[4:] and r.get(k) not in (None, "")})
    drawn = [k for k in keys if draw(ax_metric, k)]
    if drawn:
        ax_metric.legend(fontsize=7)
    else:
        ax_metric.text(0.5, 0.5, "no validation yet", ha="center", va="center", transform=ax_metric.transAxes,
                       color="0.5")
    ax_metric.set_title("validation metric" if len(drawn) <= 1 else "validation metrics")
    ax_metric.set_xlabel("step")
    for ax in (ax_loss, ax_vloss, ax_metric):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
