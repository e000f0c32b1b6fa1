"""Populations: M networks of one architecture held as stacked tensors (leading dimension M)."""

from __future__ import annotations

import math
import operator
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from typicalnets.errors import TypicalnetsError
from typicalnets.nets.base import Architecture
from typicalnets.priors import Prior, prior_from_dict

FORMAT = "typicalnets.population"
FORMAT_VERSION = 1
# Networks and examples per forward chunk: at most ~1M (network, example) pairs live at once.
DEFAULT_CHUNK = 1024


def split_flat(arch: Architecture, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """Views of a (M, P) tensor, one row of all P parameters per network, as named (M, *shape) tensors."""
    params, start = {}, 0
    for name, shape in arch.param_shapes().items():
        size = math.prod(shape)
        params[name] = flat[:, start : start + size].reshape(len(flat), *shape)
        start += size
    return params


class Population:
    """M networks of ``arch`` whose parameters were drawn from ``prior``.

    ``params[name]`` has shape (M, *arch.param_shapes()[name]). Indexing with an int, a slice, a
    boolean mask or an index tensor returns a new Population; ``Population.concat`` joins several.
    """

    def __init__(self, arch: Architecture, prior: Prior, params: dict[str, torch.Tensor]):
        shapes = arch.param_shapes()
        if set(params) != set(shapes):
            raise TypicalnetsError(
                f"parameters {sorted(params)} do not match the {arch.describe()} parameters {sorted(shapes)}; save "
                "the population with this architecture"
            )
        sizes = {t.shape[0] for t in params.values()}
        if len(sizes) != 1:
            raise TypicalnetsError(
                f"parameter tensors disagree on the population size: {sorted(sizes)}; stack the same number of "
                "networks in each"
            )
        for name, shape in shapes.items():
            if tuple(params[name].shape[1:]) != shape:
                raise TypicalnetsError(
                    f"parameter {name} has shape {tuple(params[name].shape[1:])}, expected {shape}; give parameters "
                    "of the architecture's shapes"
                )
        self.arch = arch
        self.prior = prior
        self.params = {name: params[name] for name in shapes}  # the architecture's order

    @classmethod
    def draw(
        cls,
        arch: Architecture,
        prior: Prior,
        size: int,
        generator: torch.Generator,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> Population:
        """Draw ``size`` networks with every parameter i.i.d. from ``prior``."""
        device = generator.device if device is None else device
        params = {
            name: prior.sample((size, *shape), generator, dtype=dtype, device=device)
            for name, shape in arch.param_shapes().items()
        }
        return cls(arch, prior, params)

    @classmethod
    def empty(cls, arch: Architecture, prior: Prior, dtype: torch.dtype = torch.float32, device="cpu") -> Population:
        shapes = arch.param_shapes().items()
        return cls(arch, prior, {name: torch.empty(0, *shape, dtype=dtype, device=device) for name, shape in shapes})

    def __len__(self) -> int:
        return next(iter(self.params.values())).shape[0]

    @property
    def device(self) -> torch.device:
        return next(iter(self.params.values())).device

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.params.values())).dtype

    def __getitem__(self, index: int | slice | torch.Tensor | Sequence[int]) -> Population:
        if getattr(index, "ndim", None) == 0 or (isinstance(index, int) and not isinstance(index, bool)):
            position = operator.index(index)
            if not -len(self) <= position < len(self):
                raise IndexError(f"network {position} is out of range for a population of {len(self)}")
            position %= len(self)
            index = slice(position, position + 1)
        elif not isinstance(index, slice):
            index = torch.as_tensor(index, device=self.device)
            if index.numel() == 0 and index.dtype != torch.bool:
                index = index.long()
        return Population(self.arch, self.prior, {k: v[index] for k, v in self.params.items()})

    @staticmethod
    def concat(populations: Sequence[Population]) -> Population:
        if not populations:
            raise TypicalnetsError("cannot concatenate an empty list of populations; pass at least one")
        first = populations[0]
        for other in populations[1:]:
            if other.arch != first.arch or other.prior != first.prior:
                raise TypicalnetsError(
                    f"cannot concatenate {other.arch.describe()} with {first.arch.describe()}: architectures or "
                    "priors differ; concatenate populations of one kind"
                )
        params = {name: torch.cat([p.params[name] for p in populations]) for name in first.params}
        return Population(first.arch, first.prior, params)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Population:
        return Population(self.arch, self.prior, {k: v.to(device=device, dtype=dtype) for k, v in self.params.items()})

    def forward(self, x: torch.Tensor, chunk_size: int = DEFAULT_CHUNK) -> torch.Tensor:
        """Outputs f, shape (M, n), computed in chunks of networks to bound memory."""
        self.arch.check_input(x)
        x = x.to(self.device)
        outs = [
            self.arch.forward({k: v[start : start + chunk_size] for k, v in self.params.items()}, x)
            for start in range(0, len(self), chunk_size)
        ]
        return torch.cat(outs) if outs else torch.empty(0, x.shape[0], device=self.device, dtype=self.dtype)

    def predict(self, x: torch.Tensor, chunk_size: int = DEFAULT_CHUNK) -> torch.Tensor:
        """sign(f) as int8 of shape (M, n): +1, -1, or 0 where f = 0 exactly (always a mistake)."""
        return torch.sign(self.forward(x, chunk_size)).to(torch.int8)

    def mistakes(self, x: torch.Tensor, y: torch.Tensor, chunk_size: int = DEFAULT_CHUNK) -> torch.Tensor:
        """Per-network count of misclassified examples (f = 0 counts as a mistake), shape (M,)."""
        y = y.to(self.device, torch.int8)
        counts = [
            (self.predict(x[start : start + chunk_size], chunk_size) != y[start : start + chunk_size]).sum(dim=1)
            for start in range(0, x.shape[0], chunk_size)
        ]
        return torch.stack(counts).sum(0) if counts else torch.zeros(len(self), dtype=torch.long, device=self.device)

    def errors(self, x: torch.Tensor, y: torch.Tensor, chunk_size: int = DEFAULT_CHUNK) -> torch.Tensor:
        """Per-network 0-1 error rate on (x, y), shape (M,), float64."""
        return self.mistakes(x, y, chunk_size).double() / max(int(x.shape[0]), 1)

    def header(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "arch": self.arch.to_dict(),
            "prior": self.prior.to_dict(),
            "size": len(self),
            "dtype": str(self.dtype).removeprefix("torch."),
            "params": {name: list(shape) for name, shape in self.arch.param_shapes().items()},
        }

    def save(self, path: str | os.PathLike) -> None:
        """Save to ``path`` (a torch file whose ``header`` describes architecture and prior)."""
        payload = {
            "header": self.header(),
            "params": {k: v.detach().cpu().contiguous() for k, v in self.params.items()},
        }
        torch.save(payload, Path(path))

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device | str = "cpu") -> Population:
        from typicalnets.nets import arch_from_dict

        path = Path(path)
        if not path.is_file():
            raise TypicalnetsError(f"population file {path} does not exist; give the path of a saved population")
        try:
            payload = torch.load(path, map_location=device, weights_only=True)
            header = payload["header"]
            if header.get("format") != FORMAT:
                raise ValueError("wrong format tag")
            arch = arch_from_dict(header["arch"])
            prior = prior_from_dict(header["prior"])
            return cls(arch, prior, dict(payload["params"]))
        except TypicalnetsError:
            raise
        except Exception as exc:  # any unpickling or schema failure means the file is not usable
            raise TypicalnetsError(
                f"{path} is not a readable typicalnets population ({type(exc).__name__}); re-create it with "
                "`typicalnets sample`"
            ) from None

    def __repr__(self) -> str:
        return f"Population({self.arch.describe()}, prior={self.prior.spec()}, size={len(self)})"
