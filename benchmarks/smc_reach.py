"""How far SMC reaches on issue 4's reach task in a time budget (the counterpart of gc_reach.py).

    python benchmarks/smc_reach.py [--n 512] [--particles 128] [--budget 600]

Task: 784-dimensional Gaussian inputs labelled by a narrow FCN teacher of width 2 (the same task
and seed as gc_reach.py); student FCN 784-32-1 with weights uniform over {-1, 0, 1}. One SMC run
adds the examples one at a time until n or the time budget; it prints the diagnostics every 32
steps, then the examples reached, the seconds, ln P(L_S = 0) and the samples' test error.
"""

from __future__ import annotations

import argparse
import time

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
    args = parser.parse_args()
    torch.set_num_threads(1)  # the native moves use every core through OpenMP
    prior = QuantizedUniform.evenly_spaced(3)
    gen = torch.Generator().manual_seed(args.seed)
    teacher = narrow_teacher(FCN(784, (2,)), prior, gen)
    task = make_task(teacher, args.n, 2000, gen)
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


if __name__ == "__main__":
    main()
