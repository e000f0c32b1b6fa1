"""SMC with a uniform prior on real images (issue 14's goals): ``typicalnets sample`` with its
defaults plus ``--count`` and ``--time-limit`` only, on Fashion-MNIST T-shirt/top vs Trouser.

    python benchmarks/smc_fashion.py mlp [--n 256]      # MLP 784-32-1, U[-1, 1]
    python benchmarks/smc_fashion.py lenet [--n 128]    # LeNet w0.5, U[-1, 1]

The training set is ``load_binary_task("fashion-mnist", ("T-shirt/top", "Trouser"), n / 2, seed=0)``
(standardized globally), written to an .npz with 2,000 of the test split. Each line gives the
samples drawn, the seconds, the stop reason, how many examples the runs reached, and the test
accuracy of the samples. Needs the Debian package dataset-fashion-mnist.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from typicalnets.data import load_binary_task

PAIR = ("T-shirt/top", "Trouser")
STUDENTS = {
    "mlp": (["--arch", "fcn", "--widths", "32"], True, 256),
    "lenet": (["--arch", "lenet", "--width-factor", "0.5"], False, 128),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("student", choices=sorted(STUDENTS))
    parser.add_argument("--n", type=int)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--time-limit", type=float, default=600.0)
    parser.add_argument("--prior", default="uniform:1")
    args = parser.parse_args()
    flags, flatten, default_n = STUDENTS[args.student]
    n = args.n or default_n
    task = load_binary_task("fashion-mnist", PAIR, n // 2, seed=0, flatten=flatten)
    with tempfile.TemporaryDirectory() as scratch:
        train, test, out = Path(scratch) / "train.npz", Path(scratch) / "test.npz", Path(scratch) / "out"
        np.savez(train, x=task.train.x.numpy(), y=task.train.y.numpy())
        np.savez(test, x=task.test.x[:2000].numpy(), y=task.test.y[:2000].numpy())
        command = [sys.executable, "-m", "typicalnets.cli", "sample", "--train", str(train), "--test", str(test)]
        command += [*flags, "--prior", args.prior, "--sampler", "smc", "--count", str(args.count)]
        command += ["--time-limit", str(args.time_limit), "--out", str(out), "--no-progress"]
        start = time.perf_counter()
        subprocess.run(command, check=True)
        seconds = time.perf_counter() - start
        summary = json.loads((out / "summary.json").read_text())
    accuracy = summary.get("test_accuracy_mean")
    print(
        f"{args.student} n={n} {args.prior}: {summary['count']} samples in {seconds:.1f} s, stop "
        f"{summary['stop_reason']}, examples reached {summary.get('examples_reached', n)}, "
        f"ln P {summary.get('log_prob_interpolate')}, test accuracy {accuracy}",
        flush=True,
    )


if __name__ == "__main__":
    main()
