"""Fully connected networks, vanilla or with one scale per hidden neuron.

Vanilla: f(x) = W_L s(... s(W_1 x + b_1) ...) + b_L. Scaled-neuron: each hidden neuron's output
is multiplied by its own scale parameter ``s_l``, drawn from the same prior as the weights.
Layers are numbered 1..L with L the scalar readout; ``w{l}`` has shape (d_l, d_{l-1}).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import torch

from typicalnets.errors import TypicalnetsError
from typicalnets.native.abi import Activation, FCNShape
from typicalnets.nets.base import ACTIVATIONS, Architecture, Dense, Head, check_activation, check_widths, present


@dataclass(frozen=True)
class FCN(Architecture):
    in_dim: int
    hidden: tuple[int, ...]
    activation: str = "relu"
    bias: bool = True
    scaled: bool = False

    family: ClassVar[str] = "fcn"

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(w) for w in self.hidden))
        check_widths(self.hidden, "FCN widths")
        if int(self.in_dim) < 1:
            raise TypicalnetsError(
                f"FCN input dimension must be >= 1, got {self.in_dim}; give inputs with at least one feature"
            )
        check_activation(self.activation)

    @property
    def name(self) -> str:
        return "sfcn" if self.scaled else "fcn"

    @property
    def input_shape(self):
        return (self.in_dim,)

    @property
    def widths(self):
        return self.hidden

    @property
    def depth(self) -> int:
        """Number of weight layers L (hidden layers + readout)."""
        return len(self.hidden) + 1

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """(d_0, d_1, ..., d_L) with d_0 the input and d_L = 1."""
        return (self.in_dim, *self.hidden, 1)

    def flops_per_example(self) -> int:
        """Multiply-adds x 2 of one forward on one example (biases, scales and activations not counted)."""
        sizes = self.layer_sizes
        return 2 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))

    def with_widths(self, widths):
        return replace(self, hidden=tuple(widths))

    def head_names(self) -> tuple[str, ...]:
        return (f"w{self.depth}", f"b{self.depth}") if self.bias else (f"w{self.depth}",)

    def widest_activation(self) -> int:
        return max(self.hidden)

    def layer_plan(self):
        hidden = tuple(
            Dense(f"w{layer}", present(f"b{layer}", self.bias), present(f"s{layer}", self.scaled), self.activation)
            for layer in range(1, self.depth)
        )
        return (*hidden, Head(f"w{self.depth}", present(f"b{self.depth}", self.bias)))

    def kernel_shape(self):
        return FCNShape(self.layer_sizes[:-1], self.bias, self.scaled, Activation.named(self.activation))

    def param_shapes(self):
        sizes = self.layer_sizes
        shapes: dict[str, tuple[int, ...]] = {}
        for layer in range(1, self.depth + 1):
            shapes[f"w{layer}"] = (sizes[layer], sizes[layer - 1])
            if self.bias:
                shapes[f"b{layer}"] = (sizes[layer],)
            if self.scaled and layer < self.depth:
                shapes[f"s{layer}"] = (sizes[layer],)
        return shapes

    def fan_in(self, name):
        layer = int(name[1:])
        return self.layer_sizes[layer - 1] if name[0] in "wb" else 1

    def _affine(self, params, h, layer):
        # (n, d) @ (M, d, k) broadcasts the shared input; later layers are batched (M, n, d).
        z = torch.matmul(h, params[f"w{layer}"].transpose(1, 2))
        return z + params[f"b{layer}"].unsqueeze(1) if self.bias else z

    def forward(self, params, x):
        act = ACTIVATIONS[self.activation]
        h = x.to(params["w1"].dtype)
        for layer in range(1, self.depth):
            h = act(self._affine(params, h, layer))
            if self.scaled:
                h = h * params[f"s{layer}"].unsqueeze(1)
        return self._affine(params, h, self.depth).squeeze(-1)

    def to_dict(self):
        return {
            "family": self.family,
            "in_dim": self.in_dim,
            "hidden": list(self.hidden),
            "activation": self.activation,
            "bias": self.bias,
            "scaled": self.scaled,
        }
