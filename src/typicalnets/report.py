"""Plots of experiment results."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # file output only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from typicalnets.stats import mean_t_interval  # noqa: E402


def _save_against_n(fig, ax, path: Path, ylabel: str, title: str) -> None:
    """The common frame of every plot against n (log2 axis), written to ``path``."""
    ax.set_xscale("log", base=2)
    ax.set_xlabel("training examples n")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def error_quantiles(rows: pd.DataFrame) -> pd.DataFrame:
    """Median and interquartile range of test error per (method, n)."""
    grouped = rows.groupby(["method", "n"])["test_error"]
    table = grouped.quantile([0.25, 0.5, 0.75]).unstack()
    table.columns = ["q25", "median", "q75"]
    table["networks"] = grouped.size()
    return table.reset_index()


def accuracy_intervals(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean test accuracy per (method, n) with a 95% Student-t interval over the networks.

    The networks of a cell share one training set, so the interval is about the typical network
    for that set (and seed), not about the spread over training sets."""
    records = []
    for (method, n), part in rows.groupby(["method", "n"], sort=False):
        mean, half = mean_t_interval(1.0 - part["test_error"].to_numpy(dtype=float))
        records.append(
            {
                "method": method,
                "n": n,
                "accuracy_mean": mean,
                "accuracy_ci_low": mean - half,
                "accuracy_ci_high": mean + half,
                "networks": len(part),
            }
        )
    return pd.DataFrame(
        records, columns=["method", "n", "accuracy_mean", "accuracy_ci_low", "accuracy_ci_high", "networks"]
    )


def plot_accuracy_vs_n(rows: pd.DataFrame, path: Path, title: str = "") -> None:
    """Mean test accuracy against n per method, with 95% intervals as error bars."""
    table = accuracy_intervals(rows)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for method, part in table.groupby("method", sort=False):
        part = part.sort_values("n")
        ax.errorbar(
            part["n"],
            part["accuracy_mean"],
            yerr=[part["accuracy_mean"] - part["accuracy_ci_low"], part["accuracy_ci_high"] - part["accuracy_mean"]],
            marker="o",
            capsize=3,
            label=method,
        )
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    _save_against_n(fig, ax, path, "test accuracy (mean, 95% interval)", title)


def plot_error_vs_n(
    rows: pd.DataFrame, path: Path, title: str = "", bounds: dict[str, float] | None = None, delta: float = 0.05
) -> None:
    """Test error against n: the median per method, with the interquartile range shaded.

    ``bounds`` maps a method to its C~ (nats): the bound (C~ + ln(1/delta)) / n that a typical
    interpolator's error stays below with probability >= 1 - delta is drawn dashed in its colour."""
    table = error_quantiles(rows)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for method, part in table.groupby("method"):
        part = part.sort_values("n")
        (line,) = ax.plot(part["n"], part["median"], marker="o", label=f"{method}")
        ax.fill_between(part["n"], part["q25"], part["q75"], color=line.get_color(), alpha=0.2)
        if bounds and method in bounds:
            grid = np.geomspace(part["n"].min(), part["n"].max(), 50)
            ax.plot(
                grid,
                (bounds[method] + math.log(1 / delta)) / grid,
                ls="--",
                color=line.get_color(),
                lw=1,
                label=f"{method} bound (C~={bounds[method]:.1f})",
            )
    ax.set_ylim(0, 1.0)
    _save_against_n(fig, ax, path, "test error (median, IQR shaded)", title)


def volume_violations(cells: pd.DataFrame, bounds: dict[str, float]) -> pd.DataFrame:
    """Cells whose measured -ln P(L_S = 0) exceeds C~ beyond its interval (the theory forbids it
    for noiseless teacher labels): -log_prob_ci_high > C~."""
    if not len(cells) or "log_prob_ci_high" not in cells:
        return cells.iloc[0:0]
    c_tilde = cells["method"].map(bounds)
    return cells[c_tilde.notna() & (-cells["log_prob_ci_high"] > c_tilde + 1e-9)]


def plot_volume_vs_n(cells: pd.DataFrame, path: Path, bounds: dict[str, float], title: str = "") -> None:
    """Measured -ln P(L_S = 0) per method against n, with its 95% interval, and each method's C~
    as a horizontal line: the theory says the points stay below their line. Violations are ringed red."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    measured = cells[cells["log_prob_ci_high"].notna()] if "log_prob_ci_high" in cells else cells.iloc[0:0]
    bad = volume_violations(measured, bounds)
    for method, part in measured.groupby("method", sort=False):
        part = part.groupby("n", as_index=False).agg(
            value=("log_prob_interpolate", "mean"), low=("log_prob_ci_low", "min"), high=("log_prob_ci_high", "max")
        )
        value = -part["value"].replace(-np.inf, np.nan)
        upper = -part["low"].replace(-np.inf, np.nan)  # an open interval (no acceptance) has no finite top
        (line,) = ax.plot(part["n"], value, marker="o", label=f"{method}")
        ax.fill_between(
            part["n"],
            -part["high"],
            upper.fillna(value.max() if value.notna().any() else 0),
            color=line.get_color(),
            alpha=0.2,
        )
        if method in bounds:
            ax.axhline(
                bounds[method], color=line.get_color(), ls="--", lw=1, label=f"C~ {method} = {bounds[method]:.1f}"
            )
    if len(bad):
        ax.scatter(
            bad["n"],
            -bad["log_prob_interpolate"].replace(-np.inf, np.nan),
            s=160,
            facecolors="none",
            edgecolors="red",
            linewidths=2,
            label="exceeds C~ (violation)",
        )
    _save_against_n(fig, ax, path, "-ln P(L_S = 0)  (95% interval shaded)", title)
