"""The exactness certificate: when a network counts as interpolating, decided the same way by every
engine and sampler, and the float32 range inside which that decision is proven.

Ties and rounding: fp32 arithmetic in any order can misjudge the sign of an output within rounding error
of 0, and quantized networks often compute exact ties (two identical hidden units cancelling), where
rounding decides the sign. So the final verdict on every candidate comes from
``certified_interpolates``: an fp32 forward that also computes each output's scale
(sum of |w_i h_i| + |b| over the head) decides every output farther than ``margin`` (1e-4) of its
scale from 0 -- fp32 rounding is ~1e-6 of it -- and the few networks with an output closer than
that are recomputed in float64, where |f| <= 1e-9 x scale counts as f = 0, a mistake (float64
rounding is ~1e-16 x scale, so only exact ties and outputs within 1e-9 of one land there).
The fast engines send every network they accept, and every one with an fp32 output within the
margin, to that check; the baseline engine sends its fp32-accepted networks. So both engines
return the same accepted set for the same draws, unless the straightforward fp32 forward itself
misjudges an output by more than 1e-4 of its scale.

Overflow: ``check_float32_range`` bounds every pre-activation of every network the prior can draw,
|z| <= B, by propagating B_0 = max |x| through the layers as B <- fan_in * w_max * B + w_max
(capped at 1 after tanh and sign, times w_max after a scale; w_max is the prior's largest |level|,
its half-width a, or 10 sigma for a Gaussian). A configuration with B > FLOAT32_MAX * 2^-8 is
refused before any work. Below it, no fp32 sum can overflow in any order: every partial sum of a
layer is at most (1 + 2^-24)^k times the sum of its terms' absolute values (k terms), which is at
most B, and (1 + 2^-24)^k stays far below 2^8 for any k a machine can hold; so every engine
computes finite outputs and the engines' verdicts agree. Gaussian weights beyond 10 sigma
(probability < 2e-23 each) escape that proof, so ``certified_interpolates`` also requires every
fp32 output and scale to be finite: a network whose output is not finite is never accepted, on
any engine.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from typicalnets.errors import TypicalnetsError
from typicalnets.nets import Architecture, Population
from typicalnets.nets.base import ACTIVATIONS, Conv, Dense, Head, Product
from typicalnets.priors import Prior

DEFAULT_MARGIN = 1e-4
FLOAT32_MAX = float(np.finfo(np.float32).max)
OVERFLOW_HEADROOM = 2.0**-8  # refuse worst cases within 2^8 of fp32's largest value (see above)
TIE = 1e-9  # |f| <= TIE * scale in float64 counts as f = 0 (an exact tie up to float64 rounding)
SATURATING = ("tanh", "sign")  # activations whose outputs stay within [-1, 1]


def activation_bound(arch: Architecture, prior: Prior, input_bound: float) -> float:
    """An upper bound on |z| over every pre-activation and output of every network the prior can
    draw, for inputs with |x| <= ``input_bound`` (see the module docstring); computed in Python
    floats, so it is inf when it exceeds float64's range."""
    w_max = prior.weight_bound()
    h, worst = input_bound, input_bound
    for layer in arch.layer_plan():
        if isinstance(layer, Product):  # beta_i = prod_l w_l,i, then f = sum_i beta_i x_i
            return max(w_max ** len(layer.weights), 1.0) * max(1.0, math.prod(arch.input_shape) * input_bound)
        z = arch.fan_in(layer.weight) * w_max * h + (w_max if layer.bias else 0.0)
        if isinstance(layer, Head):
            return max(worst, 2.0 * z)  # two logits: f = z_1 - z_0
        worst = max(worst, z)
        h = min(z, 1.0) if layer.activation in SATURATING else z
        if layer.scale is not None:
            h *= w_max
            worst = max(worst, h)
    return worst


def check_float32_range(arch: Architecture, prior: Prior, x: torch.Tensor) -> None:
    """Refuse inputs and priors for which some network the prior can draw could overflow fp32."""
    input_bound = float(x.abs().max()) if x.numel() else 0.0
    bound = activation_bound(arch, prior, input_bound)
    if bound > FLOAT32_MAX * OVERFLOW_HEADROOM:
        raise TypicalnetsError(
            f"with inputs up to |x| = {input_bound:.3g} and weights up to {prior.weight_bound():.3g} "
            f"({prior.spec()}), a {arch.describe()} network can compute values up to {bound:.3g}, beyond "
            f"float32's range ({FLOAT32_MAX:.3g}); rescale the inputs or the prior's levels, or use fewer or "
            "narrower layers"
        )


def forward_with_scale(
    arch: Architecture, params: dict[str, torch.Tensor], x: torch.Tensor, grouped: bool | None = None
):
    """Outputs f (A, n) and their scales sum |w_i h_i| + |b| over the head.

    Conv layers after the first run as grouped convolutions (one group per network) on the CPU,
    where that measured 2-3x faster than im2col + one batched matmul, and as the latter on GPUs,
    where it measured 10% faster on an H200 (``benchmarks/gc_throughput.py --ablations``);
    ``grouped`` overrides.
    """
    count, n = next(iter(params.values())).shape[0], x.shape[0]
    h = plan_input(x, next(iter(params.values())).dtype)
    return run_layers(arch, params, h, 0, None, count, n, grouped)


def plan_input(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The inputs as the first layer takes them, shared by every network (1-D convs run as 2-D
    convs of height 1)."""
    h = x.to(dtype)
    return h.unsqueeze(2) if h.ndim == 3 else h


def run_layers(
    arch: Architecture,
    params: dict[str, torch.Tensor],
    h: torch.Tensor,
    start: int,
    stop: int | None,
    count: int,
    n: int,
    grouped: bool | None = None,
):
    """Layers ``start``..``stop - 1`` of the plan on ``h``, the input of layer ``start`` (from
    ``plan_input`` when start = 0, else per network as the layer before left it): the input of
    layer ``stop``, or (f, scale) once the head is reached (``stop`` None: run to the head)."""
    grouped = h.device.type == "cpu" if grouped is None else grouped
    plan = arch.layer_plan()
    for index in range(start, len(plan) if stop is None else stop):
        layer = plan[index]
        if isinstance(layer, Product):  # beta_i = prod_l w_l,i, then f = sum_i beta_i x_i
            beta = params[layer.weights[0]]
            for name in layer.weights[1:]:
                beta = beta * params[name]
            return beta @ h.T, beta.abs() @ h.abs().T
        if isinstance(layer, Head):
            return _head(features(h, count, n), params[layer.weight], params[layer.bias] if layer.bias else None)
        z = pre_activation(layer, params, h, count, n, index == 0, grouped)
        h = post_activation(layer, params, z, count, n)
    if stop is None:
        raise ValueError(f"the layer plan of {arch.describe()} does not end in a head")
    return h


def features(h: torch.Tensor, count: int, n: int) -> torch.Tensor:
    """A dense layer's input (A, n, k): conv maps (A * n, c, H, W) flattened channel-major."""
    return h.reshape(count, n, -1) if h.ndim == 4 else h


def pre_activation(layer: Conv | Dense, params, h: torch.Tensor, count: int, n: int, shared: bool, grouped: bool):
    """A hidden layer's pre-activations, linear in its (weight, bias) jointly: (A, n, k) for a dense
    layer, (A, c_out, n, H, W) for a conv; ``shared``: ``h`` is one input for every network."""
    if isinstance(layer, Conv):
        return _conv_pre(layer, params, h, count, n, shared, grouped)
    h = features(h, count, n)
    w = params[layer.weight]
    if shared:  # one GEMM for the whole population: (n, d) @ (d, A * k)
        z = (h @ w.reshape(-1, w.shape[-1]).T).view(h.shape[0], count, -1).transpose(0, 1)
        return z + params[layer.bias].unsqueeze(1) if layer.bias else z
    if layer.bias:
        return torch.baddbmm(params[layer.bias].unsqueeze(1), h, w.transpose(1, 2))
    return torch.bmm(h, w.transpose(1, 2))


def post_activation(layer: Conv | Dense, params, z: torch.Tensor, count: int, n: int) -> torch.Tensor:
    """Activation, then (convs) max-pool, then the per-unit or per-channel scale: the next layer's input."""
    h = ACTIVATIONS[layer.activation](z)
    if isinstance(layer, Dense):
        return h * params[layer.scale].unsqueeze(1) if layer.scale else h
    c_out, height, width = z.shape[1], z.shape[3], z.shape[4]
    h = h.transpose(1, 2).reshape(count * n, c_out, height, width)
    if layer.pool != (1, 1):
        h = _max_pool(h, layer.pool)
    if layer.scale:
        h = h * params[layer.scale].repeat_interleave(n, 0).view(count * n, c_out, 1, 1)
    return h


def certified_interpolates(
    population: Population, x: torch.Tensor, y: torch.Tensor, margin: float = DEFAULT_MARGIN, chunk: int = 256
) -> torch.Tensor:
    """Zero training error, certified: the fp32 forward decides every output farther than ``margin``
    times its scale from 0; networks with an output closer than that are recomputed in float64,
    where |f| <= TIE * scale counts as f = 0 (a mistake). A network with a non-finite fp32 output
    or scale on any example is rejected (see the module docstring on overflow)."""
    x, y = x.to(population.device), y.to(population.device)
    verdicts = []
    for start in range(0, len(population), chunk):
        params = {k: v[start : start + chunk] for k, v in population.params.items()}
        f, scale = forward_with_scale(population.arch, {k: v.float() for k, v in params.items()}, x.float())
        correct = y * f > 0
        sure = f.abs() > margin * scale
        # No sure mistake, and finite in fp32: an output that overflowed is never accepted.
        verdict = (correct | ~sure).all(dim=1) & (torch.isfinite(f) & torch.isfinite(scale)).all(dim=1)
        doubtful = torch.nonzero(verdict & ~sure.all(dim=1)).flatten()
        if doubtful.numel():
            f64, scale64 = forward_with_scale(
                population.arch, {k: v[doubtful].double() for k, v in params.items()}, x.double()
            )
            verdict[doubtful] = (y.double() * f64 > TIE * scale64).all(dim=1)
        verdicts.append(verdict)
    return torch.cat(verdicts) if verdicts else torch.zeros(0, dtype=torch.bool, device=population.device)


def _head(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Scalar output f (two logits: z_1 - z_0) and its scale sum |w||h| + |b| for h (A, n, k), w (A, o, k)."""
    z = torch.matmul(h, w.transpose(1, 2))
    scale = torch.matmul(h.abs(), w.abs().sum(1, keepdim=True).transpose(1, 2))[..., 0]
    if b is not None:
        z = z + b.unsqueeze(1)
        scale = scale + b.abs().sum(1, keepdim=True)
    f = z[..., 1] - z[..., 0] if z.shape[-1] == 2 else z[..., 0]
    return f, scale


def _max_pool(h: torch.Tensor, pools: tuple[int, int]) -> torch.Tensor:
    """Max-pool with kernel = stride (floor) as elementwise maxima of strided views: the same values
    as F.max_pool2d, which measured several times slower on the CPU for many small maps."""
    ph, pw = h.shape[2] // pools[0], h.shape[3] // pools[1]
    views = [
        h[:, :, dy : dy + ph * pools[0] : pools[0], dx : dx + pw * pools[1] : pools[1]]
        for dy in range(pools[0])
        for dx in range(pools[1])
    ]
    out = views[0]
    for view in views[1:]:
        out = torch.maximum(out, view)
    return out


def _im2col(h: torch.Tensor, kernel: tuple[int, int], strides: tuple[int, int]) -> torch.Tensor:
    """(rows, c, H, W) -> (rows, c * kh * kw, positions) by one strided copy (F.unfold launches a
    kernel per image on CUDA, which measured 30x slower for large populations)."""
    windows = h.unfold(2, kernel[0], strides[0]).unfold(3, kernel[1], strides[1])  # (rows, c, Ho, Wo, kh, kw)
    rows, channels, out_h, out_w = windows.shape[:4]
    return windows.permute(0, 1, 4, 5, 2, 3).reshape(rows, channels * kernel[0] * kernel[1], out_h * out_w)


def _conv_pre(layer: Conv, params, h, count: int, n: int, shared: bool, grouped: bool) -> torch.Tensor:
    """A conv layer's pre-activations (A, c_out, n, H, W) on h (n, c, H, W) shared by all networks,
    or (A * n, c, H, W) per network."""
    w = params[layer.weight]
    c_out = w.shape[1]
    height = (h.shape[2] - layer.kernel[0]) // layer.stride[0] + 1
    width = (h.shape[3] - layer.kernel[1]) // layer.stride[1] + 1
    w_flat = w.reshape(count, c_out, -1)
    if shared:  # one GEMM (A * c_out, c_in * taps) @ (c_in * taps, n * positions)
        patches = _im2col(h, layer.kernel, layer.stride)  # (n, c_in * taps, positions)
        z = w_flat.reshape(count * c_out, -1) @ patches.transpose(0, 1).reshape(patches.shape[1], -1)
    elif grouped:
        z = F.conv2d(
            h.view(count, n, -1, *h.shape[2:]).transpose(0, 1).reshape(n, -1, *h.shape[2:]),
            w.reshape(count * c_out, -1, *layer.kernel),
            stride=layer.stride,
            groups=count,
        )
        z = z.view(n, count, c_out, -1).permute(1, 2, 0, 3)
    else:  # one batched matmul over networks, no grouped convolution
        patches = _im2col(h, layer.kernel, layer.stride)
        taps = patches.shape[1]
        cols = patches.view(count, n, taps, -1).transpose(1, 2).reshape(count, taps, -1)
        z = torch.bmm(w_flat, cols)
    z = z.view(count, c_out, n, height, width)
    return z + params[layer.bias].view(count, c_out, 1, 1, 1) if layer.bias else z
