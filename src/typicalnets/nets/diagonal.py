"""Deep diagonal linear networks: f(x) = <w_1 * w_2 * ... * w_L, x> (elementwise products)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import torch

from typicalnets.errors import TypicalnetsError
from typicalnets.nets.base import Architecture, Product


@dataclass(frozen=True)
class DiagonalLinear(Architecture):
    in_dim: int
    depth: int = 2

    family: ClassVar[str] = "diag"

    def __post_init__(self) -> None:
        if int(self.in_dim) < 1 or int(self.depth) < 1:
            raise TypicalnetsError(
                f"a diagonal network needs input dimension >= 1 and depth >= 1; got {self.in_dim}, {self.depth}"
            )

    @property
    def input_shape(self):
        return (self.in_dim,)

    @property
    def widths(self):
        return (self.in_dim,) * (self.depth - 1)

    def with_widths(self, widths):
        if any(w != self.in_dim for w in widths):
            raise TypicalnetsError("diagonal networks have no width to narrow; use a sparse linear teacher instead")
        return replace(self, depth=len(widths) + 1)

    def param_shapes(self):
        return {f"w{layer}": (self.in_dim,) for layer in range(1, self.depth + 1)}

    def fan_in(self, name):
        return 1

    def flops_per_example(self) -> int:
        """The products of the depth layers and the inner product with x, x 2."""
        return 2 * self.depth * self.in_dim

    def head_names(self) -> tuple[str, ...]:
        return (f"w{self.depth}",)

    def widest_activation(self) -> int:
        return self.in_dim

    def layer_plan(self):
        return (Product(tuple(self.param_shapes())),)

    def effective_weights(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        beta = params["w1"]
        for layer in range(2, self.depth + 1):
            beta = beta * params[f"w{layer}"]
        return beta

    def forward(self, params, x):
        beta = self.effective_weights(params)
        return torch.matmul(x.to(beta.dtype), beta.T).T

    def to_dict(self):
        return {"family": self.family, "in_dim": self.in_dim, "depth": self.depth}
