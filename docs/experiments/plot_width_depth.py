"""Plot the width and depth sweep (configs/fashion_mnist_width_depth.toml) from its accuracy.csv.

    typicalnets run --config configs/fashion_mnist_width_depth.toml --device cuda --time-limit 25 \
        --out docs/results/fashion_mnist_width_depth
    python docs/experiments/plot_width_depth.py docs/results/fashion_mnist_width_depth

Writes width_depth.png beside the csv: test accuracy at the largest n against MLP width, LeNet
width factor and MLP depth, for Guess & Check and SGD (mean and 95% interval over networks).
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def main(folder: Path) -> None:
    table = pd.read_csv(folder / "accuracy.csv")
    table = table[table["n"] == table["n"].max()]
    parts = table["method"].str.split(":", expand=True)
    table = table.assign(sampler=parts[0], student=parts[1], shape=parts[2])
    panels = {
        "MLP width (one hidden layer)": (table["student"] == "fcn") & ~table["shape"].str.contains("x"),
        "LeNet width factor": table["student"] == "lenet",
        "MLP depth (hidden layers of 32)": (table["student"] == "fcn") & table["shape"].str.startswith("32"),
    }
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=True)
    for ax, (title, rows) in zip(axes, panels.items()):
        for sampler, part in table[rows].groupby("sampler"):
            depth = "depth" in title
            x = part["shape"].map(lambda s, depth=depth: s.count("x") + 1 if depth else float(s.split("x")[0]))
            part = part.assign(x=x).sort_values("x")
            ax.errorbar(
                part["x"],
                part["accuracy_mean"],
                yerr=part["accuracy_ci_high"] - part["accuracy_mean"],
                marker="o",
                capsize=3,
                label={"gc": "typical interpolators (G&C)", "sgd": "SGD"}[sampler],
            )
        if "depth" not in title:
            ax.set_xscale("log", base=2)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"test accuracy at n = {table['n'].max()}")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "width_depth.png", dpi=110)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
