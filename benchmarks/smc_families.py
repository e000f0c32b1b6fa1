"""SMC against Guess & Check for every family x prior (issue 14, point 4): the ln P(L_S = 0)
intervals must overlap and a two-sample KS test of the samples' test errors, at the SMC samples'
effective number (``smc_validation.compare``), must give p > 0.01.

    python benchmarks/smc_families.py                # the table (benchmarks/results/smc_families_cpu.txt)
    python benchmarks/smc_families.py --json         # one JSON object per line

Each task: Gaussian inputs of the family's shape labelled by a random network of the family
drawn from the prior under test, with 2 of the n training labels flipped (none for the linear diagonal net,
which could not interpolate them), so that G&C accepts between ~1/20 and ~1/2000 of its draws.
G&C draws --count interpolators; SMC makes --repeats runs of --particles particles with its
other settings at their defaults. Test errors are against the clean labels of 2,000 test inputs.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from smc_validation import compare, comparison_line

from typicalnets.data import Dataset
from typicalnets.nets import CNN, FCN, DiagonalLinear, LeNet, Population
from typicalnets.priors import Gaussian, QuantizedUniform, Uniform
from typicalnets.samplers import GuessAndCheck, SequentialMonteCarlo, sample, sample_smc

FAMILIES = {
    "fcn": (FCN(4, (8,)), 10),
    "sfcn": (FCN(4, (6, 4), scaled=True), 10),
    "cnn": (CNN((1, 10), (3,), kernel_size=3, pool=2), 10),
    "scnn": (CNN((1, 10), (3,), kernel_size=3, pool=2, scaled=True), 10),
    "lenet": (LeNet.with_width_factor(0.25, (1, 16, 16)), 8),
    "diag": (DiagonalLinear(6, depth=2), 16),
}
PRIORS = {"quantized:3": QuantizedUniform.evenly_spaced(3), "uniform:1": Uniform(1.0), "gaussian:1": Gaussian(1.0)}


def task(arch, prior, n: int, gen: torch.Generator) -> tuple[Dataset, Dataset]:
    teacher = Population.draw(arch, prior, 1, gen).to(dtype=torch.float64)
    x = torch.randn(n + 2000, *arch.input_shape, generator=gen)
    y = torch.where(teacher.forward(x.double())[0] > 0, 1, -1).to(torch.int8)
    train_y = y[:n].clone()
    if not isinstance(arch, DiagonalLinear):
        train_y[:2] *= -1
    return Dataset(x[:n], train_y), Dataset(x[n:], y[n:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--priors", default=",".join(PRIORS))
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--particles", type=int, default=250)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not args.json:
        print(
            f"{'family':>6} {'prior':>12} {'n':>3} {'G&C ln P (95% CI)':>26} {'SMC ln P (95% CI)':>26} "
            f"{'overlap':>7} {'KS p':>6} {'KS eff':>6} {'SMC ne':>6} {'G&C s':>6} {'SMC s':>6}"
        )
    failures = 0
    for family in args.families.split(","):
        arch, n = FAMILIES[family]
        for prior_name in args.priors.split(","):
            prior = PRIORS[prior_name]
            gen = torch.Generator().manual_seed(args.seed)
            train, test = task(arch, prior, n, gen)
            gc = sample(GuessAndCheck(arch, prior, train), gen, args.count, max_draws=10**9, progress=False)
            smc = sample_smc(
                SequentialMonteCarlo(arch, prior, train, args.particles),
                gen,
                args.count,
                args.repeats,
                progress=False,
            )
            row = {"family": family, "prior": prior_name, "n": n} | compare(gc, smc, test, args.repeats)
            failures += (not row["overlap"]) + (row["ks_p_eff"] <= 0.01)
            line = f"{family:>6} {prior_name:>12} {n:>3} {comparison_line(row)}"
            print(json.dumps(row) if args.json else line, flush=True)
    print(f"{failures} failed check(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
