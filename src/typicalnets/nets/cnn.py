"""Convolutional networks (1-D or 2-D), vanilla or with one scale per channel.

Each conv layer l: conv(kernel k_l, stride) -> + bias -> activation -> max-pool (optional) ->
(scaled only) times a per-channel scale. Then a linear readout over the flattened
(channel-major) feature map gives the scalar f. The population forward runs the first layer as
one convolution with M * c_1 output channels and later layers as grouped convolutions, one group
per network; this is the straightforward method (the fast engine lives elsewhere).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from math import prod
from typing import ClassVar

import torch
import torch.nn.functional as F

from typicalnets.errors import TypicalnetsError
from typicalnets.nets.base import (
    ACTIVATIONS,
    Architecture,
    Conv,
    Head,
    check_activation,
    check_widths,
    conv_widest,
    present,
)


def _per_layer(value, count: int, what: str) -> tuple[int, ...]:
    values = (value,) * count if isinstance(value, int) else tuple(int(v) for v in value)
    if len(values) == 1:
        values = values * count
    if len(values) != count or any(v < 1 for v in values):
        raise TypicalnetsError(f"CNN {what} needs one positive integer or one per conv layer ({count}); got {value}")
    return values


@dataclass(frozen=True)
class CNN(Architecture):
    in_shape: tuple[int, ...]  # (channels, length) or (channels, height, width)
    channels: tuple[int, ...]
    kernel_size: tuple[int, ...] | int = 3
    stride: tuple[int, ...] | int = 1
    pool: tuple[int, ...] | int = 1
    activation: str = "relu"
    bias: bool = True
    scaled: bool = False

    family: ClassVar[str] = "cnn"

    def __post_init__(self) -> None:
        in_shape = tuple(int(v) for v in self.in_shape)
        if len(in_shape) not in (2, 3) or any(v < 1 for v in in_shape):
            raise TypicalnetsError(
                f"CNN inputs must be (channels, length) or (channels, height, width); got {in_shape}"
            )
        object.__setattr__(self, "in_shape", in_shape)
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        check_widths(self.channels, "CNN channels")
        count = len(self.channels)
        for name in ("kernel_size", "stride", "pool"):
            object.__setattr__(self, name, _per_layer(getattr(self, name), count, name.replace("_", " ")))
        check_activation(self.activation)
        self.spatial_sizes()  # validates that every layer's output is non-empty

    @property
    def name(self) -> str:
        return "scnn" if self.scaled else "cnn"

    @property
    def dims(self) -> int:
        return len(self.in_shape) - 1

    @property
    def input_shape(self):
        return self.in_shape

    @property
    def widths(self):
        return self.channels

    @property
    def depth(self) -> int:
        return len(self.channels) + 1

    def with_widths(self, widths):
        return replace(self, channels=tuple(widths))

    def spatial_sizes(self) -> list[tuple[int, ...]]:
        """Spatial shape after each conv layer (after pooling), starting with the input's."""
        sizes = [self.in_shape[1:]]
        for layer, (k, s, p) in enumerate(zip(self.kernel_size, self.stride, self.pool), start=1):
            conv = tuple((n - k) // s + 1 if n >= k else 0 for n in sizes[-1])
            pooled = tuple(n // p for n in conv)
            if min(pooled) < 1:
                raise TypicalnetsError(
                    f"CNN layer {layer} (kernel {k}, stride {s}, pool {p}) does not fit its input of spatial size "
                    f"{sizes[-1]}; use smaller kernels, strides or pools, or fewer layers"
                )
            sizes.append(pooled)
        return sizes

    @property
    def readout_features(self) -> int:
        return self.channels[-1] * prod(self.spatial_sizes()[-1])

    def flops_per_example(self) -> int:
        """Multiply-adds x 2 of one forward on one example (biases, scales, activations, pooling not counted)."""
        sizes, c_in, macs = self.spatial_sizes(), self.in_shape[0], 0
        for (k, s, _), c_out, spatial in zip(zip(self.kernel_size, self.stride, self.pool), self.channels, sizes):
            positions = prod((n - k) // s + 1 for n in spatial)
            macs += positions * c_out * c_in * k**self.dims
            c_in = c_out
        return 2 * (macs + self.readout_features)

    def head_names(self) -> tuple[str, ...]:
        return (f"w{self.depth}", f"b{self.depth}") if self.bias else (f"w{self.depth}",)

    def widest_activation(self) -> int:
        layers = list(zip(self.kernel_size, self.stride, self.pool, self.channels))
        return conv_widest(self.in_shape, layers)

    def layer_plan(self):
        def planar(size: int) -> tuple[int, int]:  # a 1-D convolution runs as a 2-D one of height 1
            return (size, size) if self.dims == 2 else (1, size)

        convs = tuple(
            Conv(
                f"w{layer}",
                present(f"b{layer}", self.bias),
                present(f"s{layer}", self.scaled),
                self.activation,
                planar(k),
                planar(s),
                planar(p),
            )
            for layer, (k, s, p) in enumerate(zip(self.kernel_size, self.stride, self.pool), start=1)
        )
        return (*convs, Head(f"w{self.depth}", present(f"b{self.depth}", self.bias)))

    def param_shapes(self):
        shapes: dict[str, tuple[int, ...]] = {}
        c_in = self.in_shape[0]
        for layer, (c_out, k) in enumerate(zip(self.channels, self.kernel_size), start=1):
            shapes[f"w{layer}"] = (c_out, c_in) + (k,) * self.dims
            if self.bias:
                shapes[f"b{layer}"] = (c_out,)
            if self.scaled:
                shapes[f"s{layer}"] = (c_out,)
            c_in = c_out
        shapes[f"w{self.depth}"] = (1, self.readout_features)
        if self.bias:
            shapes[f"b{self.depth}"] = (1,)
        return shapes

    def fan_in(self, name):
        layer = int(name[1:])
        if name[0] == "s":
            return 1
        if layer == self.depth:
            return self.readout_features
        c_in = self.in_shape[0] if layer == 1 else self.channels[layer - 2]
        return c_in * self.kernel_size[layer - 1] ** self.dims

    def forward(self, params, x):
        conv = F.conv1d if self.dims == 1 else F.conv2d
        max_pool = F.max_pool1d if self.dims == 1 else F.max_pool2d
        act = ACTIVATIONS[self.activation]
        m = params["w1"].shape[0]
        h = x.to(params["w1"].dtype)
        for layer, (s, p) in enumerate(zip(self.stride, self.pool), start=1):
            w = params[f"w{layer}"]
            # (M, c_out, c_in, k..) -> (M * c_out, c_in, k..): the first layer sees the shared input,
            # later layers one group of c_in channels per network.
            h = conv(h, w.reshape(-1, *w.shape[2:]), stride=s, groups=1 if layer == 1 else m)
            if self.bias:
                h = h + params[f"b{layer}"].reshape(1, -1, *(1,) * self.dims)
            h = act(h)
            if p > 1:
                h = max_pool(h, p)
            if self.scaled:
                h = h * params[f"s{layer}"].reshape(1, -1, *(1,) * self.dims)
        features = h.reshape(h.shape[0], m, -1)  # (n, M, c * spatial), channel-major per network
        f = torch.einsum("nmf,mf->mn", features, params[f"w{self.depth}"][:, 0, :])
        return f + params[f"b{self.depth}"] if self.bias else f

    def to_dict(self):
        return {
            "family": self.family,
            "in_shape": list(self.in_shape),
            "channels": list(self.channels),
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "pool": list(self.pool),
            "activation": self.activation,
            "bias": self.bias,
            "scaled": self.scaled,
        }
