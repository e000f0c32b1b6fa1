"""How far SMC reaches on issue 4's reach task in a time budget (the counterpart of gc_reach.py).

    python benchmarks/smc_reach.py [--n 512] [--particles 128] [--budget 600]
    python benchmarks/smc_reach.py --cli [--count 100] [--budget 600]   # issue 14's goal

Task: 784-dimensional Gaussian inputs labelled by a narrow FCN teacher of width 2 (the same task
and seed as gc_reach.py); student FCN 784-32-1 with weights uniform over {-1, 0, 1}. One SMC run
adds the examples one at a time until n or the time budget; it prints the diagnostics every 32
steps, then the examples reached, the seconds, ln P(L_S = 0) and the samples' test error.

With --cli the same task goes through ``typicalnets sample --sampler smc`` with its defaults plus
``--count`` and ``--time-limit`` only (issue 14's goal: 100 samples at n = 512 within 600 s), and the
line printed comes from its summary.json; the seconds are the whole process's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from typicalnets.nets import FCN
from typicalnets.priors import QuantizedUniform
from typicalnets.samplers import SequentialMonteCarlo, sample
from typicalnets.teachers import make_task, narrow_teacher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--particles", type=int, default=128)
    parser.add_argument("--budget", type=float, default=600.0, help="seconds")
    parser.add_argument("--refresh", type=float, default=1.0, help="accepted moves per particle per step, in sweeps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cli", action="store_true", help="run typicalnets sample with its defaults")
    parser.add_argument("--count", type=int, default=100, help="--cli: samples asked for")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the native moves use every core through OpenMP
    prior = QuantizedUniform.evenly_spaced(3)
    gen = torch.Generator().manual_seed(args.seed)
    teacher = narrow_teacher(FCN(784, (2,)), prior, gen)
    task = make_task(teacher, args.n, 2000, gen)
    if args.cli:
        return through_cli(task, args.count, args.budget)
    smc = SequentialMonteCarlo(FCN(784, (32,)), prior, task.train, args.particles, refresh=args.refresh)
    start = time.perf_counter()
    result = sample(smc, gen, args.particles, time_limit=args.budget, progress=False)
    seconds = time.perf_counter() - start
    for info in result.history:
        if info.seen % 32 == 0 or info.seen == 1:
            print(
                f"n={info.seen:>4} survival={info.survival:.3f} unique={info.unique} "
                f"acceptance={info.move_acceptance:.3f} rounds={info.moves}",
                flush=True,
            )
    reached = result.history[-1].seen if result.history else 0
    log_prob = sum(torch.log(torch.tensor(i.survival, dtype=torch.float64)).item() for i in result.history)
    print(
        f"reached n={reached} of {args.n} in {seconds:.0f} s ({result.stop_reason}); "
        f"ln P(L_S = 0) over those examples = {log_prob:.1f}; {result.count} samples"
    )
    if result.count:
        errors = result.population.errors(task.test.x, task.test.y).float()
        print(f"samples' test error: mean {errors.mean():.3f}, min {errors.min():.3f}, max {errors.max():.3f}")


def through_cli(task, count: int, budget: float) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        train, test, out = Path(scratch, "train.npz"), Path(scratch, "test.npz"), Path(scratch, "out")
        task.train.save_npz(train)
        task.test.save_npz(test)
        command = [sys.executable, "-m", "typicalnets.cli", "sample", "--train", str(train), "--test", str(test)]
        command += ["--arch", "fcn", "--widths", "32", "--prior", "quantized:3", "--sampler", "smc"]
        command += ["--count", str(count), "--time-limit", str(budget), "--out", str(out), "--no-progress"]
        print(" ".join(["typicalnets", *command[3:]]).replace(scratch, "DIR"))
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        seconds = time.perf_counter() - start
        summary = json.loads((out / "summary.json").read_text())
    print(
        f"n = {task.train.n}: {summary['count']} samples in {seconds:.1f} s ({summary['stop_reason']}); "
        f"ln P(L_S = 0) = {summary['log_prob_interpolate']}; runs {summary['repeats']} x "
        f"{summary['particles']} particles; examples reached by the stopped run: "
        f"{summary.get('examples_reached')}, ln P of those {summary.get('log_prob_reached')}"
    )


if __name__ == "__main__":
    main()
