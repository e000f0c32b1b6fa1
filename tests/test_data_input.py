"""Bad user data: every case ends in one "problem; fix" TypicalnetsError, with no warning and no huge allocation.

Lying .npz headers are made by editing the header text of a tiny real file, so no test allocates more than bytes.
"""

from __future__ import annotations

import ast
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from typicalnets import data as data_module
from typicalnets.data import Dataset, load_binary_task, load_labelled
from typicalnets.errors import TypicalnetsError

pytestmark = pytest.mark.filterwarnings("error")  # a RuntimeWarning or ComplexWarning on the way is a failure too

X = np.arange(8, dtype=np.float64).reshape(4, 2)
Y01 = np.array([0, 1, 0, 1])


def one_line_error(call, *needles: str) -> str:
    """Run call, expect a one-line "problem; fix" TypicalnetsError naming every needle."""
    with pytest.raises(TypicalnetsError) as excinfo:
        call()
    message = str(excinfo.value)
    assert "\n" not in message and "; " in message and message.split("; ", 1)[1].strip(), message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


def both_npz_loaders(path: Path):
    """The two ways a user's .npz is read: as a binary Dataset, and as a multi-class source."""
    return [lambda: Dataset.load_npz(path), lambda: load_labelled(path)]


def rewrite_npy_header(path: Path, name: str, old: str, new: str) -> None:
    """Replace old with new in the .npy header of member name, keeping the header's length and the data as they are.

    The header ends in space padding and a newline; the padding shrinks or grows by what the edit adds or removes.
    """
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    raw = members[f"{name}.npy"]
    header_end = raw.index(b"\n", 10) + 1  # past the magic and the length field
    header = raw[:header_end].replace(old.encode(), new.encode())
    growth = len(header) - header_end
    assert header[-1 - max(growth, 0) : -1].strip(b" ") == b"", "not enough padding to absorb the edit"
    header = header[: -1 - growth] + b"\n" if growth > 0 else header[:-1] + b" " * -growth + b"\n"
    members[f"{name}.npy"] = header + raw[header_end:]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for filename, content in members.items():
            archive.writestr(filename, content)


# --------------------------------------------------------------------------- .npz headers checked before loading


def test_rewrite_npy_header_keeps_a_loadable_file(tmp_path):
    np.savez(tmp_path / "d.npz", x=X, y=Y01)
    rewrite_npy_header(tmp_path / "d.npz", "x", "(4, 2)", "(4, 1, 2)")
    assert Dataset.load_npz(tmp_path / "d.npz").input_shape == (1, 2)
    rewrite_npy_header(tmp_path / "d.npz", "x", "(4, 1, 2)", "(4, 2)")
    assert torch.equal(Dataset.load_npz(tmp_path / "d.npz").x, torch.from_numpy(X.astype(np.float32)))


@pytest.mark.parametrize(
    "claimed", ["(100000000000, 4)", "(5, 2)", "(-4, -2)"], ids=["terabytes", "one-row-more", "negative"]
)
def test_npz_header_claiming_more_than_the_file_holds(tmp_path, claimed):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 2)), y=Y01)
    rewrite_npy_header(tmp_path / "d.npz", "x", "(4, 2)", claimed)
    assert (tmp_path / "d.npz").stat().st_size < 1000
    for load in both_npz_loaders(tmp_path / "d.npz"):
        one_line_error(load, "array x in", claimed, "truncated or corrupt", "np.savez")


def test_npz_header_claiming_another_dtype(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 2)), y=Y01)
    rewrite_npy_header(tmp_path / "d.npz", "x", "'<f8'", "'<f4'")  # half the bytes the member holds
    for load in both_npz_loaders(tmp_path / "d.npz"):
        one_line_error(load, "float32", "truncated or corrupt")


@pytest.mark.parametrize(
    "x",
    [np.array([[1.0], [2.0], [3.0], [4.0]], dtype=object), np.zeros(4, dtype=[("a", "<f8")]), np.array([["a"]] * 4)],
    ids=["object", "structured", "str"],
)
def test_npz_arrays_that_are_not_numbers(tmp_path, x):
    np.savez(tmp_path / "d.npz", x=x, y=Y01)
    for load in both_npz_loaders(tmp_path / "d.npz"):
        one_line_error(load, "array x in", "not numbers")


def test_npz_header_rewritten_to_object(tmp_path):
    np.savez(tmp_path / "d.npz", x=X, y=Y01)
    rewrite_npy_header(tmp_path / "d.npz", "y", "'<i8'", "'|O'")
    for load in both_npz_loaders(tmp_path / "d.npz"):
        one_line_error(load, "array y in", "object", "not numbers")


def test_npz_bigger_than_memory(tmp_path, monkeypatch):
    np.savez(tmp_path / "d.npz", x=X, y=Y01)
    monkeypatch.setattr(data_module, "available_memory", lambda: 32)  # x is 64 bytes
    for load in both_npz_loaders(tmp_path / "d.npz"):
        one_line_error(load, "array x in", "GiB of memory but this machine has", "subset")


def test_npz_arrays_not_read_are_not_checked(tmp_path):
    np.savez(tmp_path / "d.npz", x=X, y=Y01, notes=np.array(["free text"]))
    assert Dataset.load_npz(tmp_path / "d.npz").n == 4
    assert load_labelled(tmp_path / "d.npz").labels_train.tolist() == Y01.tolist()


def test_compressed_npz_still_loads(tmp_path):
    np.savez_compressed(tmp_path / "d.npz", x=X, y=Y01)
    assert torch.equal(Dataset.load_npz(tmp_path / "d.npz").x, torch.from_numpy(X.astype(np.float32)))
    assert load_labelled(tmp_path / "d.npz").x_train.tolist() == X.tolist()


# --------------------------------------------------------------------------- inputs


def user_data_callers(tmp_path: Path, x, y):
    """Every loader of user data, each given x and y: arrays, then .npz files read both ways."""
    np.savez(tmp_path / "d.npz", x=x, y=y)
    return [lambda: Dataset.from_arrays(x, y), *both_npz_loaders(tmp_path / "d.npz")]


@pytest.mark.parametrize("value", [1e39, -1e39])
def test_inputs_beyond_float32_are_refused_without_warnings(tmp_path, value):
    x = np.array([[0.0, value], [1.0, 2.0]])
    for call in user_data_callers(tmp_path, x, [0, 1]):
        one_line_error(call, "exceed float32's range (largest |x| = 1e+39); rescale them")


def test_inputs_at_float32_max_are_accepted():
    largest = float(np.finfo(np.float32).max)
    assert Dataset.from_arrays(np.array([[largest], [-largest]]), [0, 1]).x.abs().max().item() == largest


@pytest.mark.parametrize("standardize", ["global", "feature"])
def test_large_float32_inputs_standardise_without_overflow(tmp_path, standardize):
    x = np.array([[-3e38], [3e38], [1e38], [-1e38]], dtype=np.float32)  # their squares overflow float32
    np.savez(tmp_path / "d.npz", x=x, y=Y01)
    train = load_binary_task(tmp_path / "d.npz", (0, 1), 2, standardize=standardize).train.x
    assert torch.isfinite(train).all() and (train.std(0) > 0.5).all()


def test_csv_inputs_beyond_float32(tmp_path):
    (tmp_path / "d.csv").write_text("1e39,0\n2,1\n")
    one_line_error(lambda: load_labelled(tmp_path / "d.csv"), "d.csv", "float32's range")


def test_complex_inputs_are_refused(tmp_path):
    x = X + 1j
    for call in user_data_callers(tmp_path, x, Y01):
        one_line_error(call, "complex", "real")


@pytest.mark.parametrize("shape", [(0, 3), (0, 1, 2, 2)])
def test_no_examples(tmp_path, shape):
    for call in user_data_callers(tmp_path, np.zeros(shape), np.zeros(0, np.int64)):
        one_line_error(call, "no examples; give at least one example")


def test_empty_datasets_stay_constructible_inside_the_library():
    data = Dataset.from_arrays(X, Y01)
    assert data.head(0).n == 0 and Dataset(data.x[:0], data.y[:0]).input_shape == (2,)


def test_empty_test_split_is_allowed(tmp_path):
    np.savez(tmp_path / "d.npz", x=X, y=Y01, x_test=np.zeros((0, 2)), y_test=np.zeros(0, np.int64))
    assert load_labelled(tmp_path / "d.npz").x_test.shape == (0, 2)


@pytest.mark.parametrize("shape", [(4, 0), (4, 3, 0)])
def test_no_features(tmp_path, shape):
    for call in user_data_callers(tmp_path, np.zeros(shape), Y01):
        one_line_error(call, "no features", "at least one")


# --------------------------------------------------------------------------- labels


@pytest.mark.parametrize(
    "y, needles",
    [
        (np.array([np.nan, 1, 0, 1]), ["NaN or inf", "{-1, +1} or {0, 1}"]),
        (np.array([np.inf, 1, 0, 1]), ["NaN or inf"]),
        (np.array([0.5, 1, 0, 1]), ["not binary", "0.5"]),
        (np.array([0, 1, 0]), ["4 inputs but 3 labels", "one label per input"]),
        (np.array([0, 1, 0, 1, 1]), ["4 inputs but 5 labels"]),
        (np.array(["0", "1", "0", "1"]), ["dtype <U1"]),
        (np.array([b"0", b"1", b"0", b"1"]), ["dtype |S1"]),
        (np.array([0, 1, 0, 1]) + 0j, ["complex128"]),
        (np.array([0, 1, 0, 1], dtype=object), ["object"]),
        (np.array([[0, 1, 0, 1]]), ["1-D"]),
    ],
    ids=["nan", "inf", "half", "short", "long", "str", "bytes", "complex", "object", "2d"],
)
def test_binary_label_errors(y, needles):
    one_line_error(lambda: Dataset.from_arrays(X, y, source="the test data"), "the test data", *needles)


def test_bool_labels_are_zero_one():
    assert Dataset.from_arrays(X, np.array([False, True, False, True])).y.tolist() == [-1, 1, -1, 1]


@pytest.mark.parametrize(
    "y, needles",
    [
        (np.array([np.nan, 1, 0, 1]), ["got nan"]),
        (np.array([0.5, 1, 0, 1]), ["got 0.5"]),
        (np.array([1e300, 1, 0, 1]), ["got 1e+300"]),  # would warn when cast to int64
        (np.array([0, 1, 0, 1]) + 1j, ["complex128"]),
        (np.array(["a", "b", "a", "b"]), ["not numbers"]),  # refused from the .npz header
    ],
    ids=["nan", "half", "huge", "complex", "str"],
)
def test_class_id_errors(tmp_path, y, needles):
    np.savez(tmp_path / "d.npz", x=X, y=y)
    one_line_error(lambda: load_binary_task(tmp_path / "d.npz", (0, 1), 1), "d.npz", *needles)


# --------------------------------------------------------------------------- every message


def test_every_message_in_data_py_is_problem_then_fix():
    """Each TypicalnetsError raised in data.py has "; " and a fix after it in the literal text of its message."""
    tree = ast.parse(Path(data_module.__file__).read_text())
    messages = [
        node.exc.args[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Raise)
        and isinstance(node.exc, ast.Call)
        and getattr(node.exc.func, "id", None) == "TypicalnetsError"
    ]
    assert messages
    for message in messages:
        parts = message.values if isinstance(message, ast.JoinedStr) else [message]
        text = "".join(part.value if isinstance(part, ast.Constant) else "{}" for part in parts)
        assert "\n" not in text and "; " in text and text.split("; ", 1)[1].strip(), ast.unparse(message)
        assert "--data-dir" not in text or "data_dir" in text, ast.unparse(message)  # library code names its parameter
