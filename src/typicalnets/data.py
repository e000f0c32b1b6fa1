"""Binary datasets: validation, NPZ files, and synthetic input distributions.

A ``Dataset`` holds inputs ``x`` (float32, shape (n, *input_shape)) and labels ``y`` (int8 in
{-1, +1}). NPZ files hold arrays ``x`` and ``y``; labels in {0, 1} are read with 0 as -1.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from typicalnets.errors import TypicalnetsError

INPUT_KINDS = ("gaussian", "uniform", "boolean")


def _labels_to_pm1(y: np.ndarray, source: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise TypicalnetsError(f"labels in {source} must be a 1-D array, got shape {y.shape}; store y as shape (n,)")
    if y.size and not np.issubdtype(y.dtype, np.number) and y.dtype != np.bool_:
        raise TypicalnetsError(f"labels in {source} must be numbers in {{-1, +1}} or {{0, 1}}, got dtype {y.dtype}")
    values = set(np.unique(y).tolist())
    if values <= {-1, 1}:
        return y.astype(np.int8)
    if values <= {0, 1}:
        return np.where(y.astype(np.int8) == 0, -1, 1).astype(np.int8)
    shown = sorted(values)[:5]
    raise TypicalnetsError(
        f"labels in {source} are not binary (values {shown}{'...' if len(values) > 5 else ''}); use {{-1, +1}} or {{0, 1}}"
    )


@dataclass(frozen=True)
class Dataset:
    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.ndim < 2:
            raise TypicalnetsError(f"inputs must have shape (n, d) or (n, c, ...), got {tuple(self.x.shape)}")
        if self.x.shape[0] != self.y.shape[0]:
            raise TypicalnetsError(f"{self.x.shape[0]} inputs but {self.y.shape[0]} labels; give one label per input")
        if not torch.isfinite(self.x).all():
            raise TypicalnetsError("inputs contain NaN or inf; clean or impute them before sampling")

    @classmethod
    def from_arrays(cls, x, y, source: str = "the data") -> "Dataset":
        x = np.asarray(x)
        if not np.issubdtype(x.dtype, np.number) and x.dtype != np.bool_:
            raise TypicalnetsError(f"inputs in {source} must be numeric, got dtype {x.dtype}")
        x = x.astype(np.float32)
        if x.ndim < 2:
            raise TypicalnetsError(f"inputs in {source} must have shape (n, d) or (n, c, h, w), got {x.shape}")
        if not np.isfinite(x).all():
            raise TypicalnetsError(f"inputs in {source} contain NaN or inf; clean or impute them first")
        return cls(torch.from_numpy(x), torch.from_numpy(_labels_to_pm1(y, source)))

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def head(self, n: int) -> "Dataset":
        if n < 0:
            raise TypicalnetsError(f"asked for n = {n} examples; n must be >= 0")
        if n > self.n:
            raise TypicalnetsError(f"asked for n = {n} examples but the data has only {self.n}; lower n or add data")
        return Dataset(self.x[:n], self.y[:n])

    def save_npz(self, path: str | os.PathLike) -> None:
        np.savez(Path(path), x=self.x.numpy(), y=self.y.numpy())

    @classmethod
    def load_npz(cls, path: str | os.PathLike) -> "Dataset":
        path = Path(path)
        if not path.is_file():
            raise TypicalnetsError(f"data file {path} does not exist; give the path of an .npz holding x and y")
        try:
            with np.load(path, allow_pickle=False) as archive:
                if "x" not in archive.files or "y" not in archive.files:
                    raise TypicalnetsError(
                        f"{path} holds arrays {archive.files}, not x and y; save it with np.savez(path, x=..., y=...)"
                    )
                x, y = archive["x"], archive["y"]
        except TypicalnetsError:
            raise
        except (OSError, ValueError, TypeError, zipfile.BadZipFile, EOFError) as exc:
            raise TypicalnetsError(f"cannot read {path} as an .npz file ({type(exc).__name__}); re-create it with np.savez") from None
        return cls.from_arrays(x, y, source=str(path))


def sample_inputs(kind: str, n: int, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """n i.i.d. inputs: standard Gaussian, uniform on [-1, 1]^d, or uniform on the Boolean cube {-1, +1}^d."""
    size = (n, *shape)
    if kind == "gaussian":
        return torch.randn(size, generator=generator)
    if kind == "uniform":
        return 2.0 * torch.rand(size, generator=generator) - 1.0
    if kind == "boolean":
        return 2.0 * torch.randint(0, 2, size, generator=generator).float() - 1.0
    raise TypicalnetsError(f"unknown input distribution {kind!r}; use one of {', '.join(INPUT_KINDS)}")


def boolean_cube(d: int) -> torch.Tensor:
    """All 2^d points of {-1, +1}^d, shape (2^d, d), in binary counting order."""
    bits = (torch.arange(2**d).unsqueeze(1) >> torch.arange(d - 1, -1, -1)) & 1
    return 2.0 * bits.float() - 1.0
