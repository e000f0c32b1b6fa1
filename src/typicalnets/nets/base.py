"""The architecture protocol shared by every population family.

An ``Architecture`` is a frozen description (no weights). It names each parameter tensor of one
network and computes the batched forward of M networks at once from stacked parameters whose
leading dimension is M. Networks are binary classifiers with a scalar output f; the prediction is
sign(f) and f = 0 counts as a mistake.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from math import prod
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from typicalnets.errors import TypicalnetsError
from typicalnets.native.abi import KernelShape

LEAKY_RELU_SLOPE = 0.01

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "sign": torch.sign,
    "leaky-relu": lambda z: F.leaky_relu(z, LEAKY_RELU_SLOPE),
    "tanh": torch.tanh,
}


def check_activation(name: str) -> None:
    if name not in ACTIVATIONS:
        raise TypicalnetsError(f"unknown activation {name!r}; use one of {', '.join(ACTIVATIONS)}")


def check_widths(widths: tuple[int, ...], what: str) -> None:
    if len(widths) == 0 or any(int(w) < 1 for w in widths):
        raise TypicalnetsError(f"{what} must be one or more positive integers, e.g. 4 or 8,8; got {list(widths)}")


@dataclass(frozen=True)
class Conv:
    """Convolution (+ bias) -> activation -> max-pool (kernel = stride) -> per-channel scale; sizes as
    (height, width), a 1-D convolution being one of height 1."""

    weight: str
    bias: str | None
    scale: str | None
    activation: str
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pool: tuple[int, int]


@dataclass(frozen=True)
class Dense:
    """A hidden fully connected layer: affine (+ bias) -> activation -> per-unit scale."""

    weight: str
    bias: str | None
    scale: str | None
    activation: str


@dataclass(frozen=True)
class Head:
    """The output layer: one output f, or two logits with f = z_1 - z_0."""

    weight: str
    bias: str | None


@dataclass(frozen=True)
class Product:
    """A diagonal linear network's whole forward: f = <w_1 * ... * w_L, x> (elementwise products)."""

    weights: tuple[str, ...]


Layer = Conv | Dense | Head | Product


def present(name: str, exists: bool) -> str | None:
    """``name`` for a layer's optional bias or scale, None where the family has none."""
    return name if exists else None


class Architecture(ABC):
    """A family member's shape: parameter names and shapes, and the batched forward."""

    family: ClassVar[str]

    @property
    @abstractmethod
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input example (without the batch dimension)."""

    @property
    @abstractmethod
    def widths(self) -> tuple[int, ...]:
        """Neurons (or channels) per hidden layer; what a narrow teacher has fewer of."""

    @abstractmethod
    def with_widths(self, widths: tuple[int, ...]) -> Architecture:
        """The same family and input with other hidden widths (a narrow teacher, say)."""

    @abstractmethod
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Ordered parameter names and their per-network shapes."""

    @abstractmethod
    def fan_in(self, name: str) -> int:
        """Inputs feeding one unit of parameter ``name`` (for a standard initialisation)."""

    @abstractmethod
    def forward(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Outputs f of shape (M, n) for stacked ``params`` (leading M) and inputs ``x`` (n, ...)."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """JSON-able description that ``arch_from_dict`` reads back."""

    @abstractmethod
    def flops_per_example(self) -> int:
        """Multiply-adds x 2 of one forward on one example (what the engines budget their steps by)."""

    @abstractmethod
    def head_names(self) -> tuple[str, ...]:
        """The parameters of the output layer (weights, and bias where there is one)."""

    def head_swaps(self) -> bool:
        """Whether the head is two logits, so that swapping them mirrors the output (f -> -f) for
        any prior; otherwise mirroring negates the head, a prior draw only for a symmetric prior."""
        return False

    @abstractmethod
    def layer_plan(self) -> tuple[Layer, ...]:
        """The forward as a sequence of layers, the last a ``Head`` (or a lone ``Product``): what the
        certificate evaluates with output scales, and the overflow bound walks."""

    def kernel_shape(self) -> KernelShape | None:
        """The network as the compiled kernels take it, or None where no kernel runs this family."""
        return None

    @abstractmethod
    def widest_activation(self) -> int:
        """The largest intermediate (activations or im2col columns) of one network on one example,
        which bounds the torch engine's memory per chunk."""

    def num_params(self) -> int:
        total = 0
        for shape in self.param_shapes().values():
            count = 1
            for s in shape:
                count *= s
            total += count
        return total

    def check_input(self, x: torch.Tensor) -> None:
        if tuple(x.shape[1:]) != self.input_shape:
            raise TypicalnetsError(
                f"inputs have shape {tuple(x.shape[1:])} per example but the {self.family} expects "
                f"{self.input_shape}; reshape the data or change the architecture's input"
            )

    @property
    def name(self) -> str:
        """Short CLI name (fcn, sfcn, cnn, scnn, diag)."""
        return self.family

    def describe(self) -> str:
        return f"{self.name}[{','.join(str(w) for w in self.widths)}]"


def conv_widest(in_shape: tuple[int, ...], layers: list[tuple[int, int, int, int]]) -> int:
    """``widest_activation`` of conv layers (kernel, stride, pool, channels out) on ``in_shape``:
    each layer's output positions times the larger of its channels and its im2col column height."""
    spatial, channels, widest = list(in_shape[1:]), in_shape[0], 1
    for k, stride, pool, c_out in layers:
        out = [(size - k) // stride + 1 for size in spatial]
        widest = max(widest, prod(out) * max(c_out, channels * k ** len(spatial)))
        spatial, channels = [size // pool for size in out], c_out
    return widest
