"""Flat priors over network parameters.

Every prior draws i.i.d. values from a ``torch.Generator``; the same seed gives bit-identical
draws on the CPU. Priors are plain frozen dataclasses that round-trip through ``to_dict`` /
``prior_from_dict`` (that is how saved populations describe themselves) and parse from the CLI
strings ``quantized:Q``, ``quantized:L1,L2,...``, ``uniform:A`` and ``gaussian:SIGMA``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch

from typicalnets.errors import TypicalnetsError

# Most levels a quantized prior may have: enough to approximate a continuum (uniform:A is that
# continuum), few enough that the levels, C~ and the kernels' exact code draws stay cheap.
MAX_LEVELS = 65_537


class Prior(ABC):
    """A distribution that each parameter is drawn from independently."""

    kind: str

    @abstractmethod
    def sample(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        """Draw a tensor of ``shape`` i.i.d. from the prior."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description that ``prior_from_dict`` reads back."""

    @abstractmethod
    def spec(self) -> str:
        """The CLI string that parses back to this prior."""

    @property
    def symmetric(self) -> bool:
        """Whether the prior is symmetric about 0, so that negating a draw gives a draw (the engines
        draw uniform weights on a grid symmetric about 0)."""
        return True


@dataclass(frozen=True)
class QuantizedUniform(Prior):
    """Uniform over a finite set of levels.

    By default ``Q`` evenly spaced levels in [-1, 1]; Q must be odd so that 0 is a level (the
    narrow-teacher argument silences extra neurons with zero weights). Explicit ``levels`` may be
    any distinct finite values.
    """

    levels: tuple[float, ...]
    kind: str = field(default="quantized", init=False)

    def __post_init__(self) -> None:
        levels = tuple(float(v) for v in self.levels)
        if len(levels) < 2:
            raise TypicalnetsError("a quantized prior needs at least 2 levels; give Q >= 3 or a list like -1,0,1")
        if len(levels) > MAX_LEVELS:
            raise TypicalnetsError(
                f"a quantized prior has at most {MAX_LEVELS:,} levels, got {len(levels):,}; "
                "use fewer levels, or uniform:A for a continuum"
            )
        if len(set(levels)) != len(levels) or not all(math.isfinite(v) for v in levels):
            raise TypicalnetsError(
                f"quantized levels must be distinct finite numbers, got {levels[:8]}; "
                "list each level once, e.g. quantized:-1,0,1"
            )
        object.__setattr__(self, "levels", tuple(sorted(levels)))

    @classmethod
    def evenly_spaced(cls, q: int) -> QuantizedUniform:
        if q > MAX_LEVELS:
            raise TypicalnetsError(
                f"quantized:{q} has more than {MAX_LEVELS:,} levels; use fewer levels, or uniform:1.0 for a continuum"
            )
        if q < 3 or q % 2 == 0:
            raise TypicalnetsError(
                f"quantized:{q} needs an odd Q >= 3 so that 0 is a level; use e.g. quantized:3, or list levels as "
                "quantized:-1,0,1"
            )
        # Exact rational steps: linspace leaves the middle level at ~1e-17 instead of 0 for many Q.
        return cls(tuple((2 * i - (q - 1)) / (q - 1) for i in range(q)))

    @property
    def q(self) -> int:
        return len(self.levels)

    @property
    def zero_prob(self) -> float:
        """Prior probability of the level 0 (0 when 0 is not a level)."""
        return (1.0 / self.q) if 0.0 in self.levels else 0.0

    @property
    def symmetric(self) -> bool:
        levels = [float(torch.tensor(level, dtype=torch.float32)) for level in self.levels]  # as the engines hold them
        return set(levels) == {-level for level in levels}

    def level_tensor(self, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.tensor(self.levels, dtype=dtype, device=device)

    def sample(self, shape, generator, dtype=torch.float32, device="cpu"):
        index = torch.randint(self.q, shape, generator=generator, device=generator.device)
        return self.level_tensor(dtype, generator.device)[index].to(device)

    def to_dict(self):
        return {"kind": self.kind, "levels": list(self.levels)}

    def spec(self):
        default = QuantizedUniform.evenly_spaced(self.q).levels if self.q % 2 == 1 else None
        if default == self.levels:
            return f"quantized:{self.q}"
        return "quantized:" + ",".join(repr(v) for v in self.levels)


@dataclass(frozen=True)
class Uniform(Prior):
    """Continuous uniform U[-a, a]."""

    a: float = 1.0
    kind: str = field(default="uniform", init=False)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.a) and self.a > 0):
            raise TypicalnetsError(f"uniform:{self.a} needs a finite half-width a > 0; use e.g. uniform:1.0")

    def sample(self, shape, generator, dtype=torch.float32, device="cpu"):
        u = torch.rand(shape, generator=generator, dtype=dtype, device=generator.device)
        return ((2.0 * u - 1.0) * self.a).to(device)

    def to_dict(self):
        return {"kind": self.kind, "a": self.a}

    def spec(self):
        return f"uniform:{self.a!r}"


@dataclass(frozen=True)
class Gaussian(Prior):
    """Gaussian N(0, sigma^2)."""

    sigma: float = 1.0
    kind: str = field(default="gaussian", init=False)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise TypicalnetsError(f"gaussian:{self.sigma} needs a finite sigma > 0; use e.g. gaussian:1.0")

    def sample(self, shape, generator, dtype=torch.float32, device="cpu"):
        z = torch.randn(shape, generator=generator, dtype=dtype, device=generator.device)
        return (z * self.sigma).to(device)

    def to_dict(self):
        return {"kind": self.kind, "sigma": self.sigma}

    def spec(self):
        return f"gaussian:{self.sigma!r}"


def prior_from_dict(data: dict[str, Any]) -> Prior:
    kind = data.get("kind")
    try:
        if kind == "quantized":
            return QuantizedUniform(tuple(float(v) for v in data["levels"]))
        if kind == "uniform":
            return Uniform(float(data["a"]))
        if kind == "gaussian":
            return Gaussian(float(data["sigma"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise TypicalnetsError(f"prior description {data} is incomplete or malformed ({exc!r}); re-create it") from None
    raise TypicalnetsError(f"unknown prior kind {kind!r}; expected quantized, uniform or gaussian")


def parse_prior(text: str) -> Prior:
    """Parse ``quantized:Q``, ``quantized:L1,L2,...``, ``uniform:A`` or ``gaussian:SIGMA``."""
    kind, _, arg = text.strip().partition(":")
    kind = kind.lower()
    fix = "use quantized:3, quantized:-1,0,1, uniform:1.0 or gaussian:1.0"
    if kind not in {"quantized", "uniform", "gaussian"}:
        raise TypicalnetsError(f"unknown prior {text!r}; {fix}")
    try:
        values = [float(v) for v in arg.split(",")] if arg else []
    except ValueError:
        raise TypicalnetsError(f"cannot read the numbers in prior {text!r}; {fix}") from None
    if kind == "quantized":
        if len(values) == 1:
            if not values[0].is_integer():
                raise TypicalnetsError(f"quantized:{arg} needs an integer number of levels Q; {fix}")
            return QuantizedUniform.evenly_spaced(int(values[0]))
        if len(values) == 0:
            raise TypicalnetsError(f"prior {text!r} lacks Q; {fix}")
        return QuantizedUniform(tuple(values))
    if len(values) > 1:
        raise TypicalnetsError(f"prior {text!r} takes one number; {fix}")
    value = values[0] if values else 1.0
    return Uniform(value) if kind == "uniform" else Gaussian(value)
