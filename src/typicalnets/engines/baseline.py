"""The baseline engine: the straightforward method, for reference and where it is fastest.

One full fp32 batched forward of every drawn network on every training example (grouped
convolutions for conv nets); the networks without a mistake are re-checked by the certificate.
"""

from __future__ import annotations

import torch

from typicalnets.certificate import certified_interpolates
from typicalnets.data import Dataset
from typicalnets.engines.base import EngineStep, held_networks
from typicalnets.nets import Architecture, Population
from typicalnets.nets.population import DEFAULT_CHUNK
from typicalnets.priors import Prior


class BaselineEngine:
    name = "baseline"
    draws_per_trial = 1

    def __init__(self, arch: Architecture, prior: Prior, train: Dataset, device: torch.device | str = "cpu"):
        self.arch, self.prior = arch, prior
        self.x, self.y = train.x.to(device), train.y.to(device)
        self.held = held_networks(arch, device)

    def batch_size(self, requested: int) -> int:
        return min(requested, self.held)

    def run(self, rng: torch.Generator, batch: int) -> EngineStep:
        # 1. Guess: draw a batch of networks i.i.d. from the prior.
        guesses = Population.draw(self.arch, self.prior, batch, rng, device=self.x.device)
        # 2. Check: count each network's training mistakes in one batched fp32 forward.
        chunk = batch if self.x.device.type == "cuda" else DEFAULT_CHUNK
        keep = guesses.mistakes(self.x, self.y, chunk) == 0
        # 3. Re-check the accepted networks in float64.
        candidates = keep.nonzero().flatten()
        keep[candidates[~certified_interpolates(guesses[candidates], self.x, self.y)]] = False
        return EngineStep(guesses[keep], batch, batch * self.x.shape[0], candidates.numel())

    def next_batch(self, size: int, accepted: int, evaluated: int) -> int:
        return size
