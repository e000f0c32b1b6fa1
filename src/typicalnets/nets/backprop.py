"""Gradients of many networks at once, from their layer plan, without autograd.

SGD trains a population of M networks. Autograd through the families' own forwards (grouped
convolutions, one group per network) measured 2-3x slower than the forward itself on the CPU, so
training runs this instead: ``forward`` walks ``arch.layer_plan()`` with one GEMM for the first
layer across the population (it sees the shared input) and one batched matmul per later layer
(im2col for convolutions), and keeps what the gradient needs; ``backward`` turns dL/df into the
gradient of every parameter from what it kept. Keeping the forward lets SGD use the forward of its
zero-training-error check for the next step's gradient: one forward and one backward per step.

Layouts: convolution activations are (M, channels, n, height, width), so that a layer's im2col
columns (M, c_in * kh * kw, n * positions) feed a batched matmul without a transpose; dense
activations are (M, n, features), features of a conv map channel-major as in the families'
forwards. A 1-D convolution runs as a 2-D one of height 1. Max-pooling is taken before the
activation: every activation is non-decreasing, so max(s(a), s(b)) = s(max(a, b)) and the values
are the same, at a quarter of the activations' cost for 2x2 pools.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

from typicalnets.nets.base import ACTIVATIONS, LEAKY_RELU_SLOPE, Architecture, Conv, Dense, Head, Product

# ds/dz of each differentiable activation, from its input z.
SLOPES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": lambda z: (z > 0).to(z.dtype),
    "leaky-relu": lambda z: torch.full_like(z, LEAKY_RELU_SLOPE).masked_fill_(z > 0, 1.0),
    "tanh": lambda z: 1.0 - torch.tanh(z) ** 2,
}


class Saved(NamedTuple):
    """What ``backward`` needs of one ``forward``: the first layer's input, shared by every network
    (x as (n, d), or its im2col columns (1, c * kh * kw, n, Ho, Wo)), and per layer its tensors, each
    with the networks first: a conv layer's (columns of its input or None for the first layer,
    pooled pre-activations (M, c, n, Hp, Wp), and where each pooling window's maximum is: per window
    position after the first, (M, c, n, Hp, Wp) bools, or None without a pool), a dense
    layer's (input or None, pre-activations (M, n, k)) and the head's (input or None,)."""

    inputs: torch.Tensor
    layers: tuple[tuple[torch.Tensor | None, ...], ...]

    def rows(self, networks: torch.Tensor | slice) -> Saved:
        """The same forward for the networks ``networks`` (an index, a mask or a slice) only."""
        return Saved(self.inputs, _rows(self.layers, networks))

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor it holds."""
        return [self.inputs, *_flat(self.layers)]


def _rows(kept, networks):
    if isinstance(kept, tuple):
        return tuple(_rows(t, networks) for t in kept)
    return None if kept is None else kept[networks]


def _flat(kept) -> list[torch.Tensor]:
    if isinstance(kept, tuple):
        return [t for part in kept for t in _flat(part)]
    return [] if kept is None else [kept]


def forward(arch: Architecture, params: dict[str, torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, Saved]:
    """Outputs f (M, n) of the stacked ``params`` on ``x`` (n, ...), and what ``backward`` needs."""
    count = next(iter(params.values())).shape[0]
    plan = arch.layer_plan()
    h = x.to(next(iter(params.values())).dtype)
    if isinstance(plan[0], Product):  # f = <w_1 * ... * w_L, x>
        return _product(plan[0], params) @ h.T, Saved(h, ())
    if isinstance(plan[0], Conv):
        h = (h.unsqueeze(2) if h.ndim == 3 else h).transpose(0, 1).unsqueeze(0)  # (1, c, n, H, W)
    inputs, layers = h, []
    for index, layer in enumerate(plan):
        if isinstance(layer, Conv):
            cols = _im2col(h, layer.kernel, layer.stride)
            if index == 0:
                inputs = cols
            h, saved = _conv(layer, params, cols, count)
            layers.append((None if index == 0 else cols, *saved))
            continue
        if h.ndim == 5:  # after a conv: channel-major features per (network, example)
            h = h.transpose(1, 2).reshape(count, h.shape[2], -1)
        z = _affine(layer, params, h, count)
        layers.append((None if index == 0 else h, z))
        if isinstance(layer, Head):
            return (z[..., 1] - z[..., 0] if z.shape[-1] == 2 else z[..., 0]), Saved(inputs, tuple(layers))
        h = ACTIVATIONS[layer.activation](z)
        if layer.scale:
            h = h * params[layer.scale].unsqueeze(1)
    raise ValueError(f"the layer plan of {arch.describe()} does not end in a head")


def backward(
    arch: Architecture, params: dict[str, torch.Tensor], saved: Saved, d_outputs: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The gradient of every parameter, given dL/df (M, n) at the forward that ``saved`` kept."""
    plan = arch.layer_plan()
    grads: dict[str, torch.Tensor] = {}
    if isinstance(plan[0], Product):  # d w_l = (dL/df @ x) * prod of the other layers' weights
        d_beta = d_outputs @ saved.inputs
        for name in plan[0].weights:
            others = [params[other] for other in plan[0].weights if other != name]
            grads[name] = d_beta * torch.stack(others).prod(0) if others else d_beta
        return grads
    head = plan[-1]
    width = params[head.weight].shape[1]
    d = torch.stack([-d_outputs, d_outputs], -1) if width == 2 else d_outputs.unsqueeze(-1)  # dL/dz of the head
    for index in reversed(range(len(plan))):
        layer, kept = plan[index], saved.layers[index]
        first = index == 0
        inputs = saved.inputs if first else kept[0]
        if isinstance(layer, Conv):
            d = _conv_backward(layer, params, kept, inputs, d, grads, first)
        else:
            if isinstance(layer, Dense):
                d = _through_scale(layer, params, kept[1], d, grads) * SLOPES[layer.activation](kept[1])
            d = _affine_backward(layer, params, inputs, d, grads, first)
        if first or not isinstance(plan[index - 1], Conv):
            continue
        shape = saved.layers[index - 1][1].shape  # the previous conv's output (M, c, n, Hp, Wp)
        if d.ndim == 3:  # back from channel-major features to the conv layout
            d = d.view(shape[0], shape[2], shape[1], *shape[3:]).transpose(1, 2)
        else:  # rows and columns that a strided convolution never read get no gradient
            d = F.pad(d, (0, shape[4] - d.shape[4], 0, shape[3] - d.shape[3]))
    return grads


def _product(layer: Product, params: dict[str, torch.Tensor]) -> torch.Tensor:
    beta = params[layer.weights[0]]
    for name in layer.weights[1:]:
        beta = beta * params[name]
    return beta


def _im2col(h: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int]) -> torch.Tensor:
    """(M, c, n, H, W) -> (M, c * kh * kw, n, Ho, Wo) by one strided copy."""
    windows = h.unfold(3, kernel[0], stride[0]).unfold(4, kernel[1], stride[1])  # (M, c, n, Ho, Wo, kh, kw)
    rows, channels, n, out_h, out_w = windows.shape[:5]
    return windows.permute(0, 1, 5, 6, 2, 3, 4).reshape(rows, channels * kernel[0] * kernel[1], n, out_h, out_w)


def _conv(layer: Conv, params, cols: torch.Tensor, count: int):
    """A conv layer on its input's columns: (output (M, c_out, n, Hp, Wp), (pre-activations, maxima))."""
    w = params[layer.weight]
    c_out, taps, n, out_h, out_w = w.shape[1], *cols.shape[1:]
    if cols.shape[0] == 1:  # the shared input: one GEMM (M * c_out, taps) @ (taps, n * positions)
        z = (w.reshape(count * c_out, taps) @ cols.reshape(taps, -1)).view(count, c_out, -1)
    else:
        z = torch.bmm(w.reshape(count, c_out, taps), cols.reshape(count, taps, -1))
    z = z.view(count * c_out, n, out_h, out_w)
    beats = None
    if layer.pool != (1, 1):
        z, beats = _max_pool(z, layer.pool)
        beats = tuple(beat.view(count, c_out, *beat.shape[1:]) for beat in beats)
    pre = z.reshape(count, c_out, n, *z.shape[2:])
    if layer.bias:  # after the pool, on a quarter of the values: max(a + b, c + b) = max(a, c) + b
        pre = pre + params[layer.bias].view(count, c_out, 1, 1, 1)
    h = ACTIVATIONS[layer.activation](pre)
    if layer.scale:
        h = h * params[layer.scale].view(count, c_out, 1, 1, 1)
    return h, (pre, beats)


def _affine(layer: Dense | Head, params, h: torch.Tensor, count: int) -> torch.Tensor:
    """z = h W^T + b for h (n, d) shared by every network (one GEMM) or (M, n, d)."""
    w = params[layer.weight]
    if h.ndim == 2:
        z = (h @ w.reshape(-1, w.shape[-1]).T).view(h.shape[0], count, -1).transpose(0, 1)
    else:
        z = torch.bmm(h, w.transpose(1, 2))
    return z + params[layer.bias].unsqueeze(1) if layer.bias else z


def _through_scale(layer: Conv | Dense, params, pre: torch.Tensor, d: torch.Tensor, grads) -> torch.Tensor:
    """dL/d(activation) from dL/d(output) (M, n, k) or (M, c, n, Hp, Wp) through the layer's scale, if it
    has one (recording the scale's gradient)."""
    if not layer.scale:
        return d
    scale = params[layer.scale]
    conv = d.ndim == 5
    grads[layer.scale] = (d * ACTIVATIONS[layer.activation](pre)).sum((2, 3, 4) if conv else 1)
    return d * (scale.view(*scale.shape, 1, 1, 1) if conv else scale.unsqueeze(1))


def _affine_backward(layer: Dense | Head, params, h: torch.Tensor, dz: torch.Tensor, grads, first: bool):
    """Records dW and db from dz (M, n, k) and the layer's input h; returns dL/dh (None for the first layer)."""
    w = params[layer.weight]
    if h.ndim == 2:  # shared input: one GEMM (M * k, n) @ (n, d)
        grads[layer.weight] = (dz.transpose(1, 2).reshape(-1, h.shape[0]) @ h).view(w.shape)
    else:
        grads[layer.weight] = torch.bmm(dz.transpose(1, 2), h)
    if layer.bias:
        grads[layer.bias] = dz.sum(1)
    return None if first else torch.bmm(dz, w)


def _conv_backward(layer: Conv, params, kept, cols: torch.Tensor, d: torch.Tensor, grads, first: bool):
    """Records the conv layer's gradients from dL/d(output) (M, c_out, n, Hp, Wp); returns dL/d(input)."""
    _, pre, beats = kept
    w = params[layer.weight]
    count, c_out = w.shape[:2]
    taps, n, out_h, out_w = cols.shape[1:]
    dz = _through_scale(layer, params, pre, d, grads) * SLOPES[layer.activation](pre)
    if beats is not None:
        dz = _unpool(dz.reshape(count * c_out, n, *pre.shape[3:]), beats, (count * c_out, n, out_h, out_w), layer.pool)
    dz = dz.reshape(count, c_out, -1)
    if layer.bias:
        grads[layer.bias] = dz.sum(2)
    if first:  # shared columns: one GEMM (M * c_out, n * positions) @ (n * positions, taps)
        grads[layer.weight] = (dz.reshape(count * c_out, -1) @ cols.reshape(taps, -1).T).view(w.shape)
        return None
    grads[layer.weight] = torch.bmm(dz, cols.reshape(count, taps, -1).transpose(1, 2)).view(w.shape)
    d_cols = torch.bmm(w.reshape(count, c_out, taps).transpose(1, 2), dz)
    return _col2im(d_cols.view(count, w.shape[2], *layer.kernel, n, out_h, out_w), layer.stride)


def _windows(z: torch.Tensor, pools: tuple[int, int]) -> list[torch.Tensor]:
    """The strided views of (rows, n, H, W), one per position in a pooling window (kernel = stride,
    floor), in row-major order."""
    rows, cols = z.shape[2] // pools[0] * pools[0], z.shape[3] // pools[1] * pools[1]
    return [z[:, :, dy : rows : pools[0], dx : cols : pools[1]] for dy in range(pools[0]) for dx in range(pools[1])]


def _max_pool(z: torch.Tensor, pools: tuple[int, int]) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """The max-pool of z and, per window position after the first, where it beat every earlier one.
    Elementwise maxima of strided views: F.max_pool2d measured 10x slower on the CPU for these many
    small maps."""
    views = _windows(z, pools)
    pooled, beats = views[0], []
    for view in views[1:]:
        beats.append(view > pooled)  # strictly: of tied maxima the first wins, as in torch's max_pool2d
        pooled = torch.maximum(pooled, view)
    return pooled, tuple(beats)


def _unpool(d: torch.Tensor, beats: tuple[torch.Tensor, ...], shape, pools: tuple[int, int]) -> torch.Tensor:
    """dL/dz (shape (rows, n, H, W)) from dL/d(pooled): each window's gradient goes to its maximum."""
    dz = torch.zeros(shape, dtype=d.dtype, device=d.device)
    targets = _windows(dz, pools)
    later = None  # where a later position won
    for target, beat in zip(reversed(targets[1:]), (beat.view(d.shape) for beat in reversed(beats))):
        wins = beat if later is None else beat & ~later
        target.copy_(d * wins)
        later = beat if later is None else later | beat
    targets[0].copy_(d * ~later)
    return dz


def _col2im(d_cols: torch.Tensor, stride: tuple[int, int]) -> torch.Tensor:
    """The adjoint of ``_im2col``: (M, c, kh, kw, n, Ho, Wo) -> (M, c, n, H, W), one strided add per tap,
    with H and W the smallest that the columns cover (``backward`` pads them to the input's size)."""
    count, channels, kh, kw, n, out_h, out_w = d_cols.shape
    height, width = (out_h - 1) * stride[0] + kh, (out_w - 1) * stride[1] + kw
    out = d_cols.new_zeros(count, channels, n, height, width)
    for i in range(kh):
        for j in range(kw):
            out[:, :, :, i : i + height - kh + 1 : stride[0], j : j + width - kw + 1 : stride[1]] += d_cols[:, :, i, j]
    return out
