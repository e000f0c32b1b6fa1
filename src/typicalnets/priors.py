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
from typicalnets.native.abi import KernelPrior, PriorKind

# Most levels a quantized prior may have: enough to approximate a continuum (uniform:A is that
# continuum), few enough that the levels, C~ and the kernels' exact code draws stay cheap.
MAX_LEVELS = 65_537
GAUSSIAN_TAIL = 10.0  # a Gaussian weight's bound in sigmas, for the overflow check (certificate.py)


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

    @abstractmethod
    def draw_flat(self, total: int, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``total`` i.i.d. draws in one flat tensor on the generator's device, with as few random
        calls as possible (the engines' draws; a different stream from ``sample``, same distribution)."""

    @abstractmethod
    def weight_bound(self) -> float:
        """The largest |parameter| the prior draws (for a Gaussian, GAUSSIAN_TAIL sigmas)."""

    def kernel_prior(self) -> KernelPrior | None:
        """The prior as the compiled kernels draw it, or None where they cannot."""
        return None

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

    def draw_flat(self, total, generator, dtype=torch.float32):
        """ceil(log2 Q) raw random bits per weight (``quantized_codes``), so each is exactly uniform over the levels."""
        return self.level_tensor(dtype, generator.device)[quantized_codes(self.q, total, generator)]

    def weight_bound(self):
        return max(abs(level) for level in self.levels)

    def kernel_prior(self):
        return KernelPrior(PriorKind.QUANTIZED, levels=self.levels)

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

    def draw_flat(self, total, generator, dtype=torch.float32):
        """Uniform on the odd multiples of 2^-24 a, a grid symmetric about 0: 2u - 1 + 2^-24 for u on
        torch.rand's grid (multiples of 2^-24), exact in float32."""
        flat = torch.rand(total, generator=generator, dtype=dtype, device=generator.device).mul_(2.0).sub_(1.0)
        return flat.add_(2.0**-24).mul_(self.a)

    def weight_bound(self):
        return self.a

    def kernel_prior(self):
        return KernelPrior(PriorKind.UNIFORM, half_width=float(self.a))

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

    def draw_flat(self, total, generator, dtype=torch.float32):
        return torch.randn(total, generator=generator, dtype=dtype, device=generator.device).mul_(self.sigma)

    def weight_bound(self):
        return GAUSSIAN_TAIL * self.sigma

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


def quantized_codes(q: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` i.i.d. integers uniform on {0, ..., q-1} from raw random bits (rejection of codes >= q)."""
    bits = max(1, (q - 1).bit_length())
    per_word = 62 // bits  # random_() on int64 yields 63 random bits; use whole fields of them
    shifts = torch.arange(per_word, device=generator.device, dtype=torch.int64) * bits
    out = torch.empty(count, dtype=torch.int64, device=generator.device)
    filled = 0
    while filled < count:
        need = count - filled
        words = math.ceil(need * (1 << bits) / q / per_word * 1.05) + 1  # expected acceptance q / 2^bits
        raw = torch.empty(words, dtype=torch.int64, device=generator.device).random_(generator=generator)
        codes = ((raw.unsqueeze(1) >> shifts) & ((1 << bits) - 1)).reshape(-1)
        codes = codes[codes < q][:need]
        out[filled : filled + codes.numel()] = codes
        filled += codes.numel()
    return out
