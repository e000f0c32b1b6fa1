"""Binary datasets: validation, NPZ files, synthetic inputs, and offline image data sets.

A ``Dataset`` holds inputs ``x`` (float32, shape (n, *input_shape)) and labels ``y`` (int8 in
{-1, +1}). NPZ files hold arrays ``x`` and ``y``; labels in {0, 1} are read with 0 as -1.

``load_binary_task`` cuts a two-class task out of a multi-class source (scikit-learn's digits,
Fashion-MNIST, MNIST, CIFAR-10, or the user's NPZ/CSV file) without any network access; see its
docstring for the split, label, sampling and standardisation decisions.
"""

from __future__ import annotations

import csv
import gzip
import math
import os
import pickle
import tarfile
import warnings
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import numpy as np
import torch

from typicalnets.errors import TypicalnetsError
from typicalnets.resources import available_memory

INPUT_KINDS = ("gaussian", "uniform", "boolean")
_REAL_KINDS = "biuf"  # numpy dtype kinds of bool, signed and unsigned integer, and real floating-point arrays


def _labels_to_pm1(y: Any, source: str) -> np.ndarray:
    y = np.asarray(y)
    fix = "use {-1, +1} or {0, 1}"  # the labels a binary Dataset accepts
    if y.ndim != 1:
        raise TypicalnetsError(f"labels in {source} must be a 1-D array, got shape {y.shape}; store y as shape (n,)")
    if y.dtype.kind not in _REAL_KINDS:  # complex too: casting it to int8 would drop the imaginary part
        raise TypicalnetsError(f"labels in {source} must be real numbers, got dtype {y.dtype}; {fix}")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise TypicalnetsError(f"labels in {source} contain NaN or inf; give every example a label, and {fix}")
    values = set(np.unique(y).tolist())
    if values <= {-1, 1}:
        return y.astype(np.int8)
    if values <= {0, 1}:
        return np.where(y.astype(np.int8) == 0, -1, 1).astype(np.int8)
    shown = sorted(values)[:5]
    more = "..." if len(values) > 5 else ""
    raise TypicalnetsError(f"labels in {source} are not binary (values {shown}{more}); {fix}")


def check_inputs(x: Any, n_labels: int, source: str, *, may_be_empty: bool = False) -> np.ndarray:
    """x as an array, after refusing what no network can take; every check runs in x's own dtype, so no cast warns.

    may_be_empty allows zero examples, which a test split may have but training data may not.
    """
    x = np.asarray(x)
    if x.dtype.kind == "c":
        raise TypicalnetsError(
            f"inputs in {source} are complex ({x.dtype}), and a network takes real numbers; "
            "store real inputs, e.g. the real and imaginary parts as separate features"
        )
    if x.dtype.kind not in _REAL_KINDS:
        raise TypicalnetsError(f"inputs in {source} must be numeric, got dtype {x.dtype}; store numbers")
    if x.ndim < 2:
        raise TypicalnetsError(
            f"inputs in {source} must have shape (n, d) or (n, c, h, w), got {x.shape}; add a feature axis"
        )
    if math.prod(x.shape[1:]) == 0:
        raise TypicalnetsError(
            f"inputs in {source} have shape {x.shape}, so no features; give each example at least one"
        )
    if len(x) != n_labels:
        raise TypicalnetsError(f"{source} has {len(x)} inputs but {n_labels} labels; give one label per input")
    if len(x) == 0 and not may_be_empty:
        raise TypicalnetsError(f"inputs in {source} have no examples; give at least one example")
    if x.dtype.kind == "f" and x.size:  # an empty array has no largest value
        if not np.isfinite(x).all():
            raise TypicalnetsError(f"inputs in {source} contain NaN or inf; clean or impute them first")
        largest = np.abs(x).max()
        if largest > np.finfo(np.float32).max:  # the networks compute in float32, where these would become inf
            raise TypicalnetsError(
                f"inputs in {source} exceed float32's range (largest |x| = {largest:.3g}); rescale them"
            )
    return x


@dataclass(frozen=True)
class Dataset:
    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.ndim < 2:
            raise TypicalnetsError(
                f"inputs must have shape (n, d) or (n, c, ...), got {tuple(self.x.shape)}; add a feature axis"
            )
        if self.x.shape[0] != self.y.shape[0]:
            raise TypicalnetsError(f"{self.x.shape[0]} inputs but {self.y.shape[0]} labels; give one label per input")
        if not torch.isfinite(self.x).all():
            raise TypicalnetsError("inputs contain NaN or inf; clean or impute them before sampling")

    @classmethod
    def from_arrays(cls, x, y, source: str = "the data") -> Dataset:
        """Validated user data: x numeric of shape (n, d) or (n, c, ...) with n >= 1, y in {-1, +1} or {0, 1}."""
        y = _labels_to_pm1(y, source)
        x = check_inputs(x, len(y), source)
        return cls(torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y))

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def head(self, n: int) -> Dataset:
        if n < 0:
            raise TypicalnetsError(f"asked for n = {n} examples; n must be >= 0")
        if n > self.n:
            raise TypicalnetsError(f"asked for n = {n} examples but the data has only {self.n}; lower n or add data")
        return Dataset(self.x[:n], self.y[:n])

    def save_npz(self, path: str | os.PathLike) -> None:
        np.savez(Path(path), x=self.x.numpy(), y=self.y.numpy())

    @classmethod
    def load_npz(cls, path: str | os.PathLike) -> Dataset:
        path = Path(path)
        if not path.is_file():
            raise TypicalnetsError(f"data file {path} does not exist; give the path of an .npz holding x and y")
        arrays, stored = _read_npz(path, ("x", "y"))
        if "x" not in arrays or "y" not in arrays:
            raise TypicalnetsError(
                f"{path} holds arrays {stored}, not x and y; save it with np.savez(path, x=..., y=...)"
            )
        return cls.from_arrays(arrays["x"], arrays["y"], source=str(path))


def class_interleaved_order(y: torch.Tensor) -> torch.Tensor:
    """Example indices alternating the labels (+1, -1, +1, ...), then the rest of the larger class."""
    positive = torch.nonzero(y > 0).flatten()
    negative = torch.nonzero(y <= 0).flatten()
    pairs = min(len(positive), len(negative))
    head = torch.stack([positive[:pairs], negative[:pairs]], 1).flatten()
    return torch.cat([head, positive[pairs:], negative[pairs:]])


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


# --------------------------------------------------------------------------- offline data sets

SOURCES = ("digits", "fashion-mnist", "mnist", "cifar10")
STANDARDIZATIONS = ("none", "global", "feature")
# Where the Debian package dataset-fashion-mnist installs the four gzipped IDX files.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
# "feature" divides by at least this fraction of the pool's overall std, so a pixel that is constant
# in training (MNIST's borders) does not divide by zero and no feature is scaled up more than 100
# times as much as "global" would scale it.
FEATURE_STD_FLOOR = 1e-2

MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
FASHION_MNIST_URL = "https://github.com/zalandoresearch/fashion-mnist"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"

# split -> (images, labels): the names every MNIST-format distribution uses, read with or without .gz
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_BATCH = "test_batch"

CLASS_NAMES = {
    "digits": tuple(str(digit) for digit in range(10)),
    "mnist": tuple(str(digit) for digit in range(10)),
    "fashion-mnist": (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
}
_SOURCE_ALIASES = {"fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist", "cifar-10": "cifar10"}
_CSV_LABEL_COLUMNS = ("label", "y")  # header names that mark the label column; otherwise it is the last


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


@dataclass(frozen=True)
class LabelledData:
    """A multi-class source before a binary task is cut from it.

    ``x_train`` and ``x_test`` keep the stored values (uint8 pixels for the image sets, which saves
    memory); dividing by ``value_max`` maps them to [0, 1] (255 for pixels, 16 for digits, 1 for user
    arrays, which are used as given). Labels are int64 class ids, the keys of ``class_names``. A
    source without a test split has empty test arrays.
    """

    source: str
    x_train: np.ndarray
    labels_train: np.ndarray
    x_test: np.ndarray
    labels_test: np.ndarray
    class_names: dict[int, str]
    value_max: float


@dataclass(frozen=True)
class Standardization:
    """How stored inputs become network inputs: ``(raw / value_max - mean) / std``.

    ``mean`` and ``std`` are 0-d for "none" (0 and 1) and "global" (one scalar each) and have the
    input shape for "feature". Both are fitted on every training example of the task's two classes,
    never on the test split, so they depend neither on the seed nor on n_per_class.
    """

    kind: str
    value_max: float
    mean: np.ndarray
    std: np.ndarray

    def apply(self, raw: np.ndarray) -> np.ndarray:
        return ((raw / self.value_max - self.mean) / self.std).astype(np.float32)


@dataclass(frozen=True)
class BinaryTask:
    """A two-class task: train and test ``Dataset``s plus what describes and reproduces them.

    ``classes[0]`` is labelled +1 and ``classes[1]`` is -1. ``train`` alternates the classes
    (+1, -1, +1, ...), so every even-length prefix is balanced; ``test`` is every test example of
    the two classes, in the source's order.
    """

    train: Dataset
    test: Dataset
    source: str
    classes: tuple[int, int]
    class_names: tuple[str, str]
    n_per_class: int
    seed: int
    standardization: Standardization

    def info(self) -> dict[str, Any]:
        """JSON-ready metadata; per-feature mean and std arrays stay on ``standardization``."""
        info: dict[str, Any] = {
            "source": self.source,
            "classes": list(self.classes),
            "class_names": list(self.class_names),
            "n_per_class": self.n_per_class,
            "n_train": self.train.n,
            "n_test": self.test.n,
            "input_shape": list(self.train.input_shape),
            "seed": self.seed,
            "standardize": self.standardization.kind,
            "value_max": self.standardization.value_max,
        }
        if self.standardization.mean.ndim == 0:
            info["mean"] = float(self.standardization.mean)
            info["std"] = float(self.standardization.std)
        return info


def load_binary_task(
    source: str | os.PathLike,
    classes: Sequence[int | str] | str | None = None,
    n_per_class: int | None = None,
    *,
    seed: int = 0,
    standardize: str = "global",
    flatten: bool = False,
    data_dir: str | os.PathLike | None = None,
) -> BinaryTask:
    """A binary task from an offline source, reproducible from its arguments alone.

    source: "digits", "fashion-mnist", "mnist", "cifar10" (see ``load_labelled`` for where each is
    read from and how digits is split) or the path of an .npz or .csv file.

    classes: a pair (a, b) of class ids or names (case-insensitive, e.g. ("T-shirt/top", "Trouser"))
    or the string "a,b". Class a is labelled +1 and class b is -1. It may be left out only when the
    source has exactly two classes; then the larger id is +1, as with 0 -> -1 in ``Dataset``.

    n_per_class: training examples drawn from each class, without replacement, from the training
    split; None takes the largest balanced number. A numpy PCG64 generator seeded with ``seed``
    permutes all of class a's training examples, then all of class b's, and the first n_per_class of
    each are kept, so a task is a prefix of the same seed's task with a larger n_per_class. The
    training set interleaves them a, b, a, b, ... so that the first k examples are balanced.

    standardize: "none" (stored values over value_max: pixels in [0, 1], user arrays as given),
    "global" (subtract the mean and divide by the std of every value of the training split of the
    two classes, one scalar each) or "feature" (the same per input feature, std floored at
    FEATURE_STD_FLOOR times the global std). The test set never enters these constants.

    flatten: reshape inputs (n, C, H, W) to (n, C*H*W) for fully connected networks; images are
    otherwise (n, C, H, W): 1x28x28 (MNIST, Fashion-MNIST), 3x32x32 (CIFAR-10), 1x8x8 (digits).
    """
    if standardize not in STANDARDIZATIONS:
        raise TypicalnetsError(f"unknown standardisation {standardize!r}; use one of {', '.join(STANDARDIZATIONS)}")
    if not _is_int(seed) or seed < 0:
        raise TypicalnetsError(f"seed must be a non-negative integer, got {seed!r}; pass e.g. seed=0")
    data = load_labelled(source, data_dir)
    positive, negative = _resolve_classes(classes, data)
    pools = [np.flatnonzero(data.labels_train == class_id) for class_id in (positive, negative)]
    n = _check_n_per_class(n_per_class, pools, data, (positive, negative))

    rng = np.random.default_rng(seed)
    drawn = [rng.permutation(pool)[:n] for pool in pools]
    order = np.empty(2 * n, dtype=np.int64)
    order[0::2], order[1::2] = drawn
    in_test = np.flatnonzero(np.isin(data.labels_test, (positive, negative)))
    standardization = _fit_standardization(
        standardize,
        data.x_train[np.concatenate(pools)],
        data.value_max,
        f"classes {positive} and {negative} of {data.source}",
    )

    def binary_dataset(raw: np.ndarray, labels: np.ndarray) -> Dataset:
        x = standardization.apply(raw)
        if flatten:
            x = x.reshape(len(x), math.prod(x.shape[1:]))
        y = np.where(labels == positive, 1, -1).astype(np.int8)
        return Dataset(torch.from_numpy(x), torch.from_numpy(y))

    return BinaryTask(
        train=binary_dataset(data.x_train[order], data.labels_train[order]),
        test=binary_dataset(data.x_test[in_test], data.labels_test[in_test]),
        source=data.source,
        classes=(positive, negative),
        class_names=(data.class_names[positive], data.class_names[negative]),
        n_per_class=n,
        seed=int(seed),
        standardization=standardization,
    )


def _class_menu(data: LabelledData) -> str:
    entries = [name if name == str(cid) else f"{cid} ({name})" for cid, name in sorted(data.class_names.items())]
    return ", ".join(entries[:12]) + (", ..." if len(entries) > 12 else "")


def _resolve_class(spec: Any, data: LabelledData) -> int:
    if _is_int(spec):
        class_id = int(spec)
    elif isinstance(spec, str):
        by_name = {name.lower(): cid for cid, name in data.class_names.items()}
        if spec.strip().lower() in by_name:
            return by_name[spec.strip().lower()]
        try:
            class_id = int(spec)
        except ValueError:
            raise TypicalnetsError(f"{data.source} has no class {spec!r}; use one of {_class_menu(data)}") from None
    else:
        raise TypicalnetsError(f"a class is an integer id or a name, got {spec!r}; use one of {_class_menu(data)}")
    if class_id not in data.class_names:
        raise TypicalnetsError(f"class {class_id} is out of range for {data.source}; use one of {_class_menu(data)}")
    return class_id


def _resolve_classes(classes: Any, data: LabelledData) -> tuple[int, int]:
    if classes is None:
        if len(data.class_names) != 2:
            raise TypicalnetsError(
                f"{data.source} has {len(data.class_names)} classes; pick two with classes=(a, b) "
                f"(--classes A,B) from {_class_menu(data)}"
            )
        negative, positive = sorted(data.class_names)
        return positive, negative
    pair = classes.split(",") if isinstance(classes, str) else classes
    try:
        pair = tuple(pair)
    except TypeError:
        pair = (classes,)
    if len(pair) != 2:
        raise TypicalnetsError(f"classes must be a pair (a, b), got {classes!r}; pick two of {_class_menu(data)}")
    positive, negative = (_resolve_class(spec, data) for spec in pair)
    if positive == negative:
        raise TypicalnetsError(
            f"both classes are {positive} ({data.class_names[positive]}); pick two different classes"
        )
    return positive, negative


def _check_n_per_class(n_per_class: Any, pools: list[np.ndarray], data: LabelledData, classes: tuple[int, int]) -> int:
    available = min(len(pool) for pool in pools)
    if n_per_class is None:
        return available
    if not _is_int(n_per_class) or n_per_class < 1:
        raise TypicalnetsError(f"n_per_class must be a positive integer, got {n_per_class!r}; ask for at least 1")
    for class_id, pool in zip(classes, pools):
        if len(pool) < n_per_class:
            raise TypicalnetsError(
                f"asked for n_per_class = {n_per_class} but class {class_id} ({data.class_names[class_id]}) "
                f"has only {len(pool)} training examples in {data.source}; lower n_per_class to at most {available}"
            )
    return int(n_per_class)


def _fit_standardization(kind: str, pool: np.ndarray, value_max: float, what: str) -> Standardization:
    if kind == "none":
        return Standardization(kind, value_max, np.array(0.0), np.array(1.0))
    scaled = pool.astype(np.float64) / value_max  # float32 arithmetic would overflow squaring inputs above ~1e19
    overall_std = scaled.std()
    if overall_std == 0:
        raise TypicalnetsError(f"every training input value of {what} is the same; use standardize='none'")
    if kind == "global":
        return Standardization(kind, value_max, np.array(scaled.mean()), np.array(overall_std))
    std = np.maximum(scaled.std(axis=0), FEATURE_STD_FLOOR * overall_std)
    return Standardization(kind, value_max, scaled.mean(axis=0), std)


def load_labelled(source: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> LabelledData:
    """Load a multi-class source without touching the network.

    - "digits": scikit-learn's copy (1797 images, 1x8x8, values 0..16). It has no official split:
      the first 898 are the training split and the last 899 the test split, the order-based halves
      of train_test_split(test_size=0.5, shuffle=False) and of scikit-learn's digits example.
    - "fashion-mnist": the four IDX files (gzipped or not) in data_dir, by default in
      FASHION_MNIST_DIR where the Debian package dataset-fashion-mnist puts them.
    - "mnist": the four IDX files (gzipped or not) in data_dir, as distributed at MNIST_URL.
    - "cifar10": data_dir holding the python batches (data_batch_1..5, test_batch), their folder
      cifar-10-batches-py, or the archive cifar-10-python.tar.gz, which is read without extracting;
      data_dir may also be the archive itself.
    - an .npz file with integer labels: arrays x and y, optionally x_test and y_test (else no test split).
    - a .csv file: one example per comma-separated row of numbers. A first row holding anything but
      numbers is a header; the label column is the one named "label" or "y" there, else the last.
      Labels are integer class ids. A CSV has no test split.
    """
    if not isinstance(source, (str, os.PathLike)):
        raise TypicalnetsError(f"a data source is a name or a path, got {source!r}; use one of {', '.join(SOURCES)}")
    name = str(source).strip().lower()
    name = _SOURCE_ALIASES.get(name, name)
    if isinstance(source, str) and name in SOURCES:
        if name == "digits":
            if data_dir is not None:
                raise TypicalnetsError(
                    "digits ships with scikit-learn and reads no data directory; leave data_dir unset (drop --data-dir)"
                )
            return _load_digits()
        loader = {"fashion-mnist": _load_fashion_mnist, "mnist": _load_mnist, "cifar10": _load_cifar10}[name]
        return loader(None if data_dir is None else Path(data_dir))
    path = Path(source)
    if path.suffix.lower() not in (".npz", ".csv"):
        raise TypicalnetsError(
            f"unknown data source {str(source)!r}; use one of {', '.join(SOURCES)} or the path of an .npz or .csv file"
        )
    if data_dir is not None:
        raise TypicalnetsError(
            f"a data directory applies to {', '.join(SOURCES[1:])}, not to a file; "
            "leave data_dir unset (drop --data-dir)"
        )
    if not path.is_file():
        raise TypicalnetsError(f"data file {path} does not exist; give the path of an existing .npz or .csv file")
    return _load_npz_source(path) if path.suffix.lower() == ".npz" else _load_csv_source(path)


def _load_digits() -> LabelledData:
    from sklearn.datasets import (
        load_digits,  # imported here because scikit-learn is slow to import
    )

    digits = load_digits()
    images = digits.images.astype(np.uint8)[:, None]
    labels = digits.target.astype(np.int64)
    n_train = len(labels) // 2
    return LabelledData(
        "digits",
        images[:n_train],
        labels[:n_train],
        images[n_train:],
        labels[n_train:],
        dict(enumerate(CLASS_NAMES["digits"])),
        value_max=16.0,
    )


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An IDX file of unsigned bytes (MNIST's format), gzipped or not, as a read-only uint8 array.

    The header is big-endian: two zero bytes, the type code 0x08, the number of dimensions, then each
    dimension as a 4-byte unsigned integer (so the magic is 0x00000803 for images, 0x00000801 for labels).
    """
    path = Path(path)
    fix = "replace it with a fresh download"
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":  # gzip's magic: decompress whatever the file is called
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise TypicalnetsError(f"cannot read {path} ({type(exc).__name__}); {fix}") from None
    if len(raw) < 4 or raw[:2] != b"\0\0":
        raise TypicalnetsError(f"{path} is not an IDX file (magic 0x{raw[:4].hex() or 'missing'}); {fix}")
    type_code, ndim = raw[2], raw[3]
    if type_code != 0x08:
        raise TypicalnetsError(f"{path} holds IDX type 0x{type_code:02x}, not unsigned bytes (0x08); {fix}")
    header_size = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header_size:
        raise TypicalnetsError(f"{path} has a cut-off IDX header ({ndim} dimensions, {len(raw)} bytes); {fix}")
    shape = tuple(int(size) for size in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    if len(raw) - header_size != math.prod(shape):
        raise TypicalnetsError(
            f"{path} holds {len(raw) - header_size} data bytes but its header promises {math.prod(shape)} "
            f"(shape {shape}), so it is truncated or corrupt; {fix}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(shape)


def _find_idx_files(directory: Path) -> tuple[dict[str, Path], list[str]]:
    found, missing = {}, []
    for stem in (stem for pair in IDX_FILES.values() for stem in pair):
        path = next((p for p in (directory / f"{stem}.gz", directory / stem) if p.is_file()), None)
        if path is None:
            missing.append(stem)
        else:
            found[stem] = path
    return found, missing


def _read_mnist_format(source: str, paths: dict[str, Path]) -> LabelledData:
    splits = {}
    n_classes = len(CLASS_NAMES[source])
    for split, (images_stem, labels_stem) in IDX_FILES.items():
        images_path, labels_path = paths[images_stem], paths[labels_stem]
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.ndim != 3:
            raise TypicalnetsError(f"{images_path} holds shape {images.shape}, not images (n, rows, cols); replace it")
        if labels.ndim != 1:
            raise TypicalnetsError(f"{labels_path} holds shape {labels.shape}, not labels (n,); replace it")
        if len(images) != len(labels):
            raise TypicalnetsError(
                f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels; "
                "replace the file that does not belong"
            )
        if labels.size and labels.max() >= n_classes:
            raise TypicalnetsError(
                f"{labels_path} has label {labels.max()} but {source} has classes 0-{n_classes - 1}; replace it"
            )
        splits[split] = images[:, None], labels.astype(np.int64)
    (x_train, labels_train), (x_test, labels_test) = splits["train"], splits["test"]
    if x_train.shape[1:] != x_test.shape[1:]:
        raise TypicalnetsError(
            f"{source} training images are {x_train.shape[2:]} but test images are {x_test.shape[2:]}; "
            "replace the files that do not belong"
        )
    return LabelledData(source, x_train, labels_train, x_test, labels_test, dict(enumerate(CLASS_NAMES[source])), 255.0)


def _load_fashion_mnist(data_dir: Path | None) -> LabelledData:
    directory = FASHION_MNIST_DIR if data_dir is None else data_dir
    paths, missing = _find_idx_files(directory)
    if missing and data_dir is None:
        raise TypicalnetsError(
            f"Fashion-MNIST not found in {directory} (no {missing[0]}[.gz]); install the Debian package "
            "dataset-fashion-mnist (apt install dataset-fashion-mnist) or pass data_dir (--data-dir on the command "
            "line), a folder with the four IDX files"
        )
    if missing:
        raise TypicalnetsError(
            f"Fashion-MNIST not found in {directory} (no {missing[0]}[.gz]); put the four IDX files there, from "
            f"{FASHION_MNIST_URL} or the Debian package dataset-fashion-mnist ({FASHION_MNIST_DIR})"
        )
    return _read_mnist_format("fashion-mnist", paths)


def _load_mnist(data_dir: Path | None) -> LabelledData:
    if data_dir is None:
        raise TypicalnetsError(
            f"MNIST needs a data directory; download the four IDX .gz files from {MNIST_URL} "
            "(or yann.lecun.com/exdb/mnist) and pass their folder as data_dir (--data-dir on the command line)"
        )
    paths, missing = _find_idx_files(data_dir)
    if missing:
        raise TypicalnetsError(
            f"MNIST not found in {data_dir} (no {missing[0]}[.gz]); "
            f"download the four IDX .gz files from {MNIST_URL} into it"
        )
    return _read_mnist_format("mnist", paths)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers only: loading any other global could run code."""

    ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.numeric", "_frombuffer"),
            ("numpy._core.numeric", "_frombuffer"),
            ("_codecs", "encode"),  # how Python 3 pickles bytes at protocol 2
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _read_cifar_batch(handle: BinaryIO, where: str) -> tuple[np.ndarray, np.ndarray]:
    """One python batch: a dict with b"data", uint8 (n, 3072) rows of red, green, blue 32x32 planes, and b"labels"."""
    fix = f"replace it with a fresh copy from {CIFAR10_URL}"
    try:
        batch = _ArrayUnpickler(handle, encoding="bytes").load()
    except Exception as exc:  # a corrupt pickle fails in many ways, all meaning the same to the user
        raise TypicalnetsError(f"cannot unpickle {where} ({type(exc).__name__}); {fix}") from None
    if not isinstance(batch, dict):
        raise TypicalnetsError(f"{where} holds a {type(batch).__name__}, not a CIFAR-10 batch dict; {fix}")
    data = batch.get(b"data", batch.get("data"))
    labels = np.asarray(batch.get(b"labels", batch.get("labels")))
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072):
        raise TypicalnetsError(f"{where} has no uint8 data array of shape (n, 3072); {fix}")
    if (
        labels.shape != (len(data),)
        or not np.issubdtype(labels.dtype, np.integer)
        or (labels.size and not 0 <= labels.min() <= labels.max() < 10)
    ):
        raise TypicalnetsError(f"{where} lacks {len(data)} labels in 0-9; {fix}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _load_cifar10(data_dir: Path | None) -> LabelledData:
    get_it = (
        f"download {CIFAR10_URL} and pass data_dir (--data-dir on the command line), "
        f"the archive or a folder holding it or its extracted {CIFAR10_FOLDER}"
    )
    if data_dir is None:
        raise TypicalnetsError(f"CIFAR-10 needs a data directory; {get_it}")
    names = (*CIFAR10_TRAIN_BATCHES, CIFAR10_TEST_BATCH)
    batches: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    folder = next((f for f in (data_dir, data_dir / CIFAR10_FOLDER) if (f / CIFAR10_TRAIN_BATCHES[0]).is_file()), None)
    archive = data_dir if data_dir.is_file() else data_dir / CIFAR10_ARCHIVE
    if folder is not None:
        for name in names:
            if not (folder / name).is_file():
                raise TypicalnetsError(f"CIFAR-10 in {folder} lacks {name}; extract all of {CIFAR10_ARCHIVE} there")
            with open(folder / name, "rb") as handle:
                batches[name] = _read_cifar_batch(handle, str(folder / name))
    elif archive.is_file():
        try:
            with tarfile.open(archive) as tar:
                # One pass in archive order: seeking back in a .tar.gz would decompress it again.
                for member in tar:
                    name = Path(member.name).name
                    if member.isfile() and name in names and name not in batches:
                        batches[name] = _read_cifar_batch(tar.extractfile(member), f"{archive}:{member.name}")
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise TypicalnetsError(
                f"cannot read {archive} as a tar archive ({type(exc).__name__}); download it again from {CIFAR10_URL}"
            ) from None
        missing = [name for name in names if name not in batches]
        if missing:
            raise TypicalnetsError(
                f"{archive} lacks {CIFAR10_FOLDER}/{missing[0]}; download it again from {CIFAR10_URL}"
            )
    else:
        raise TypicalnetsError(f"CIFAR-10 not found in {data_dir}; {get_it}")
    x_train = np.concatenate([batches[name][0] for name in CIFAR10_TRAIN_BATCHES])
    labels_train = np.concatenate([batches[name][1] for name in CIFAR10_TRAIN_BATCHES])
    x_test, labels_test = batches[CIFAR10_TEST_BATCH]
    class_names = dict(enumerate(CLASS_NAMES["cifar10"]))
    return LabelledData("cifar10", x_train, labels_train, x_test, labels_test, class_names, 255.0)


def _class_ids(labels: Any, source: str) -> np.ndarray:
    labels = np.asarray(labels)
    fix = "store classes as integers like 0, 1, 2"
    if labels.ndim != 1:
        raise TypicalnetsError(
            f"labels in {source} must be a 1-D array, got shape {labels.shape}; store them as shape (n,)"
        )
    if labels.dtype.kind not in _REAL_KINDS:  # complex too: casting it to int64 would drop the imaginary part
        raise TypicalnetsError(f"labels in {source} must be integer class ids, got dtype {labels.dtype}; {fix}")
    if labels.dtype.kind == "f":
        # int64 holds |id| < 2**63; casting NaN, inf or anything beyond would warn and give garbage
        whole = np.isfinite(labels) & (labels == np.round(labels)) & (np.abs(labels) < 2**63)
        if not whole.all():
            raise TypicalnetsError(f"labels in {source} must be integer class ids, got {labels[~whole][0]}; {fix}")
    return labels.astype(np.int64)


def _user_data(source: str, x: Any, y: Any, x_test: Any = None, y_test: Any = None) -> LabelledData:
    labels_train = _class_ids(y, source)
    x_train = check_inputs(x, len(labels_train), source)
    if x_test is None:
        x_test, labels_test = np.empty((0, *x_train.shape[1:]), x_train.dtype), np.empty(0, np.int64)
    else:
        labels_test = _class_ids(y_test, f"{source} (y_test)")
        x_test = check_inputs(x_test, len(labels_test), f"{source} (x_test)", may_be_empty=True)
        if x_test.shape[1:] != x_train.shape[1:]:
            raise TypicalnetsError(
                f"x_test in {source} has inputs of shape {x_test.shape[1:]} but x has {x_train.shape[1:]}; "
                "make them match"
            )
    class_names = {int(cid): str(int(cid)) for cid in np.unique(labels_train)}
    return LabelledData(source, x_train, labels_train, x_test, labels_test, class_names, 1.0)


# Readers of the .npy header versions a numeric array is saved in (3.0 exists only for UTF-8 field names).
_NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _check_npy_header(stream: BinaryIO, member_size: int, what: str) -> None:
    """Refuse an .npz member from its .npy header alone, before numpy allocates what the header claims."""
    fix = "re-create the file with np.savez from numeric arrays"
    version = np.lib.format.read_magic(stream)
    if version not in _NPY_HEADER_READERS:
        raise TypicalnetsError(f"{what} is in .npy format version {version}, which holds no numeric array; {fix}")
    shape, _, dtype = _NPY_HEADER_READERS[version](stream)
    if dtype.kind not in _REAL_KINDS + "c":  # complex is refused later, with its own message
        raise TypicalnetsError(f"{what} has dtype {dtype}, not numbers or booleans; {fix}")
    data_size = math.prod(shape) * dtype.itemsize
    stored_size = member_size - stream.tell()
    if min(shape, default=0) < 0 or data_size != stored_size:
        raise TypicalnetsError(
            f"{what} claims shape {shape} of {dtype} ({data_size} bytes) but holds {stored_size} bytes, "
            f"so the file is truncated or corrupt; {fix}"
        )
    memory = available_memory()
    if data_size > memory:
        raise TypicalnetsError(
            f"{what} has shape {shape} of {dtype}, which needs {data_size / 2**30:.3g} GiB of memory but this "
            f"machine has {memory / 2**30:.3g} GiB; use a subset of the data or a machine with more memory"
        )


def _read_npz(path: Path, names: Sequence[str]) -> tuple[dict[str, np.ndarray], list[str]]:
    """Those of the arrays called names that the .npz file at path holds, and the names of all it holds.

    np.load trusts each .npy header, so a few hundred bytes claiming shape (10**11, 4) would have it try to
    allocate terabytes: every array read is first checked from its header, against its member's size and memory.
    Arrays not named are never read.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}  # as np.load names them
            arrays = {}
            for name in (name for name in names if name in members):
                with archive.open(members[name]) as stream:
                    _check_npy_header(stream, members[name].file_size, f"array {name} in {path}")
                    stream.seek(0)
                    arrays[name] = np.lib.format.read_array(stream, allow_pickle=False)
    except TypicalnetsError:
        raise
    except (OSError, ValueError, TypeError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise TypicalnetsError(
            f"cannot read {path} as an .npz file ({type(exc).__name__}); re-create it with np.savez"
        ) from None
    return arrays, list(members)


def _load_npz_source(path: Path) -> LabelledData:
    arrays, stored = _read_npz(path, ("x", "y", "x_test", "y_test"))
    if "x" not in arrays or "y" not in arrays or ("x_test" in arrays) != ("y_test" in arrays):
        raise TypicalnetsError(
            f"{path} holds arrays {sorted(stored)}; save x and y, and x_test with y_test or neither, "
            "with np.savez(path, x=..., y=..., x_test=..., y_test=...)"
        )
    return _user_data(str(path), arrays["x"], arrays["y"], arrays.get("x_test"), arrays.get("y_test"))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _load_csv_source(path: Path) -> LabelledData:
    fix = 'give one example per row of comma-separated numbers, the label last or in a column named "label"'
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            first_row = next(csv.reader(handle), None)
        has_header = first_row is not None and not all(_is_number(field) for field in first_row)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # loadtxt warns on a file with no data rows
            table = np.loadtxt(
                path,
                delimiter=",",
                skiprows=int(has_header),
                ndmin=2,
                dtype=np.float64,
                quotechar='"',
                encoding="utf-8",
            )
    except (OSError, ValueError, csv.Error) as exc:  # UnicodeDecodeError is a ValueError
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TypicalnetsError(f"cannot read {path} as CSV ({reason}); {fix}") from None
    if table.shape[0] == 0:
        raise TypicalnetsError(f"{path} has no data rows; {fix}")
    if table.shape[1] < 2:
        raise TypicalnetsError(f"{path} has {table.shape[1]} column, so no room for inputs and a label; {fix}")
    label_column = table.shape[1] - 1
    if has_header:
        header = [field.strip().lower() for field in first_row]
        label_column = next((header.index(name) for name in _CSV_LABEL_COLUMNS if name in header), label_column)
    return _user_data(str(path), np.delete(table, label_column, axis=1), table[:, label_column])


def require_both_classes(data: Dataset, source: str) -> None:
    """Refuse a training set whose labels are all one class: every constant network interpolates
    it, so its typical interpolators say nothing about the data. The command line (``sample``) and
    the estimator (``fit``) both refuse such a training set."""
    if data.n and bool((data.y == data.y[0]).all()):
        label = "+1" if int(data.y[0]) > 0 else "-1"
        raise TypicalnetsError(
            f"every label in {source} is {label}, so any constant network interpolates it; "
            "give training examples of both classes"
        )
