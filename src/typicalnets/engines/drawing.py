"""Drawing networks for the engines: one large random call per batch, and mirrored pairs.

``draw_batch`` draws a population with one ``Prior.draw_flat`` call. Mirrored pairs: network 2i + 1
is network 2i with its head mirrored (``mirror_heads``), a draw from the prior too where
``can_mirror`` says so, whose output is exactly -f; ``samplers.gc`` explains why the accepted
networks stay i.i.d. from the posterior.
"""

from __future__ import annotations

import math

import torch

from typicalnets.nets import Architecture, Population
from typicalnets.priors import Prior


def draw_batch(
    arch: Architecture,
    prior: Prior,
    size: int,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
    mirror: bool = False,
) -> Population:
    """Draw ``size`` networks i.i.d. from ``prior`` with few, large random-number calls.

    All parameters come from one ``Prior.draw_flat`` call (raw random bits for quantized priors,
    one flat draw for uniform and Gaussian ones). The result is a different random stream from
    ``Population.draw`` but the same distribution. With ``mirror`` (``size`` even; see
    ``can_mirror``), networks 2i and 2i + 1 are a mirrored pair: 2i + 1 is 2i with its head
    mirrored (``mirror_heads``).
    """
    if mirror:
        base = draw_batch(arch, prior, size // 2, generator, dtype)
        twins = mirror_heads(arch, base.params)
        params = {k: torch.stack([v, twins[k]], 1).flatten(0, 1) for k, v in base.params.items()}
        return Population(arch, prior, params)
    shapes = arch.param_shapes()
    counts = [math.prod(s) for s in shapes.values()]
    flat = prior.draw_flat(size * sum(counts), generator, dtype)
    params, start = {}, 0
    for (name, shape), count in zip(shapes.items(), counts):
        params[name] = flat[start : start + size * count].view(size, *shape)
        start += size * count
    return Population(arch, prior, params)


def can_mirror(arch: Architecture, prior: Prior) -> bool:
    """Whether mirroring a network's head maps the prior onto itself, so that a draw's mirror is a
    draw too: always for two logits (a swap), and for a scalar head (a negation) when the prior is
    symmetric about 0."""
    return arch.head_swaps() or prior.symmetric


def mirror_heads(arch: Architecture, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``params`` with each network's head mirrored: the two logits swapped, or a scalar head
    negated. The mirror's output is exactly -f (f = z_1 - z_0 for two logits), since IEEE
    rounding is symmetric, so it gets every training example the other way round."""
    mirrored = dict(params)
    for name in arch.head_names():
        mirrored[name] = params[name].flip(1) if arch.head_swaps() else -params[name]
    return mirrored
