"""How far Guess & Check reaches on the SMC reach task in a time budget.

    python benchmarks/gc_reach.py [--budget 600] [--probe 60]

Task (issue 4's reach goal): 784-dimensional Gaussian inputs labelled by a narrow FCN teacher of
width 2; student FCN 784-32-1; weights uniform over {-1, 0, 1}. For each n, G&C (fast engine) runs
for --probe seconds; the measured draw rate and acceptance rate give the expected time to 100
samples, 100 / (acceptance rate x draws per second). G&C "reaches" n when that is within --budget.
Where nothing was accepted, the 95% upper bound on the acceptance rate gives a lower bound on the time.
"""

from __future__ import annotations

import argparse

import torch

from typicalnets.nets import FCN
from typicalnets.priors import QuantizedUniform
from typicalnets.samplers import GuessAndCheck, sample
from typicalnets.teachers import make_task, narrow_teacher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", default="8,12,16,20,24,28,32")
    parser.add_argument("--budget", type=float, default=600.0, help="seconds allowed for 100 samples")
    parser.add_argument("--probe", type=float, default=60.0, help="seconds of G&C per n")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    prior = QuantizedUniform.evenly_spaced(3)
    gen = torch.Generator().manual_seed(args.seed)
    teacher = narrow_teacher(FCN(784, (2,)), prior, gen)
    sizes = [int(v) for v in args.n.split(",")]
    task = make_task(teacher, max(sizes), 100, gen)
    print(
        f"{'n':>3} {'draws':>12} {'accepted':>9} {'draws/s':>10} {'rate':>10} {'s per 100 samples':>18} {'reached':>8}"
    )
    for n in sizes:
        result = sample(
            GuessAndCheck(FCN(784, (32,)), prior, task.train.head(n), batch_size=1 << 16),
            gen,
            100,
            time_limit=args.probe,
            progress=False,
        )
        speed = result.draws / result.seconds
        rate = result.acceptance_rate if result.accepted_total else result.acceptance_ci[1]
        seconds = 100 / (rate * speed)
        bound = "" if result.accepted_total else ">="
        print(
            f"{n:>3} {result.draws:>12,} {result.accepted_total:>9} {speed:>10,.0f} {rate:>10.3g} "
            f"{bound + format(seconds, ',.0f'):>18} {str(seconds <= args.budget and bool(result.accepted_total)):>8}",
            flush=True,
        )


if __name__ == "__main__":
    main()
