"""Guess & Check: exact rejection sampling of typical interpolators.

Draw networks i.i.d. from the prior and keep those with zero training error (f = 0 is a mistake).
Each kept network is an exact draw from the prior conditioned on L_S = 0. References: Chiang et
al., "Loss landscapes are all you need: neural network generalization can be explained without
the implicit bias of gradient descent", ICLR 2023; Buzaglo et al., "How uniform random weights
induce non-uniform bias: typical interpolating neural networks generalize with narrow teachers",
ICML 2024.

This is the straightforward method: one full-precision batched forward of every drawn network on
every training example.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from typicalnets.data import Dataset
from typicalnets.nets import Architecture, Population
from typicalnets.priors import Prior

DEFAULT_BATCH = 16_384


class GCState(NamedTuple):
    accepted: Population  # accepted networks so far, in draw order
    draws: int  # networks drawn from the prior so far


class GCInfo(NamedTuple):
    draws: int  # drawn in this step
    accepted: int  # accepted in this step


class GuessAndCheck:
    name = "gc"

    def __init__(self, arch: Architecture, prior: Prior, train: Dataset, batch_size: int = DEFAULT_BATCH,
                 device: torch.device | str = "cpu"):
        arch.check_input(train.x)
        self.arch, self.prior, self.batch_size = arch, prior, int(batch_size)
        self.x = train.x.to(device)
        self.y = train.y.to(device)

    def init(self) -> GCState:
        return GCState(Population.empty(self.arch, self.prior, device=self.x.device), 0)

    def step(self, rng: torch.Generator, state: GCState, max_draws: int | None = None) -> tuple[GCState, GCInfo]:
        batch = self.batch_size if max_draws is None else max(1, min(self.batch_size, max_draws))
        # 1. Guess: draw a batch of networks i.i.d. from the prior.
        guesses = Population.draw(self.arch, self.prior, batch, rng, device=self.x.device)
        # 2. Check: count each network's training mistakes in one batched forward.
        keep = guesses.mistakes(self.x, self.y) == 0
        # 3. Keep the interpolators, in draw order.
        accepted = Population.concat([state.accepted, guesses[keep]])
        return GCState(accepted, state.draws + batch), GCInfo(batch, int(keep.sum()))
