"""Drawing networks for the engines: one large random call per batch, and mirrored pairs.

``draw_batch`` draws a population from raw random bits (quantized priors) or one flat draw
(uniform, Gaussian). Mirrored pairs: network 2i + 1 is network 2i with its head mirrored
(``mirror_heads``), a draw from the prior too where ``can_mirror`` says so, whose output is exactly
-f; ``samplers.gc`` explains why the accepted networks stay i.i.d. from the posterior.
"""

from __future__ import annotations

import math

import torch

from typicalnets.errors import TypicalnetsError
from typicalnets.nets import Architecture, Population
from typicalnets.priors import Gaussian, Prior, QuantizedUniform, Uniform


def draw_batch(
    arch: Architecture,
    prior: Prior,
    size: int,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
    mirror: bool = False,
) -> Population:
    """Draw ``size`` networks i.i.d. from ``prior`` with few, large random-number calls.

    Quantized priors take ceil(log2 Q) raw random bits per weight (codes >= Q are rejected and
    replaced, so each weight is exactly uniform over the levels); uniform and Gaussian priors take
    one flat draw for all parameters (uniform on the odd multiples of 2^-24 a, a grid symmetric
    about 0). The result is a different random stream from ``Population.draw`` but the same
    distribution. With ``mirror`` (``size`` even; see ``can_mirror``), networks 2i and 2i + 1 are a
    mirrored pair: 2i + 1 is 2i with its head mirrored (``mirror_heads``).
    """
    if mirror:
        base = draw_batch(arch, prior, size // 2, generator, dtype)
        twins = mirror_heads(arch, base.params)
        params = {k: torch.stack([v, twins[k]], 1).flatten(0, 1) for k, v in base.params.items()}
        return Population(arch, prior, params)
    shapes = arch.param_shapes()
    counts = [math.prod(s) for s in shapes.values()]
    total = size * sum(counts)
    device = generator.device
    if isinstance(prior, QuantizedUniform):
        flat = prior.level_tensor(dtype, device)[quantized_codes(prior.q, total, generator)]
    elif isinstance(prior, Uniform):
        # 2u - 1 + 2^-24 for u on torch.rand's grid (multiples of 2^-24): exact in float32.
        flat = torch.rand(total, generator=generator, dtype=dtype, device=device).mul_(2.0).sub_(1.0)
        flat = flat.add_(2.0**-24).mul_(prior.a)
    elif isinstance(prior, Gaussian):
        flat = torch.randn(total, generator=generator, dtype=dtype, device=device).mul_(prior.sigma)
    else:
        raise TypicalnetsError(f"draw_batch does not know prior {prior!r}; use engine='baseline'")
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


def quantized_codes(q: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` i.i.d. integers uniform on {0, ..., q-1} from raw random bits (rejection of codes >= q)."""
    bits = max(1, (q - 1).bit_length())
    per_word = 62 // bits  # random_() on int64 yields 63 random bits; use whole fields of them
    shifts = torch.arange(per_word, device=generator.device, dtype=torch.int64) * bits
    out = torch.empty(count, dtype=torch.int64, device=generator.device)
    filled = 0
    while filled < count:
        need = count - filled
        words = math.ceil(need * (1 << bits) / q / per_word * 1.05) + 1  # expected acceptance q / 2^bits
        raw = torch.empty(words, dtype=torch.int64, device=generator.device).random_(generator=generator)
        codes = ((raw.unsqueeze(1) >> shifts) & ((1 << bits) - 1)).reshape(-1)
        codes = codes[codes < q][:need]
        out[filled : filled + codes.numel()] = codes
        filled += codes.numel()
    return out
