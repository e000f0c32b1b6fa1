"""SMC on the linear perceptron with a Gaussian prior (issue 14's goal): ``typicalnets sample`` with
its defaults plus ``--count`` and ``--time-limit`` only.

For each teacher (a random direction in R^d) and n, the inputs are Gaussian and the labels the
teacher's signs; the exact data-set average E[P(L_S = 0)] = int (1 - t/pi)^n sin^(d-2) t dt /
int sin^(d-2) t dt is printed beside SMC's estimate for reference (one data set's P varies about it).

    python benchmarks/smc_perceptron.py [--d 40] [--n 80,120,200] [--teachers 3] [--count 100] [--time-limit 120]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.integrate import quad


def expected_log_volume(d: int, n: int) -> float:
    """ln E[P(L_S = 0)] over data sets for the perceptron with a rotation-invariant prior."""
    numerator = quad(lambda t: (1 - t / math.pi) ** n * math.sin(t) ** (d - 2), 0, math.pi, limit=200)[0]
    denominator = quad(lambda t: math.sin(t) ** (d - 2), 0, math.pi, limit=200)[0]
    return math.log(numerator / denominator)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--d", type=int, default=40)
    parser.add_argument("--n", default="80,120,200")
    parser.add_argument("--teachers", type=int, default=3)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--time-limit", type=float, default=120.0)
    args = parser.parse_args()
    print(f"{'teacher':>7} {'n':>4} {'samples':>7} {'seconds':>7} {'ln P':>9} {'ln E[P]':>8}  stop / reached")
    with tempfile.TemporaryDirectory() as scratch:
        for teacher_seed in range(args.teachers):
            rng = np.random.default_rng(100 + teacher_seed)
            teacher = rng.normal(size=args.d)
            for n in (int(v) for v in args.n.split(",")):
                x = rng.normal(size=(n, args.d)).astype(np.float32)
                data = Path(scratch) / f"t{teacher_seed}-n{n}.npz"
                np.savez(data, x=x, y=np.sign(x @ teacher).astype(np.int8))
                out = Path(scratch) / f"out-{teacher_seed}-{n}"
                command = [sys.executable, "-m", "typicalnets.cli", "sample", "--train", str(data), "--arch", "diag"]
                command += ["--depth", "1", "--prior", "gaussian:1", "--sampler", "smc", "--count", str(args.count)]
                command += ["--time-limit", str(args.time_limit), "--out", str(out), "--no-progress"]
                start = time.perf_counter()
                subprocess.run(command, check=True, capture_output=True)
                seconds = time.perf_counter() - start
                summary = json.loads((out / "summary.json").read_text())
                reached = summary.get("examples_reached")
                estimate = summary["log_prob_interpolate"]  # null (nan) when no run finished
                print(
                    f"{teacher_seed:>7} {n:>4} {summary['count']:>7} {seconds:>7.1f} "
                    f"{math.nan if estimate is None else estimate:>9.3f} {expected_log_volume(args.d, n):>8.3f}  "
                    f"{summary['stop_reason']}" + (f" / {reached} examples" if reached is not None else ""),
                    flush=True,
                )


if __name__ == "__main__":
    main()
