"""Offline data sets: IDX, CIFAR-10 pickles, NPZ, CSV, digits, and the binary tasks cut from them.

Every loader reads tiny files written here, except digits, which ships with scikit-learn.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from test_data_input import one_line_error

from typicalnets import data as data_module
from typicalnets.data import (
    CIFAR10_URL,
    MNIST_URL,
    BinaryTask,
    load_binary_task,
    load_labelled,
    read_idx,
)

ROWS, COLS = 5, 4  # not square, so a rows/cols mix-up shows


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    raw = idx_bytes(array)
    if gz:
        path = path.with_name(path.name + ".gz")
        raw = gzip.compress(raw)
    path.write_bytes(raw)


def labelled_images(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose first pixel is their index (unique while there are under 256), labels shuffled 0-9."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.tile(np.arange(10), n_per_class)).astype(np.uint8)
    images = rng.integers(0, 256, (len(labels), ROWS, COLS), dtype=np.uint8)
    images[:, 0, 0] = np.arange(len(labels))
    return images, labels


def write_mnist_dir(directory: Path, gz: bool = True) -> dict[str, np.ndarray]:
    directory.mkdir(parents=True, exist_ok=True)
    train_images, train_labels = labelled_images(12, seed=1)
    test_images, test_labels = labelled_images(3, seed=2)
    for name, array in [
        ("train-images-idx3-ubyte", train_images),
        ("train-labels-idx1-ubyte", train_labels),
        ("t10k-images-idx3-ubyte", test_images),
        ("t10k-labels-idx1-ubyte", test_labels),
    ]:
        write_idx(directory / name, array, gz)
    return dict(train_images=train_images, train_labels=train_labels, test_images=test_images, test_labels=test_labels)


@pytest.fixture
def mnist_dir(tmp_path) -> Path:
    write_mnist_dir(tmp_path / "mnist")
    return tmp_path / "mnist"


# --------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "plain"])
def test_read_idx_round_trip(tmp_path, gz):
    images = np.arange(2 * 3 * 300, dtype=np.int64).reshape(2, 3, 300) % 256  # a dimension over 255
    labels = np.array([7, 0, 255])
    write_idx(tmp_path / "images", images, gz)
    write_idx(tmp_path / "labels", labels, gz)
    suffix = ".gz" if gz else ""
    assert np.array_equal(read_idx(tmp_path / f"images{suffix}"), images)
    loaded = read_idx(str(tmp_path / f"labels{suffix}"))
    assert loaded.dtype == np.uint8 and loaded.tolist() == [7, 0, 255]


GOOD_IDX = idx_bytes(np.arange(12).reshape(3, 4))


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\x00",
        b"\x01\x02\x08\x01" + GOOD_IDX[4:],  # bad magic
        b"%PDF-1.4 not an idx file",
        GOOD_IDX[:2] + b"\x0d" + GOOD_IDX[3:],  # float data
        GOOD_IDX[:3] + b"\x00",  # no dimensions
        GOOD_IDX[:6],  # header cut off
        GOOD_IDX[:-1],  # truncated data
        GOOD_IDX + b"\x00",  # extra data
        gzip.compress(GOOD_IDX)[:20],  # truncated gzip
        b"\x1f\x8b" + b"garbage" * 10,  # corrupt gzip
        gzip.compress(b"\x00\x00\x08\x03" + GOOD_IDX[4:]),  # gzip of a header that lies about the size
    ],
    ids=[
        "empty",
        "short",
        "magic",
        "text",
        "type",
        "0-d",
        "cut-header",
        "truncated",
        "extra",
        "cut-gz",
        "bad-gz",
        "gz-lies",
    ],
)
def test_read_idx_rejects_corrupt_files(tmp_path, raw):
    path = tmp_path / "file-idx"
    path.write_bytes(raw)
    one_line_error(lambda: read_idx(path), str(path), "replace it")


def test_read_idx_missing_file(tmp_path):
    one_line_error(lambda: read_idx(tmp_path / "nothing"), "nothing")


# --------------------------------------------------------------------------- MNIST and Fashion-MNIST


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "plain"])
def test_mnist_task_shapes_labels_and_test_set(tmp_path, gz):
    arrays = write_mnist_dir(tmp_path, gz=gz)
    task = load_binary_task("mnist", (3, 8), 5, seed=0, standardize="none", data_dir=tmp_path)
    assert isinstance(task, BinaryTask)
    assert task.train.x.shape == (10, 1, ROWS, COLS) and task.train.x.dtype == torch.float32
    assert task.train.y.dtype == torch.int8 and task.train.y.tolist() == [1, -1] * 5
    assert task.classes == (3, 8) and task.class_names == ("3", "8") and task.source == "mnist"
    # "none" maps pixels to [0, 1]; the first pixel tells which stored image each example is
    train_index = torch.round(task.train.x[:, 0, 0, 0] * 255).long().numpy()
    assert len(set(train_index.tolist())) == 10  # drawn without replacement
    assert arrays["train_labels"][train_index].tolist() == [3, 8] * 5
    assert torch.equal(task.train.x[:, 0], torch.from_numpy(arrays["train_images"][train_index] / np.float32(255)))
    # the test set is every test image of the two classes, in file order
    wanted = np.flatnonzero(np.isin(arrays["test_labels"], (3, 8)))
    assert task.test.n == len(wanted) == 6
    assert torch.equal(task.test.x[:, 0], torch.from_numpy(arrays["test_images"][wanted] / np.float32(255)))
    assert task.test.y.tolist() == np.where(arrays["test_labels"][wanted] == 3, 1, -1).tolist()


def test_mnist_mixed_gz_and_plain_files(tmp_path):
    write_mnist_dir(tmp_path)
    plain = tmp_path / "t10k-labels-idx1-ubyte"
    plain.write_bytes(gzip.decompress((tmp_path / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    assert load_labelled("mnist", tmp_path).x_test.shape == (30, 1, ROWS, COLS)


def test_flatten(mnist_dir):
    flat = load_binary_task("mnist", (0, 1), 4, flatten=True, data_dir=mnist_dir)
    image = load_binary_task("mnist", (0, 1), 4, data_dir=mnist_dir)
    assert flat.train.x.shape == (8, ROWS * COLS) and flat.test.x.shape == (6, ROWS * COLS)
    assert torch.equal(flat.train.x, image.train.x.reshape(8, -1))
    assert flat.info()["input_shape"] == [ROWS * COLS]


def test_seeds_are_deterministic_and_nested(mnist_dir):
    def train_x(seed, n):
        return load_binary_task("mnist", (2, 5), n, seed=seed, data_dir=mnist_dir).train.x

    assert torch.equal(train_x(7, 6), train_x(7, 6))
    assert not torch.equal(train_x(7, 6), train_x(8, 6))
    # a smaller n_per_class is a prefix of a larger one with the same seed
    assert torch.equal(train_x(7, 4), train_x(7, 12)[:8])


def test_pinned_draw(mnist_dir):
    """The draw depends only on numpy's PCG64 stream: pin it so a change shows."""
    task = load_binary_task("mnist", (2, 5), 3, seed=0, standardize="none", data_dir=mnist_dir)
    expected = np.empty(6, dtype=np.int64)
    rng = np.random.default_rng(0)
    _, labels = labelled_images(12, seed=1)  # as write_mnist_dir made them
    expected[0::2] = rng.permutation(np.flatnonzero(labels == 2))[:3]
    expected[1::2] = rng.permutation(np.flatnonzero(labels == 5))[:3]
    assert torch.round(task.train.x[:, 0, 0, 0] * 255).long().tolist() == expected.tolist()


def test_n_per_class_none_takes_everything(mnist_dir):
    task = load_binary_task("mnist", (4, 9), None, data_dir=mnist_dir)
    assert task.n_per_class == 12 and task.train.n == 24


def test_global_standardisation(mnist_dir):
    task = load_binary_task("mnist", (1, 6), None, data_dir=mnist_dir)
    x = task.train.x.double()
    assert abs(x.mean().item()) < 1e-6 and abs(x.std(unbiased=False).item() - 1) < 1e-6
    info = task.info()
    raw = load_labelled("mnist", mnist_dir)
    pool = raw.x_train[np.isin(raw.labels_train, (1, 6))] / 255.0
    assert info["mean"] == pytest.approx(pool.mean()) and info["std"] == pytest.approx(pool.std())
    assert info["standardize"] == "global" and info["value_max"] == 255.0
    # constants come from the whole training pool, whatever the seed and n_per_class
    small = load_binary_task("mnist", (1, 6), 2, seed=3, data_dir=mnist_dir)
    assert small.info()["mean"] == info["mean"] and small.info()["std"] == info["std"]
    test_pixels = torch.from_numpy(raw.x_test[np.isin(raw.labels_test, (1, 6))] / 255.0)
    assert torch.allclose(task.test.x.double(), (test_pixels - info["mean"]) / info["std"], atol=1e-5)


def test_standardisation_ignores_the_test_set(tmp_path):
    write_mnist_dir(tmp_path)
    before = load_binary_task("mnist", (0, 1), 3, data_dir=tmp_path).info()
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.full((30, ROWS, COLS), 255), gz=True)
    after = load_binary_task("mnist", (0, 1), 3, data_dir=tmp_path).info()
    assert before["mean"] == after["mean"] and before["std"] == after["std"]


def test_feature_standardisation(tmp_path):
    arrays = write_mnist_dir(tmp_path)
    arrays["train_images"][:, 1, 1] = 40  # a constant pixel in training...
    write_idx(tmp_path / "train-images-idx3-ubyte", arrays["train_images"], gz=True)
    task = load_binary_task("mnist", (0, 7), None, standardize="feature", data_dir=tmp_path)
    x = task.train.x.double()
    varying = torch.ones(ROWS, COLS, dtype=torch.bool)
    varying[1, 1] = False
    assert torch.allclose(x.mean(0)[0][varying], torch.zeros(()).double(), atol=1e-6)
    assert torch.allclose(x.std(0, unbiased=False)[0][varying], torch.ones(()).double(), atol=1e-6)
    assert x[:, 0, 1, 1].abs().max() < 1e-9  # ...is centred and divided by the floor, not by zero
    assert torch.isfinite(task.test.x).all()
    std = task.standardization.std
    raw = load_labelled("mnist", tmp_path)
    pool = raw.x_train[np.isin(raw.labels_train, (0, 7))] / 255.0
    assert std.shape == (1, ROWS, COLS) and std[0, 1, 1] == pytest.approx(data_module.FEATURE_STD_FLOOR * pool.std())
    assert "mean" not in task.info() and task.info()["standardize"] == "feature"


def test_standardize_none_keeps_pixels_in_unit_interval(mnist_dir):
    task = load_binary_task("mnist", (0, 1), 5, standardize="none", data_dir=mnist_dir)
    assert task.train.x.min() >= 0 and task.train.x.max() <= 1
    assert task.info()["mean"] == 0.0 and task.info()["std"] == 1.0


def test_fashion_mnist_default_dir_and_class_names(tmp_path, monkeypatch):
    write_mnist_dir(tmp_path / "fashion")
    monkeypatch.setattr(data_module, "FASHION_MNIST_DIR", tmp_path / "fashion")
    task = load_binary_task("fashion-mnist", ("t-shirt/top", "Ankle boot"), 3)
    assert task.classes == (0, 9) and task.class_names == ("T-shirt/top", "Ankle boot")
    assert load_binary_task("Fashion_MNIST", "Trouser,2", 3).classes == (1, 2)
    assert load_binary_task("fashion-mnist", (1, 2), 3, data_dir=tmp_path / "fashion").classes == (1, 2)


def test_fashion_mnist_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(data_module, "FASHION_MNIST_DIR", tmp_path / "absent")
    one_line_error(
        lambda: load_binary_task("fashion-mnist", (0, 1), 3),
        "Fashion-MNIST not found",
        str(tmp_path / "absent"),
        "apt install dataset-fashion-mnist",
        "--data-dir",
    )
    write_mnist_dir(tmp_path / "partial")
    (tmp_path / "partial" / "t10k-images-idx3-ubyte.gz").unlink()
    one_line_error(
        lambda: load_binary_task("fashion-mnist", (0, 1), 3, data_dir=tmp_path / "partial"),
        "t10k-images-idx3-ubyte",
        "github.com/zalandoresearch",
    )


@pytest.mark.skipif(
    not (data_module.FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason="the Debian package dataset-fashion-mnist is not installed",
)
def test_real_fashion_mnist_from_the_debian_package():
    task = load_binary_task("fashion-mnist", ("Sneaker", "Bag"), 50)
    assert task.train.x.shape == (100, 1, 28, 28) and task.test.n == 2000


def test_mnist_missing(tmp_path):
    one_line_error(lambda: load_binary_task("mnist", (0, 1), 3), MNIST_URL, "--data-dir")
    one_line_error(lambda: load_binary_task("mnist", (0, 1), 3, data_dir=tmp_path / "absent"), MNIST_URL, "absent")


@pytest.mark.parametrize(
    "damage",
    ["labels-as-images", "images-as-labels", "count-mismatch", "label-too-big", "shape-mismatch", "corrupt"],
)
def test_mnist_inconsistent_files(tmp_path, damage):
    arrays = write_mnist_dir(tmp_path)
    if damage == "labels-as-images":
        write_idx(tmp_path / "train-images-idx3-ubyte", arrays["train_labels"], gz=True)
    elif damage == "images-as-labels":
        write_idx(tmp_path / "t10k-labels-idx1-ubyte", arrays["test_images"], gz=True)
    elif damage == "count-mismatch":
        write_idx(tmp_path / "train-labels-idx1-ubyte", arrays["train_labels"][:-1], gz=True)
    elif damage == "label-too-big":
        write_idx(tmp_path / "t10k-labels-idx1-ubyte", arrays["test_labels"] + 5, gz=True)
    elif damage == "shape-mismatch":
        write_idx(tmp_path / "t10k-images-idx3-ubyte", arrays["test_images"][:, :, :-1], gz=True)
    else:
        (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"\x00\x00\x08\x03garbage")
    one_line_error(lambda: load_binary_task("mnist", (0, 1), 3, data_dir=tmp_path), "replace")


# --------------------------------------------------------------------------- CIFAR-10


def cifar_batch(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    return {b"batch_label": b"tiny", b"data": data, b"labels": [int(v) for v in np.arange(n) % 10], b"filenames": []}


CIFAR_BATCHES = {f"data_batch_{i}": cifar_batch(10, i) for i in range(1, 6)} | {"test_batch": cifar_batch(20, 9)}


def write_cifar_folder(folder: Path, batches: dict = CIFAR_BATCHES) -> Path:
    folder.mkdir(parents=True)
    for name, batch in batches.items():
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    return folder


def write_cifar_archive(path: Path, batches: dict = CIFAR_BATCHES) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, batch in batches.items():
            raw = pickle.dumps(batch, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


@pytest.mark.parametrize("layout", ["batches", "parent", "archive-in-dir", "archive"])
def test_cifar10_layouts(tmp_path, layout):
    if layout == "batches":
        data_dir = write_cifar_folder(tmp_path / "cifar-10-batches-py")
    elif layout == "parent":
        write_cifar_folder(tmp_path / "cifar-10-batches-py")
        data_dir = tmp_path
    elif layout == "archive-in-dir":
        write_cifar_archive(tmp_path / "cifar-10-python.tar.gz")
        data_dir = tmp_path
    else:
        data_dir = write_cifar_archive(tmp_path / "cifar-10-python.tar.gz")
    raw = load_labelled("cifar10", data_dir)
    assert raw.x_train.shape == (50, 3, 32, 32) and raw.x_test.shape == (20, 3, 32, 32)
    first = CIFAR_BATCHES["data_batch_1"][b"data"][0]
    # rows hold the red, green and blue 32x32 planes in turn
    assert np.array_equal(raw.x_train[0, 1], first[1024:2048].reshape(32, 32))
    assert np.array_equal(raw.x_train[10], CIFAR_BATCHES["data_batch_2"][b"data"][0].reshape(3, 32, 32))
    task = load_binary_task("cifar10", ("cat", "dog"), 5, data_dir=data_dir, flatten=True)
    assert task.classes == (3, 5) and task.class_names == ("cat", "dog")
    assert task.train.x.shape == (10, 3072) and task.test.n == 4


def test_cifar10_missing(tmp_path):
    one_line_error(lambda: load_binary_task("cifar10", (0, 1), 3), CIFAR10_URL, "--data-dir")
    one_line_error(lambda: load_binary_task("cifar10", (0, 1), 3, data_dir=tmp_path), CIFAR10_URL, str(tmp_path))
    folder = write_cifar_folder(tmp_path / "cifar-10-batches-py")
    (folder / "test_batch").unlink()
    one_line_error(lambda: load_labelled("cifar10", folder), "test_batch")


def test_cifar10_archive_lacking_a_batch_or_corrupt(tmp_path):
    partial = {name: batch for name, batch in CIFAR_BATCHES.items() if name != "data_batch_3"}
    archive = write_cifar_archive(tmp_path / "partial.tar.gz", partial)
    one_line_error(lambda: load_labelled("cifar10", archive), "data_batch_3", CIFAR10_URL)
    full = write_cifar_archive(tmp_path / "full.tar.gz").read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(full[: len(full) // 2])
    one_line_error(lambda: load_labelled("cifar10", cut), CIFAR10_URL)
    text = tmp_path / "text.tar.gz"
    text.write_text("not an archive")
    one_line_error(lambda: load_labelled("cifar10", text), CIFAR10_URL)


class Boom:
    """Unpickling this would call os.system: the loader must refuse it."""

    def __reduce__(self):
        return (os.system, ("echo unsafe",))


@pytest.mark.parametrize(
    "batch",
    [
        b"not a pickle",
        pickle.dumps([1, 2, 3]),
        pickle.dumps({b"data": np.zeros((2, 3071), np.uint8), b"labels": [0, 1]}),
        pickle.dumps({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}),
        pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}),
        pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}),
        pickle.dumps({b"labels": [0, 1]}),
        pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1], b"x": Boom()}),
    ],
    ids=["garbage", "list", "width", "float", "few-labels", "label-10", "no-data", "code"],
)
def test_cifar10_corrupt_batches(tmp_path, batch):
    folder = write_cifar_folder(tmp_path / "cifar-10-batches-py")
    (folder / "data_batch_4").write_bytes(batch)
    one_line_error(lambda: load_labelled("cifar10", folder), "data_batch_4", CIFAR10_URL)


def test_cifar10_accepts_str_keys(tmp_path):
    batches = {name: {key.decode(): value for key, value in batch.items()} for name, batch in CIFAR_BATCHES.items()}
    folder = write_cifar_folder(tmp_path / "cifar-10-batches-py", batches)
    assert load_labelled("cifar10", folder).labels_train.shape == (50,)


# --------------------------------------------------------------------------- digits


def test_digits_split_and_task():
    from sklearn.datasets import load_digits

    target = load_digits().target
    raw = load_labelled("digits")
    assert raw.x_train.shape == (898, 1, 8, 8) and raw.x_test.shape == (899, 1, 8, 8)
    assert raw.value_max == 16.0 and raw.labels_test.tolist() == target[898:].tolist()
    task = load_binary_task("digits", (3, 5), 20, seed=1)
    assert task.train.x.shape == (40, 1, 8, 8) and task.train.y.tolist() == [1, -1] * 20
    assert task.test.n == int(np.isin(target[898:], (3, 5)).sum())
    assert task.test.y.tolist() == np.where(target[898:][np.isin(target[898:], (3, 5))] == 3, 1, -1).tolist()
    assert load_binary_task("digits", (3, 5), 4, flatten=True).train.x.shape == (8, 64)


# --------------------------------------------------------------------------- user arrays


def test_npz_with_test_split(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 2, 3)), np.arange(30) % 3
    x_test, y_test = rng.normal(size=(9, 2, 3)), np.arange(9) % 3
    np.savez(tmp_path / "d.npz", x=x, y=y, x_test=x_test, y_test=y_test)
    task = load_binary_task(tmp_path / "d.npz", (2, 0), 4, standardize="none")
    assert task.train.x.shape == (8, 2, 3) and task.train.y.tolist() == [1, -1] * 4
    assert task.class_names == ("2", "0") and task.source == str(tmp_path / "d.npz")
    in_test = np.isin(y_test, (0, 2))
    assert torch.equal(task.test.x, torch.from_numpy(x_test[in_test].astype(np.float32)))
    assert task.test.y.tolist() == np.where(y_test[in_test] == 2, 1, -1).tolist()


@pytest.mark.parametrize("labels", [[0, 1], [-1, 1], [False, True], [0.0, 1.0]], ids=["01", "pm1", "bool", "float"])
def test_npz_binary_labels_need_no_classes(tmp_path, labels):
    y = np.array(labels * 5)
    np.savez(tmp_path / "d.npz", x=np.arange(20.0).reshape(10, 2), y=y)
    task = load_binary_task(str(tmp_path / "d.npz"), n_per_class=5)
    assert task.test.n == 0 and task.train.n == 10
    assert task.classes == (1, int(min(labels)))  # the larger label is +1, as in Dataset.from_arrays
    assert task.train.y.tolist() == [1, -1] * 5


@pytest.mark.parametrize(
    "arrays",
    [
        dict(x=np.zeros((4, 2))),
        dict(x=np.zeros((4, 2)), y=np.arange(4), x_test=np.zeros((2, 2))),
        dict(x=np.zeros((4, 2)), y=np.array(["a", "b", "a", "b"])),
        dict(x=np.zeros((4, 2)), y=np.array([0, 1, 0.5, 1])),
        dict(x=np.zeros((4, 2)), y=np.zeros((4, 1))),
        dict(x=np.zeros(4), y=np.arange(4)),
        dict(x=np.zeros((4, 2)), y=np.arange(3)),
        dict(x=np.array([[0.0, np.nan]] * 4), y=np.arange(4)),
        dict(x=np.array([["a", "b"]] * 4), y=np.arange(4)),
        dict(x=np.zeros((4, 2)), y=np.arange(4), x_test=np.zeros((2, 3)), y_test=np.arange(2)),
    ],
    ids=[
        "no-y",
        "x-test-alone",
        "str-labels",
        "half-label",
        "2d-labels",
        "1d-x",
        "lengths",
        "nan",
        "str-x",
        "test-shape",
    ],
)
def test_npz_errors(tmp_path, arrays):
    np.savez(tmp_path / "d.npz", **arrays)
    one_line_error(lambda: load_binary_task(tmp_path / "d.npz", (0, 1), 1), "d.npz")


def test_npz_unreadable(tmp_path):
    (tmp_path / "d.npz").write_bytes(b"not a zip")
    one_line_error(lambda: load_binary_task(tmp_path / "d.npz", (0, 1), 1), "np.savez")


@pytest.mark.parametrize(
    "text, x0",
    [
        ("1,2,0\n3,4,1\n5,6,0\n7,8,1\n", [1.0, 2.0]),
        ("a,b,target\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n", [1.0, 2.0]),
        ('"label","p0","p1"\n0,1,2\n1,3,4\n0,5,6\n1,7,8\n', [1.0, 2.0]),
        ("p0,Y,p1\n1,0,2\n3,1,4\n5,0,6\n7,1,8\n", [1.0, 2.0]),
        ("1.5,2e0,0.0\r\n3,4,1.0\r\n5,6,0\r\n7,8,1\r\n", [1.5, 2.0]),
    ],
    ids=["no-header", "header", "label-first", "y-middle", "floats-crlf"],
)
def test_csv(tmp_path, text, x0):
    (tmp_path / "d.csv").write_text(text)
    task = load_binary_task(tmp_path / "d.csv", (0, 1), 2, standardize="none")
    assert task.train.x.shape == (4, 2) and task.test.n == 0
    assert task.train.y.tolist() == [1, -1, 1, -1]
    assert sorted(task.train.x[task.train.y == 1].tolist()) == [x0, [5.0, 6.0]]  # the class 0 rows


@pytest.mark.parametrize(
    "text",
    [
        "",
        "a,b,label\n",
        "1,2,0\n3,4\n",
        "1,2,cat\n3,4,dog\n",
        "x,label\n1,cat\n2,dog\n",
        "1,2,0.5\n3,4,1\n",
        "0\n1\n",
        "1,nan,0\n3,4,1\n",
    ],
    ids=["empty", "header-only", "ragged", "str-labels", "str-labels-header", "half-label", "one-column", "nan"],
)
def test_csv_errors(tmp_path, text):
    (tmp_path / "d.csv").write_text(text)
    one_line_error(lambda: load_binary_task(tmp_path / "d.csv", (0, 1), 1), "d.csv")


# --------------------------------------------------------------------------- argument errors


@pytest.mark.parametrize(
    "kwargs, needles",
    [
        (dict(classes=(0, 10)), ["class 10 is out of range", "0, 1, 2"]),
        (dict(classes=(-1, 2)), ["out of range"]),
        (dict(classes=(4, 4)), ["different"]),
        (dict(classes=("4", 4)), ["different"]),
        (dict(classes=("zero", 1)), ["no class 'zero'"]),
        (dict(classes=(1.0, 2)), ["integer id or a name"]),
        (dict(classes=(True, 2)), ["integer id or a name"]),
        (dict(classes=(1, 2, 3)), ["pair"]),
        (dict(classes=7), ["pair"]),
        (dict(classes=None), ["10 classes", "--classes"]),
        (dict(n_per_class=13), ["n_per_class = 13", "at most 12"]),
        (dict(n_per_class=0), ["positive integer"]),
        (dict(n_per_class=2.0), ["positive integer"]),
        (dict(n_per_class=True), ["positive integer"]),
        (dict(seed=-1), ["seed"]),
        (dict(seed=1.5), ["seed"]),
        (dict(standardize="per-pixel"), ["none, global, feature"]),
    ],
    ids=lambda value: str(value) if isinstance(value, dict) else "",
)
def test_argument_errors(mnist_dir, kwargs, needles):
    arguments = dict(classes=(0, 1), n_per_class=3, data_dir=mnist_dir) | kwargs
    one_line_error(lambda: load_binary_task("mnist", **arguments), *needles)


def test_fashion_class_menu_names_classes(tmp_path):
    write_mnist_dir(tmp_path)
    one_line_error(lambda: load_binary_task("fashion-mnist", ("Hat", 1), 3, data_dir=tmp_path), "0 (T-shirt/top)")


@pytest.mark.parametrize(
    "source, data_dir, needles",
    [
        ("imagenet", None, ["unknown data source", "digits, fashion-mnist, mnist, cifar10", ".npz or .csv"]),
        ("data.txt", None, ["unknown data source"]),
        ("missing.npz", None, ["does not exist"]),
        ("missing.csv", None, ["does not exist"]),
        ("digits", "somewhere", ["drop --data-dir"]),
        ("d.npz", "somewhere", ["drop --data-dir"]),
        (3, None, ["name or a path"]),
    ],
)
def test_source_errors(tmp_path, monkeypatch, source, data_dir, needles):
    monkeypatch.chdir(tmp_path)
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 2)), y=np.array([0, 1]))
    one_line_error(lambda: load_binary_task(source, (0, 1), 1, data_dir=data_dir), *needles)


def test_constant_inputs_cannot_be_standardised(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.ones((4, 3)), y=np.array([0, 1, 0, 1]))
    one_line_error(lambda: load_binary_task(tmp_path / "d.npz", (0, 1), 2), "standardize='none'")
    assert load_binary_task(tmp_path / "d.npz", (0, 1), 2, standardize="none").train.x.unique().tolist() == [1.0]
