"""LeNet-5 populations (LeCun et al., 1998) as used by published Guess & Check studies.

conv 5x5 (c1) -> relu -> max-pool 2 -> conv 5x5 (c2) -> relu -> max-pool 2 -> fc (f1) -> relu ->
fc (f2) -> relu -> head. Full width is c = (6, 16), fc = (120, 84); a width factor F scales every
layer (rounded, at least 1), so F = 0.5 gives 3, 8, 60, 42 channels/units and 11,074 parameters on
1x28x28 inputs. The head is either two logits (prediction = argmax; the scalar f = z_1 - z_0, so
class +1 wins iff f > 0 and a tie is a mistake) or one scalar output f.

This forward is the straightforward method (grouped convolutions, one group per network); the
fast engines live in ``typicalnets.engines``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import torch
import torch.nn.functional as F

from typicalnets.errors import TypicalnetsError
from typicalnets.native.abi import LeNetShape
from typicalnets.nets.base import Architecture, Conv, Dense, Head, check_widths, conv_widest

KERNEL = 5
POOL = 2
FULL_WIDTHS = (6, 16, 120, 84)
HEADS = ("logits", "scalar")
DEFAULT_WIDTH_FACTOR = 0.5  # 3, 8, 60, 42 channels/units: the published studies' LeNet


@dataclass(frozen=True)
class LeNet(Architecture):
    in_shape: tuple[int, int, int] = (1, 28, 28)
    layer_widths: tuple[int, int, int, int] = (6, 16, 120, 84)  # conv1, conv2 channels; fc1, fc2 units
    head: str = "logits"

    family: ClassVar[str] = "lenet"

    def __post_init__(self) -> None:
        object.__setattr__(self, "in_shape", tuple(int(v) for v in self.in_shape))
        object.__setattr__(self, "layer_widths", tuple(int(v) for v in self.layer_widths))
        if len(self.in_shape) != 3:
            raise TypicalnetsError(f"LeNet needs image inputs (c, h, w) such as (1, 28, 28); got {self.in_shape}")
        if len(self.layer_widths) != 4:
            raise TypicalnetsError("LeNet has 4 widths: conv1, conv2 channels and fc1, fc2 units; give four widths")
        check_widths(self.layer_widths, "LeNet widths")
        if self.head not in HEADS:
            raise TypicalnetsError(f"unknown LeNet head {self.head!r}; use logits or scalar")
        if min(self.feature_size) < 1:
            raise TypicalnetsError(
                f"LeNet needs images of at least 16x16 pixels (two 5x5 convolutions and 2x2 pools); got {self.in_shape}"
            )

    @classmethod
    def with_width_factor(
        cls, factor: float = DEFAULT_WIDTH_FACTOR, in_shape=(1, 28, 28), head: str = "logits"
    ) -> LeNet:
        if not factor > 0:
            raise TypicalnetsError(f"width_factor must be > 0, got {factor}; use e.g. 0.5")
        return cls(tuple(in_shape), tuple(max(1, round(w * factor)) for w in FULL_WIDTHS), head)

    @property
    def activation(self) -> str:
        return "relu"

    @property
    def input_shape(self):
        return self.in_shape

    @property
    def widths(self):
        return self.layer_widths

    @property
    def outputs(self) -> int:
        return 2 if self.head == "logits" else 1

    def with_widths(self, widths):
        return replace(self, layer_widths=tuple(widths))

    @property
    def feature_size(self) -> tuple[int, int]:
        """Spatial size after the second pool."""
        h, w = self.in_shape[1:]
        for _ in range(2):
            h, w = (h - KERNEL + 1) // POOL, (w - KERNEL + 1) // POOL
        return h, w

    @property
    def flat_features(self) -> int:
        return self.layer_widths[1] * self.feature_size[0] * self.feature_size[1]

    def param_shapes(self):
        c1, c2, f1, f2 = self.layer_widths
        c0 = self.in_shape[0]
        return {
            "w1": (c1, c0, KERNEL, KERNEL),
            "b1": (c1,),
            "w2": (c2, c1, KERNEL, KERNEL),
            "b2": (c2,),
            "w3": (f1, self.flat_features),
            "b3": (f1,),
            "w4": (f2, f1),
            "b4": (f2,),
            "w5": (self.outputs, f2),
            "b5": (self.outputs,),
        }

    def fan_in(self, name):
        c1, c2, f1, f2 = self.layer_widths
        return {1: self.in_shape[0] * KERNEL**2, 2: c1 * KERNEL**2, 3: self.flat_features, 4: f1, 5: f2}[int(name[1:])]

    def flops_per_example(self) -> int:
        """Multiply-adds x 2 of one forward on one example (biases, relu and pooling not counted)."""
        c1, c2, f1, f2 = self.layer_widths
        h1, w1 = self.in_shape[1] - KERNEL + 1, self.in_shape[2] - KERNEL + 1
        h2, w2 = h1 // POOL - KERNEL + 1, w1 // POOL - KERNEL + 1
        macs = h1 * w1 * c1 * self.in_shape[0] * KERNEL**2 + h2 * w2 * c2 * c1 * KERNEL**2
        macs += self.flat_features * f1 + f1 * f2 + f2 * self.outputs
        return 2 * macs

    def head_names(self) -> tuple[str, ...]:
        return ("w5", "b5")

    def head_swaps(self) -> bool:
        return self.outputs == 2

    def widest_activation(self) -> int:
        c1, c2 = self.layer_widths[:2]
        return conv_widest(self.in_shape, [(KERNEL, 1, POOL, c1), (KERNEL, 1, POOL, c2)])

    def layer_plan(self):
        convs = tuple(
            Conv(f"w{layer}", f"b{layer}", None, "relu", (KERNEL, KERNEL), (1, 1), (POOL, POOL)) for layer in (1, 2)
        )
        return (*convs, Dense("w3", "b3", None, "relu"), Dense("w4", "b4", None, "relu"), Head("w5", "b5"))

    def kernel_shape(self):
        return LeNetShape(*self.in_shape, *self.layer_widths, self.outputs)

    def logits(self, params, x):
        """Head outputs, shape (M, n, outputs)."""
        m = params["w1"].shape[0]
        h = x.to(params["w1"].dtype)
        for layer in (1, 2):
            w = params[f"w{layer}"]
            h = F.conv2d(h, w.reshape(-1, *w.shape[2:]), params[f"b{layer}"].reshape(-1), groups=1 if layer == 1 else m)
            h = F.max_pool2d(torch.relu(h), POOL)
        h = h.reshape(h.shape[0], m, -1).transpose(0, 1)  # (M, n, features), channel-major per network
        for layer in (3, 4, 5):
            h = torch.baddbmm(params[f"b{layer}"].unsqueeze(1), h, params[f"w{layer}"].transpose(1, 2))
            if layer < 5:
                h = torch.relu(h)
        return h

    def forward(self, params, x):
        z = self.logits(params, x)
        return z[..., 1] - z[..., 0] if self.head == "logits" else z[..., 0]

    def to_dict(self):
        return {
            "family": self.family,
            "in_shape": list(self.in_shape),
            "layer_widths": list(self.layer_widths),
            "head": self.head,
        }
