"""The KS rows of smc_families.py with other SMC seeds: is a low p-value a bias or the spread of
correlated samples?

    python benchmarks/smc_ks_seeds.py [--cells scnn:quantized:3,scnn:gaussian:1,diag:gaussian:1,cnn:quantized:3]

Each cell is smc_families.py's task (seed 0). G&C draws --count interpolators; SMC makes 4 runs of
250 particles (500 samples) with each of --smc-seeds seeds. Printed per SMC seed: the mean test
error against G&C's, and compare()'s nominal and effective-number KS p-values.
"""

from __future__ import annotations

import argparse

import torch
from smc_families import FAMILIES, PRIORS, task
from smc_validation import compare

from typicalnets.samplers import GuessAndCheck, SequentialMonteCarlo, sample, sample_smc

RUNS, PARTICLES, SAMPLES = 4, 250, 500


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", default="scnn:quantized:3,scnn:gaussian:1,diag:gaussian:1,cnn:quantized:3")
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--smc-seeds", default="100,101,102")
    args = parser.parse_args()
    for cell in args.cells.split(","):
        family, prior_name = cell.split(":", 1)
        arch, n = FAMILIES[family]
        prior = PRIORS[prior_name]
        gen = torch.Generator().manual_seed(0)
        train, test = task(arch, prior, n, gen)
        gc = sample(GuessAndCheck(arch, prior, train), gen, args.count, max_draws=10**10, progress=False)
        gc_error = gc.population.errors(test.x, test.y).double()
        print(f"{family} {prior_name}: G&C mean test error {gc_error.mean():.4f} (sd {gc_error.std():.4f})")
        sampler = SequentialMonteCarlo(arch, prior, train, PARTICLES)  # its runs share nothing but settings
        for seed in (int(s) for s in args.smc_seeds.split(",")):
            smc = sample_smc(sampler, torch.Generator().manual_seed(seed), SAMPLES, RUNS, progress=False)
            row = compare(gc, smc, test, RUNS)
            print(
                f"  SMC seed {seed}: mean {row['smc_mean_error']:.4f}, KS p nominal {row['ks_p']:.4f}, "
                f"effective {row['ks_p_eff']:.4f} ({row['smc_effective']:.0f} of {SAMPLES} samples), "
                f"ln P {row['smc_log_prob']:.3f} vs G&C {row['gc_log_prob']:.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
