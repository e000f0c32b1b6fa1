"""Population networks: architectures (FCN, scaled FCN, CNN, scaled CNN, diagonal) and populations."""

from __future__ import annotations

from typing import Any

from typicalnets.errors import TypicalnetsError
from typicalnets.nets.base import ACTIVATIONS, Architecture
from typicalnets.nets.cnn import CNN
from typicalnets.nets.diagonal import DiagonalLinear
from typicalnets.nets.fcn import FCN
from typicalnets.nets.lenet import DEFAULT_WIDTH_FACTOR, LeNet
from typicalnets.nets.population import Population

ARCH_NAMES = ("fcn", "sfcn", "cnn", "scnn", "diag", "lenet")


def arch_from_dict(data: dict[str, Any]) -> Architecture:
    data = dict(data)
    family = data.pop("family", None)
    if family == "fcn":
        return FCN(
            in_dim=data["in_dim"],
            hidden=tuple(data["hidden"]),
            activation=data["activation"],
            bias=data["bias"],
            scaled=data["scaled"],
        )
    if family == "cnn":
        return CNN(
            in_shape=tuple(data["in_shape"]),
            channels=tuple(data["channels"]),
            kernel_size=tuple(data["kernel_size"]),
            stride=tuple(data["stride"]),
            pool=tuple(data["pool"]),
            activation=data["activation"],
            bias=data["bias"],
            scaled=data["scaled"],
        )
    if family == "diag":
        return DiagonalLinear(in_dim=data["in_dim"], depth=data["depth"])
    if family == "lenet":
        return LeNet(in_shape=tuple(data["in_shape"]), layer_widths=tuple(data["layer_widths"]), head=data["head"])
    raise TypicalnetsError(f"unknown architecture family {family!r}; expected fcn, cnn, diag or lenet")


def build_arch(
    name: str,
    input_shape: tuple[int, ...],
    widths: tuple[int, ...] = (),
    activation: str = "relu",
    bias: bool = True,
    kernel_size: tuple[int, ...] | int = 3,
    stride: tuple[int, ...] | int = 1,
    pool: tuple[int, ...] | int = 1,
    depth: int = 2,
    width_factor: float = DEFAULT_WIDTH_FACTOR,
    head: str = "logits",
) -> Architecture:
    """Build an architecture from CLI-style arguments for inputs of shape ``input_shape``."""
    if name not in ARCH_NAMES:
        raise TypicalnetsError(f"unknown architecture {name!r}; use one of {', '.join(ARCH_NAMES)}")
    if name == "lenet":
        if len(input_shape) != 3:
            raise TypicalnetsError(
                f"--arch lenet needs images of shape (n, c, h, w) such as (n, 1, 28, 28); the data has examples of "
                f"shape {input_shape}; reshape them"
            )
        return LeNet.with_width_factor(width_factor, input_shape, head)
    if name in ("fcn", "sfcn", "diag"):
        if len(input_shape) != 1:
            raise TypicalnetsError(
                f"--arch {name} needs flat inputs of shape (n, d) but the data has examples of shape {input_shape}; "
                "flatten them or use --arch cnn"
            )
        if name == "diag":
            return DiagonalLinear(in_dim=input_shape[0], depth=depth)
        return FCN(in_dim=input_shape[0], hidden=tuple(widths), activation=activation, bias=bias, scaled=name == "sfcn")
    if len(input_shape) not in (2, 3):
        raise TypicalnetsError(
            f"--arch {name} needs inputs of shape (n, c, length) or (n, c, h, w); the data has examples of shape "
            f"{input_shape}; reshape them or use --arch fcn"
        )
    return CNN(
        in_shape=tuple(input_shape),
        channels=tuple(widths),
        kernel_size=kernel_size,
        stride=stride,
        pool=pool,
        activation=activation,
        bias=bias,
        scaled=name == "scnn",
    )


__all__ = [
    "ACTIVATIONS",
    "ARCH_NAMES",
    "Architecture",
    "CNN",
    "DiagonalLinear",
    "FCN",
    "LeNet",
    "Population",
    "arch_from_dict",
    "build_arch",
]
