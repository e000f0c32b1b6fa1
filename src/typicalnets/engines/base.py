"""The protocol every Guess & Check engine follows, and what the two compiled-kernel engines share.

An engine guesses a batch of networks from the prior and checks them: ``run(rng, batch)`` returns
an ``EngineStep`` with the certified interpolators of the batch (in draw order), the draws it
used and the work it did. ``batch_size`` and ``next_batch`` let an engine bound its batches (by
memory, or by FLOPs per step so that time budgets are checked often) and grow them while nothing
is accepted. Every engine's accepted networks pass ``certificate.certified_interpolates``, so all
engines make the same accept decision.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import numpy as np
import torch

from typicalnets.certificate import certified_interpolates
from typicalnets.nets import Architecture, Population

# Parameters held per drawn batch, which caps the batch for big nets: 256 MB of fp32 on the CPU
# (host memory stays well under 2 GB), 4 GB on a GPU.
PARAM_BUDGET = {"cpu": 1 << 26, "cuda": 1 << 30}
KERNEL_MAX_BATCH = 1 << 20  # draws per kernel step at most (a 1 MB verdict array)
# Parameters of the candidates (accepted or borderline draws) one kernel step materializes at most:
# 1 GiB of fp32, so that a large network accepted often cannot exhaust memory within one step.
KERNEL_CANDIDATE_FLOATS = 1 << 28
# Forward FLOPs per kernel step at most (~0.5 s on 2 cores; on a GPU, well under a second at a few %
# of its peak), so that time budgets are checked often; counted from the forwards evaluated, so the
# batch sizes, and with them the draws, stay the same on every machine of a kind.
KERNEL_STEP_FLOPS = {"cpu": 3e10, "cuda": 3e12}


class EngineStep(NamedTuple):
    accepted: Population  # the certified interpolators of the batch, in draw order
    draws: int  # draws the step used (a kernel engine may stop early, at a stopping time)
    evaluated: int  # (network, example) forwards evaluated
    rechecked: int  # networks sent to the full-precision certificate


class Engine(Protocol):
    name: str  # "baseline", "torch" or "native", as summaries record it
    draws_per_trial: int  # 2 where networks come in mirrored pairs, else 1

    def batch_size(self, requested: int) -> int: ...

    def run(self, rng: torch.Generator, batch: int) -> EngineStep: ...

    def next_batch(self, size: int, accepted: int, evaluated: int) -> int: ...


def held_networks(arch: Architecture, device: torch.device | str) -> int:
    """Networks whose parameters fit PARAM_BUDGET on ``device``."""
    return max(1, PARAM_BUDGET.get(torch.device(device).type, PARAM_BUDGET["cpu"]) // arch.num_params())


class KernelEngine:
    """What the CPU and CUDA kernel engines share: each network ``id`` of a stream ``key`` is
    regenerable (``draw``), so ``check`` returns only verdicts (1 accepted, 0 rejected, 2 uncertain)
    and only the candidates are ever materialized. Subclasses set ``arch``, ``prior``, ``mirror``,
    ``certify_x``, ``certify_y`` (the training set as tensors on the engine's device) and ``device``."""

    name = "native"

    @property
    def draws_per_trial(self) -> int:
        """Draws per independent trial: 2 with mirrored pairs, else 1."""
        return 2 if self.mirror else 1

    def batch_size(self, requested: int) -> int:
        """One verdict byte per draw, and (at least) one example's forward each, within a step's FLOP cap."""
        most = KERNEL_STEP_FLOPS[self.device.type] // self.arch.flops_per_example()
        return max(2, min(requested, KERNEL_MAX_BATCH, int(most)))

    def run(self, rng: torch.Generator, batch: int) -> EngineStep:
        unit = self.draws_per_trial
        # 1. Guess: network i of this batch is network i of a fresh random stream.
        key = int(torch.randint(0, 2**63 - 1, (1,), generator=rng))
        # 2. Check in the kernel, each network stopping at its first mistake.
        status, evaluated = self.check(key, batch)
        # 3. Re-check the accepted and borderline networks in float64, a bounded chunk at a time.
        candidates = np.asarray(status).nonzero()[0]
        most = max(unit, KERNEL_CANDIDATE_FLOATS // self.arch.num_params())
        if len(candidates) > most:
            # Keep only the draws before the (most + 1)-th candidate: a stopping time, so the
            # accepted networks stay i.i.d. posterior draws, and a step's memory stays bounded.
            batch = int(candidates[most]) // unit * unit
            candidates = candidates[candidates < batch]
        held = held_networks(self.arch, self.device)
        kept = []
        for begin in range(0, len(candidates), held):
            chunk = self.draw(key, candidates[begin : begin + held])
            kept.append(chunk[certified_interpolates(chunk, self.certify_x, self.certify_y)])
        accepted = Population.concat(kept) if kept else Population.empty(self.arch, self.prior, device=self.device)
        return EngineStep(accepted, batch, int(evaluated), len(candidates))

    def next_batch(self, size: int, accepted: int, evaluated: int) -> int:
        """Kernel engines hold no parameters: after a step that accepts nothing the batch doubles, so
        that the per-step overhead (~1 ms) stays small when acceptance is rare, within the FLOP cap."""
        flops = 2 * evaluated * self.arch.flops_per_example()
        return (
            min(KERNEL_MAX_BATCH, 2 * size) if accepted == 0 and flops <= KERNEL_STEP_FLOPS[self.device.type] else size
        )
