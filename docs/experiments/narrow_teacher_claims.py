"""The paper's claims on teacher-student tasks (issue 5): runs the experiments and draws the plots.

    python docs/experiments/narrow_teacher_claims.py [--seeds 0,1,2,3] [--n 8,16,32,64] [--only a,b,c,d]

Every setting is a ``typicalnets run`` experiment (Gaussian inputs in 6 dimensions, a narrow vanilla
FCN teacher, 100 typical interpolators per (setting, n, seed): Guess & Check, and SMC (two runs
of 100 particles) where G&C's 5 s budget runs out). Results go to
docs/experiments/out/<claim>/<setting>/, the cell tables to docs/experiments/claim_<claim>.csv and
the plots to docs/img/claim_<claim>.png. Points are the mean test error over the seeds' cell means, with a 95%
Student-t interval over seeds (so the spread between teachers and data sets is in the interval).

(a) error grows with teacher width at a fixed student (16);
(b) error barely grows with student width for scaled-neuron students, and more for vanilla ones
    (teacher fcn[2,2], students of two hidden layers);
(c) error grows with ln Q;
(d) with random labels (no teacher) typical interpolators do not generalize, and -ln P(L_S = 0)
    grows like n ln 2 instead of staying below C~.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from rich.console import Console  # noqa: E402

from typicalnets.experiments import RunConfig, run_experiment  # noqa: E402
from typicalnets.stats import mean_t_interval  # noqa: E402

ROOT = Path(__file__).resolve().parent
IMG = ROOT.parent / "img"
COMMON = {
    "input": "gaussian",
    "in_dim": 6,
    "count": 100,
    "time_limit": 5.0,
    "smc_particles": 100,
    "smc_repeats": 2,
    "smc_refresh": 0.5,
    "n_test": 5000,
}

CLAIMS = {
    "a": {f"teacher {w}": {"teacher_widths": [w], "methods": ["gc:fcn"]} for w in (1, 2, 4)},
    # Two hidden layers: with one, a vanilla student silences its extras with as many zero readout
    # weights as a scaled one needs zero scales, so the two bounds (and predictions) coincide.
    # G&C only up to n = 32 here (20 s per cell): SMC has no cached moves for two hidden layers.
    "b": {
        "students": {
            "teacher_widths": [2, 2],
            "time_limit": 20.0,
            "n_max": 32,
            "methods": [f"gc:{s}:{w}x{w}" for s in ("fcn", "sfcn") for w in (4, 16, 64)],
        }
    },
    "c": {f"Q={q}": {"teacher_widths": [2], "prior": f"quantized:{q}", "methods": ["gc:fcn"]} for q in (3, 5, 9)},
    "d": {
        "teacher labels": {"teacher_widths": [2], "methods": ["gc:fcn"]},
        "random labels": {"teacher_widths": [2], "methods": ["gc:fcn"], "random_labels": True},
    },
}


def over_seeds(cells: pd.DataFrame, value: str) -> pd.DataFrame:
    """Mean over seeds of a per-cell value, with a 95% t-interval over seeds."""
    rows = []
    for (method, n), part in cells.groupby(["method", "n"], sort=False):
        mean, half = mean_t_interval(part[value].to_numpy(dtype=float))
        rows.append({"method": method, "n": n, "mean": mean, "half": half, "seeds": len(part)})
    return pd.DataFrame(rows)


def run_claim(claim: str, seeds: list[int], sizes: list[int], console: Console) -> pd.DataFrame:
    frames = []
    for setting, values in CLAIMS[claim].items():
        values = dict(values)
        n_max = values.pop("n_max", max(sizes))
        config = RunConfig.build({**COMMON, **values, "seeds": seeds, "n": [n for n in sizes if n <= n_max]})
        out = ROOT / "out" / claim / setting.replace(" ", "-").replace("=", "")
        rows = run_experiment(config, out, overwrite=True, progress=False, console=console)
        cells = pd.read_csv(out / "cells.csv")
        errors = rows.groupby(["method", "n", "seed"], as_index=False)["test_error"].mean()
        cells = cells.merge(errors, on=["method", "n", "seed"], how="left")
        cells["setting"] = setting
        frames.append(cells)
    table = pd.concat(frames, ignore_index=True)
    table.to_csv(ROOT / f"claim_{claim}.csv", index=False)
    return table


def plot_claim(claim: str, table: pd.DataFrame) -> None:
    panels = 2 if claim == "d" else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.4 * panels, 4.2), squeeze=False)
    ax = axes[0, 0]
    for (setting, method), part in table.groupby(["setting", "method"], sort=False):
        summary = over_seeds(part, "test_error").sort_values("n")
        label = method if claim == "b" else setting
        ax.errorbar(
            summary["n"],
            summary["mean"],
            yerr=summary["half"],
            marker="o",
            capsize=3,
            label=label,
            ls="--" if ":sfcn" in method else "-",
        )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("training examples n")
    ax.set_ylabel("test error (mean over seeds, 95% CI)")
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_ylim(0, 0.6)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    titles = {
        "a": "(a) teacher width, student fcn[16]",
        "b": "(b) student width, teacher fcn[2,2]: vanilla (solid) vs scaled (dashed)",
        "c": "(c) quantization levels Q, teacher fcn[2], student fcn[16]",
        "d": "(d) teacher labels vs random labels",
    }
    ax.set_title(titles[claim], fontsize=10)
    if claim == "d":
        ax = axes[0, 1]
        for setting, part in table.groupby("setting", sort=False):
            summary = over_seeds(part.assign(neg=-part["log_prob_interpolate"]), "neg").sort_values("n")
            ax.errorbar(summary["n"], summary["mean"], yerr=summary["half"], marker="o", capsize=3, label=setting)
        failed = table[(table["setting"] == "random labels") & (table["networks"] == 0)].groupby("n")["seed"].count()
        for n, seeds in failed.items():  # -ln P = inf there: no point to draw, so say it
            ax.annotate(
                f"random labels: no interpolator\nfound for {seeds} of {table['seed'].nunique()} seeds",
                (n, table["n"].max() * math.log(2) * 0.75),
                ha="center",
                fontsize=7,
                color="C1",
            )
        grid = sorted(table["n"].unique())
        ax.plot(grid, [n * math.log(2) for n in grid], color="grey", ls=":", label="n ln 2 (chance)")
        bound = table[table["setting"] == "teacher labels"]["c_tilde"].max()
        ax.axhline(bound, color="black", ls="--", lw=1, label=f"C~ bound (largest over seeds) = {bound:.1f}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("training examples n")
        ax.set_ylabel("-ln P(L_S = 0)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(IMG / f"claim_{claim}.png", dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2,3")
    parser.add_argument("--n", default="8,16,32,64")
    parser.add_argument("--only", default="a,b,c,d")
    parser.add_argument("--plot-only", action="store_true", help="redraw from docs/experiments/claim_*.csv")
    args = parser.parse_args()
    seeds = [int(v) for v in args.seeds.split(",")]
    sizes = [int(v) for v in args.n.split(",")]
    console = Console(stderr=True)
    for claim in args.only.split(","):
        table = pd.read_csv(ROOT / f"claim_{claim}.csv") if args.plot_only else run_claim(claim, seeds, sizes, console)
        plot_claim(claim, table)
        console.print(f"claim ({claim}): docs/img/claim_{claim}.png, docs/experiments/claim_{claim}.csv")


if __name__ == "__main__":
    main()
