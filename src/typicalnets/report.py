"""Plots of experiment results."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # file output only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def error_quantiles(rows: pd.DataFrame) -> pd.DataFrame:
    """Median and interquartile range of test error per (method, n)."""
    grouped = rows.groupby(["method", "n"])["test_error"]
    table = grouped.quantile([0.25, 0.5, 0.75]).unstack()
    table.columns = ["q25", "median", "q75"]
    table["networks"] = grouped.size()
    return table.reset_index()


def plot_error_vs_n(rows: pd.DataFrame, path: Path, title: str = "") -> None:
    """Test error against n: the median per method, with the interquartile range shaded."""
    table = error_quantiles(rows)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for method, part in table.groupby("method"):
        part = part.sort_values("n")
        (line,) = ax.plot(part["n"], part["median"], marker="o", label=f"{method}")
        ax.fill_between(part["n"], part["q25"], part["q75"], color=line.get_color(), alpha=0.2)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("training examples n")
    ax.set_ylabel("test error (median, IQR shaded)")
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
