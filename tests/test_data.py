"""Datasets: validation, NPZ round trips and errors, Boolean cube, synthetic inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from typicalnets.data import INPUT_KINDS, Dataset, boolean_cube, sample_inputs
from typicalnets.errors import TypicalnetsError


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


X = np.arange(12, dtype=np.float64).reshape(4, 3)


# --------------------------------------------------------------------------- from_arrays


@pytest.mark.parametrize(
    "y",
    [
        [0, 1, 1, 0],
        np.array([0, 1, 1, 0], dtype=np.uint8),
        np.array([0.0, 1.0, 1.0, 0.0]),
        np.array([False, True, True, False]),
        [-1, 1, 1, -1],
        np.array([-1, 1, 1, -1], dtype=np.int8),
        np.array([-1.0, 1.0, 1.0, -1.0], dtype=np.float32),
    ],
    ids=["list01", "uint8", "float01", "bool", "listpm1", "int8pm1", "floatpm1"],
)
def test_from_arrays_binary_labels(y):
    data = Dataset.from_arrays(X, y)
    assert data.y.dtype == torch.int8
    assert data.y.tolist() == [-1, 1, 1, -1]
    assert data.x.dtype == torch.float32 and data.x.shape == (4, 3)
    assert torch.equal(data.x, torch.tensor(X, dtype=torch.float32))
    assert data.n == 4 and data.input_shape == (3,)


def test_from_arrays_single_class_labels():
    assert Dataset.from_arrays(X, [1, 1, 1, 1]).y.tolist() == [1, 1, 1, 1]
    assert Dataset.from_arrays(X, [-1, -1, -1, -1]).y.tolist() == [-1, -1, -1, -1]
    assert Dataset.from_arrays(X, [0, 0, 0, 0]).y.tolist() == [-1, -1, -1, -1]


def test_from_arrays_image_inputs_and_bool_inputs():
    x = np.zeros((5, 2, 3, 3))
    assert Dataset.from_arrays(x, [1, 0, 1, 0, 1]).input_shape == (2, 3, 3)
    xb = np.array([[True, False], [False, True]])
    assert Dataset.from_arrays(xb, [1, 0]).x.tolist() == [[1.0, 0.0], [0.0, 1.0]]


@pytest.mark.parametrize(
    "y",
    [
        [0, 1, 2, 1],  # three classes
        [-1, 0, 1, 1],  # mixes the two conventions
        [0.5, 1, 1, 0],
        [1, 2, 1, 2],
        [np.nan, 1, 1, 0],
        ["a", "b", "a", "b"],
        np.array([[0], [1], [1], [0]]),  # 2-D labels
        np.array([None, 1, 1, 0], dtype=object),
    ],
    ids=["three", "mixed", "half", "1-2", "nan", "str", "2d", "object"],
)
def test_from_arrays_rejects_non_binary_labels(y):
    with pytest.raises(TypicalnetsError):
        Dataset.from_arrays(X, y)


@pytest.mark.parametrize(
    "x",
    [
        np.array([[0.0, np.nan], [1.0, 2.0]]),
        np.array([[0.0, np.inf], [1.0, 2.0]]),
        np.array([[0.0, -np.inf], [1.0, 2.0]]),
        np.array([[0.0, 1e300], [1.0, 2.0]]),  # finite in float64, inf in float32
        np.array([1.0, 2.0]),  # 1-D
        np.array(3.0),  # 0-D
        np.array([["a", "b"], ["c", "d"]]),
    ],
    ids=["nan", "inf", "-inf", "overflow", "1d", "0d", "str"],
)
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_from_arrays_rejects_bad_inputs(x):
    with pytest.raises(TypicalnetsError):
        Dataset.from_arrays(x, [0, 1])


@pytest.mark.parametrize("n_labels", [3, 5, 0])
def test_from_arrays_rejects_mismatched_lengths(n_labels):
    with pytest.raises(TypicalnetsError):
        Dataset.from_arrays(X, [1] * n_labels)


def test_dataset_constructor_validates():
    with pytest.raises(TypicalnetsError):
        Dataset(torch.zeros(4), torch.ones(4, dtype=torch.int8))
    with pytest.raises(TypicalnetsError):
        Dataset(torch.zeros(4, 2), torch.ones(3, dtype=torch.int8))
    with pytest.raises(TypicalnetsError):
        Dataset(torch.tensor([[0.0, float("nan")]]), torch.ones(1, dtype=torch.int8))


# --------------------------------------------------------------------------- head


def test_head():
    data = Dataset.from_arrays(X, [0, 1, 1, 0])
    two = data.head(2)
    assert two.n == 2 and torch.equal(two.x, data.x[:2]) and torch.equal(two.y, data.y[:2])
    assert data.head(4).n == 4
    assert data.head(0).n == 0
    for n in (5, 100):
        with pytest.raises(TypicalnetsError):
            data.head(n)


def test_head_negative_raises():
    data = Dataset.from_arrays(X, [0, 1, 1, 0])
    with pytest.raises(TypicalnetsError):
        data.head(-1)


# --------------------------------------------------------------------------- NPZ


@pytest.mark.parametrize("shape", [(6, 3), (5, 2, 4), (4, 1, 3, 3)])
def test_npz_round_trip(tmp_path, shape):
    g = gen(0)
    x = torch.randn(shape, generator=g)
    y = torch.where(torch.rand(shape[0], generator=g) < 0.5, -1, 1).to(torch.int8)
    data = Dataset(x, y)
    path = tmp_path / "d.npz"
    data.save_npz(path)
    loaded = Dataset.load_npz(path)
    assert torch.equal(loaded.x, data.x) and torch.equal(loaded.y, data.y)
    assert loaded.x.dtype == torch.float32 and loaded.y.dtype == torch.int8


def test_load_npz_converts_01_labels(tmp_path):
    np.savez(tmp_path / "d.npz", x=X, y=np.array([1, 0, 0, 1]))
    assert Dataset.load_npz(tmp_path / "d.npz").y.tolist() == [1, -1, -1, 1]
    # and str paths work too
    assert Dataset.load_npz(str(tmp_path / "d.npz")).n == 4


def test_load_npz_missing(tmp_path):
    with pytest.raises(TypicalnetsError):
        Dataset.load_npz(tmp_path / "missing.npz")
    with pytest.raises(TypicalnetsError):
        Dataset.load_npz(tmp_path)  # a directory


@pytest.mark.parametrize("seed", range(3))
def test_load_npz_corrupt_random_bytes(tmp_path, seed):
    path = tmp_path / "bad.npz"
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, 500, dtype=np.uint8).tobytes())
    with pytest.raises(TypicalnetsError):
        Dataset.load_npz(path)


def test_load_npz_corrupt_zip_and_empty(tmp_path):
    np.savez(tmp_path / "good.npz", x=X, y=np.array([1, 0, 0, 1]))
    raw = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])  # starts like a zip, truncated
    with pytest.raises(TypicalnetsError):
        Dataset.load_npz(tmp_path / "cut.npz")
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(TypicalnetsError):
        Dataset.load_npz(tmp_path / "empty.npz")
    (tmp_path / "text.npz").write_text("x,y\n1,2\n")
    with pytest.raises(TypicalnetsError):
        Dataset.load_npz(tmp_path / "text.npz")


@pytest.mark.parametrize(
    "arrays",
    [dict(x=X), dict(y=np.array([1, 0, 0, 1])), dict(inputs=X, labels=np.array([1, 0, 0, 1])), dict()],
    ids=["only-x", "only-y", "other-names", "nothing"],
)
def test_load_npz_lacking_x_or_y(tmp_path, arrays):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(TypicalnetsError):
        Dataset.load_npz(tmp_path / "d.npz")


def test_load_npz_validates_contents(tmp_path):
    np.savez(tmp_path / "a.npz", x=X, y=np.array([1, 2, 1, 2]))
    with pytest.raises(TypicalnetsError):
        Dataset.load_npz(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", x=np.array([1.0, np.nan]), y=np.array([1, 0]))
    with pytest.raises(TypicalnetsError):
        Dataset.load_npz(tmp_path / "b.npz")
    np.savez(tmp_path / "c.npz", x=np.array([[1.0], [2.0]], dtype=object), y=np.array([1, 0]))  # needs pickle
    with pytest.raises(TypicalnetsError):
        Dataset.load_npz(tmp_path / "c.npz")


def test_load_npz_given_an_npy_file(tmp_path):
    np.save(tmp_path / "d.npy", X)
    with pytest.raises(TypicalnetsError):
        Dataset.load_npz(tmp_path / "d.npy")


# --------------------------------------------------------------------------- synthetic inputs


@pytest.mark.parametrize("d", [0, 1, 2, 3, 6, 10])
def test_boolean_cube(d):
    cube = boolean_cube(d)
    assert cube.shape == (2**d, d) and cube.dtype == torch.float32
    assert set(cube.unique().tolist()) <= {-1.0, 1.0}
    assert len({tuple(row) for row in cube.tolist()}) == 2**d  # all distinct, hence all of them
    if d:
        # binary counting order: first point all -1, last all +1, last coordinate alternates
        assert (cube[0] == -1).all() and (cube[-1] == 1).all()
        assert cube[:, -1].tolist() == [-1.0, 1.0] * 2 ** (d - 1)


def test_boolean_cube_explicit():
    assert boolean_cube(2).tolist() == [[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]]


@pytest.mark.parametrize("shape", [(5,), (2, 7), (1, 3, 4)])
def test_sample_inputs_kinds(shape):
    n = 20_000
    size = math.prod(shape) * n
    for kind in INPUT_KINDS:
        x = sample_inputs(kind, n, shape, gen(1))
        assert x.shape == (n, *shape) and x.dtype == torch.float32
        assert torch.equal(x, sample_inputs(kind, n, shape, gen(1)))  # reproducible
        assert not torch.equal(x, sample_inputs(kind, n, shape, gen(2)))
        mean, second = x.double().mean().item(), x.double().pow(2).mean().item()
        # all three kinds are centred; sd of the mean is sqrt(E[x^2] / size) <= 1/sqrt(size):
        # allow 5 sd. Second moments: 1 (gaussian, boolean), 1/3 (uniform), within 0.02.
        assert abs(mean) < 5 / math.sqrt(size)
        if kind == "gaussian":
            assert abs(second - 1.0) < 0.02
        elif kind == "uniform":
            assert x.min() >= -1.0 and x.max() <= 1.0 and abs(second - 1 / 3) < 0.02
        else:
            assert set(x.unique().tolist()) == {-1.0, 1.0}


def test_sample_inputs_zero_and_unknown():
    assert sample_inputs("gaussian", 0, (3,), gen(0)).shape == (0, 3)
    for kind in ("normal", "Gaussian", "", "bernoulli"):
        with pytest.raises(TypicalnetsError):
            sample_inputs(kind, 5, (3,), gen(0))
    assert INPUT_KINDS == ("gaussian", "uniform", "boolean")
