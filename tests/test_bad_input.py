"""The bad-input promise, one row per case: exit code 2, one line `error: <problem>; <fix>`, and
the output folder absent or unchanged (no staging folder left beside it).

Every row runs the command line in-process (``cli.main``) with cheap settings, so the whole table
takes seconds. Signals and concurrent runs need real processes: see ``test_output_safety.py``.
"""

from __future__ import annotations

import ast
import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from typicalnets.cli import main

X = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
Y = np.where(X[:, 0] + 0.5 * X[:, 1] > 0, 1, -1)
CUDA = torch.cuda.is_available()


def _lying_header(path: Path, claimed: str) -> None:
    """An .npz whose x header claims ``claimed`` as its shape (same header length, so still a zip)."""
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((2, 4), np.float32))
    raw = buffer.getvalue()
    header_end = raw.index(b"\n") + 1
    header = raw[:header_end].decode("latin1").replace("(2, 4)", claimed)
    header = header[: header_end - 1].ljust(header_end - 1) + "\n"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", header.encode("latin1") + raw[header_end:])
        buffer = io.BytesIO()
        np.save(buffer, np.array([1, -1]))
        archive.writestr("y.npy", buffer.getvalue())


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("inputs")
    np.savez(root / "good.npz", x=X, y=Y)
    np.savez(root / "test.npz", x=X[:8], y=Y[:8])
    np.savez(root / "zero.npz", x=np.zeros((0, 4), np.float32), y=np.zeros(0))
    np.savez(root / "one_class.npz", x=X, y=np.ones(16))
    np.savez(root / "three.npz", x=X[:3], y=np.array([0, 1, 2]))
    np.savez(root / "nan.npz", x=np.where(X > 1, np.nan, X), y=Y)
    np.savez(root / "complex.npz", x=X + 1j, y=Y)
    np.savez(root / "huge.npz", x=X.astype(np.float64) * 1e39, y=Y)
    np.savez(root / "scaled.npz", x=X * 1e30, y=Y)
    np.savez(root / "flat_x.npz", x=X[:, 0], y=Y)
    np.savez(root / "short_y.npz", x=X, y=Y[:5])
    np.savez(root / "wrong_names.npz", a=X, b=Y)
    np.savez(root / "images.npz", x=np.zeros((4, 1, 6, 6), np.float32), y=np.array([1, -1, 1, -1]))
    np.savez(root / "other_dim.npz", x=np.zeros((4, 5), np.float32), y=np.array([1, -1, 1, -1]))
    _lying_header(root / "lying.npz", "(100000000000, 4)")
    (root / "corrupt.npz").write_bytes(b"not a zip file")
    (root / "afile").write_text("a file, not a folder")
    (root / "mine.png").write_bytes(b"the user's own picture")
    (root / "bad.toml").write_text("n = [4, 8\n")
    (root / "count_true.toml").write_text("count = true\n")
    (root / "bias_yes.toml").write_text('bias = "yes"\n')
    (root / "unknown.toml").write_text("colour = 1\n")
    (root / "ok.toml").write_text("count = 2\n")
    (root / "seeds_huge.toml").write_text("seeds = [99999999999999999999]\n")
    foreign = root / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("my notes")
    return root


SAMPLE = [
    "sample",
    "--train",
    "{files}/good.npz",
    "--out",
    "{out}",
    "--no-progress",
    "--count",
    "2",
    "--max-draws",
    "20000",
    "--widths",
    "4",
]
RUN = [
    "run",
    "--out",
    "{out}",
    "--no-progress",
    "--n",
    "4",
    "--count",
    "2",
    "--methods",
    "gc:fcn",
    "--n-test",
    "50",
    "--max-draws",
    "20000",
    "--no-smc-fallback",
]
BOUND = ["bound", "--student-widths", "8", "--teacher-widths", "2", "--in-dim", "4"]

# (id, base command, extra arguments, phrase of the message); every row must exit 2.
CASES = [
    # sample: architectures, widths, priors
    ("arch-unknown", SAMPLE, ["--arch", "resnet"], "unknown architecture"),
    ("arch-lenet-on-flat", SAMPLE, ["--arch", "lenet"], "needs images"),
    ("arch-cnn-on-flat", SAMPLE, ["--arch", "cnn"], "needs inputs of shape"),
    ("arch-fcn-on-images", SAMPLE, ["--train", "{files}/images.npz"], "needs flat inputs"),
    ("widths-text", SAMPLE, ["--widths", "abc"], "comma-separated integers"),
    ("widths-empty", SAMPLE, ["--widths", ","], "is empty"),
    ("widths-zero", SAMPLE, ["--widths", "0"], "positive integers"),
    ("widths-overflow", SAMPLE, ["--widths", "100000000000"], "more than the 2,147,483,647"),
    ("widths-memory", SAMPLE, ["--widths", "1000000", "--count", "100000"], "GiB"),
    ("activation-unknown", SAMPLE, ["--activation", "gelu"], "unknown activation"),
    ("prior-unknown", SAMPLE, ["--prior", "laplace:1"], "unknown prior"),
    ("prior-q-even", SAMPLE, ["--prior", "quantized:4"], "odd Q"),
    ("prior-q-huge", SAMPLE, ["--prior", "quantized:1000000001"], "65,537"),
    ("prior-q-fraction", SAMPLE, ["--prior", "quantized:2.5"], "integer number of levels"),
    ("prior-levels-repeated", SAMPLE, ["--prior", "quantized:1,1,0"], "distinct"),
    ("prior-uniform-zero", SAMPLE, ["--prior", "uniform:0"], "half-width"),
    ("prior-gaussian-negative", SAMPLE, ["--prior", "gaussian:-1"], "sigma > 0"),
    ("prior-overflow-levels", SAMPLE, ["--prior", "quantized:-1e38,0,1e38", "--widths", "8"], "float32's range"),
    ("prior-overflow-torch", SAMPLE, ["--prior", "quantized:-1e38,0,1e38", "--engine", "torch"], "float32's range"),
    (
        "inputs-overflow",
        SAMPLE,
        ["--train", "{files}/scaled.npz", "--prior", "uniform:1e9", "--widths", "16"],
        "float32's range",
    ),
    # sample: data files
    ("train-missing", SAMPLE, ["--train", "{files}/missing.npz"], "does not exist"),
    ("train-corrupt", SAMPLE, ["--train", "{files}/corrupt.npz"], "cannot read"),
    ("train-no-rows", SAMPLE, ["--train", "{files}/zero.npz"], "no examples"),
    ("train-one-class", SAMPLE, ["--train", "{files}/one_class.npz"], "both classes"),
    ("train-one-class-prefix", SAMPLE, ["--n", "1"], "both classes"),
    ("train-three-classes", SAMPLE, ["--train", "{files}/three.npz"], "not binary"),
    ("train-nan", SAMPLE, ["--train", "{files}/nan.npz"], "NaN or inf"),
    ("train-complex", SAMPLE, ["--train", "{files}/complex.npz"], "complex"),
    ("train-beyond-float32", SAMPLE, ["--train", "{files}/huge.npz"], "float32's range"),
    ("train-lying-header", SAMPLE, ["--train", "{files}/lying.npz"], "truncated or corrupt"),
    ("train-1d", SAMPLE, ["--train", "{files}/flat_x.npz"], "shape (n, d)"),
    ("train-short-labels", SAMPLE, ["--train", "{files}/short_y.npz"], "one label per input"),
    ("train-wrong-names", SAMPLE, ["--train", "{files}/wrong_names.npz"], "not x and y"),
    ("test-no-rows", SAMPLE, ["--test", "{files}/zero.npz"], "no examples"),
    ("test-other-shape", SAMPLE, ["--test", "{files}/other_dim.npz"], "use matching data"),
    ("n-zero", SAMPLE, ["--n", "0"], "--n must be >= 1"),
    ("n-too-large", SAMPLE, ["--n", "1000"], "only 16"),
    # sample: budgets, seeds, devices, samplers, engines
    ("count-zero", SAMPLE, ["--count", "0"], "count must be >= 1"),
    ("max-draws-zero", SAMPLE, ["--max-draws", "0"], "max draws must be >= 1"),
    ("max-draws-below-a-pair", SAMPLE, ["--max-draws", "1"], "less than one trial"),
    ("time-limit-zero", SAMPLE, ["--time-limit", "0"], "time limit must be > 0"),
    ("time-limit-nan", SAMPLE, ["--time-limit", "nan"], "time limit must be > 0"),
    ("batch-size-zero", SAMPLE, ["--batch-size", "0"], "batch-size must be >= 1"),
    ("seed-huge", SAMPLE, ["--seed", "99999999999999999999999"], "2^63"),
    ("seed-negative", SAMPLE, ["--seed", "-1"], "2^63"),
    ("device-tpu", SAMPLE, ["--device", "tpu"], "not a device"),
    ("device-meta", SAMPLE, ["--device", "meta"], "not supported"),
    ("device-cuda-7", SAMPLE, ["--device", "cuda:7"], "cuda"),
    ("sampler-unknown", SAMPLE, ["--sampler", "mcmc"], "unknown sampler"),
    ("engine-unknown", SAMPLE, ["--engine", "turbo"], "unknown engine"),
    ("engine-native-gaussian", SAMPLE, ["--engine", "native", "--prior", "gaussian:1"], "native engine needs"),
    ("loss-bin-text", SAMPLE, ["--loss-bin", "low,high"], "LOW,HIGH"),
    ("loss-bin-empty", SAMPLE, ["--loss-bin", "0.7,0.5"], "LOW < HIGH"),
    ("smc-one-particle", SAMPLE, ["--sampler", "smc", "--particles", "1"], "particles must be >= 2"),
    ("smc-zero-repeats", SAMPLE, ["--sampler", "smc", "--repeats", "0"], "repeats"),
    ("sgd-sign", SAMPLE, ["--sampler", "sgd", "--activation", "sign"], "sign"),
    ("sgd-init-unknown", SAMPLE, ["--sampler", "sgd", "--sgd-init", "xavier"], "init"),
    ("sgd-zero-steps", SAMPLE, ["--sampler", "sgd", "--sgd-max-steps", "0"], "--sgd-max-steps must be >= 1"),
    ("option-unknown", SAMPLE, ["--colour", "red"], "No such option"),
    ("option-bad-int", SAMPLE, ["--count", "many"], "valid integer"),
    # sample: output folders
    ("out-cwd", SAMPLE, ["--out", ".", "--overwrite"], "the current directory"),
    ("out-parent-of-cwd", SAMPLE, ["--out", "..", "--overwrite"], "a parent of the current directory"),
    ("out-home", SAMPLE, ["--out", "{home}", "--overwrite"], "your home directory"),
    ("out-root", SAMPLE, ["--out", "/", "--overwrite"], "a parent of"),
    ("out-proc", SAMPLE, ["--out", "/proc/typicalnets-test"], "cannot write output directory"),
    ("out-under-a-file", SAMPLE, ["--out", "{files}/afile/sub"], "which is a file"),
    ("out-is-a-file", SAMPLE, ["--out", "{files}/afile"], "is a file"),
    ("out-foreign-no-overwrite", SAMPLE, ["--out", "{files}/foreign"], "already holds results"),
    ("out-foreign-overwrite", SAMPLE, ["--out", "{files}/foreign", "--overwrite"], "not written by typicalnets"),
    ("out-holds-the-input", SAMPLE, ["--out", "{files}", "--overwrite"], "holds the input"),
    # bound
    ("bound-q-huge", BOUND, ["--prior", "quantized:1000000001"], "65,537"),
    ("bound-no-teacher", ["bound", "--student-widths", "8", "--in-dim", "4"], [], "--teacher-widths is missing"),
    ("bound-lenet", BOUND, ["--arch", "lenet"], "has no C~ bound"),
    ("bound-plot-suffix", BOUND, ["--plot", "{out}.txt"], ".png, .pdf or .svg"),
    ("bound-teacher-missing", BOUND, ["--teacher", "{files}/missing.pt"], "does not exist"),
    ("bound-plot-exists", BOUND, ["--plot", "{files}/mine.png"], "already exists"),
    # run
    ("run-seeds-huge", RUN, ["--seeds", "99999999999999999999999"], "2^63"),
    ("run-device-tpu", RUN, ["--device", "tpu"], "device"),
    ("run-config-missing", RUN, ["--config", "{files}/missing.toml"], "does not exist"),
    ("run-config-syntax", RUN, ["--config", "{files}/bad.toml"], "not valid TOML"),
    ("run-config-count-true", RUN[:6] + RUN[8:], ["--config", "{files}/count_true.toml"], "count"),
    ("run-config-bias-yes", RUN, ["--config", "{files}/bias_yes.toml"], "bias"),
    ("run-config-unknown-key", RUN, ["--config", "{files}/unknown.toml"], "unknown setting"),
    ("run-config-seeds-huge", RUN, ["--config", "{files}/seeds_huge.toml"], "seeds"),
    ("run-out-cwd", RUN, ["--out", ".", "--overwrite"], "the current directory"),
    (
        "run-out-holds-config",
        RUN,
        ["--out", "{files}", "--overwrite", "--config", "{files}/ok.toml"],
        "holds the input",
    ),
    ("run-out-foreign", RUN, ["--out", "{files}/foreign", "--overwrite"], "not written by typicalnets"),
    ("run-out-proc", RUN, ["--out", "/proc/typicalnets-test"], "cannot write output directory"),
    ("run-methods-unknown", RUN, ["--methods", "mcmc:fcn"], "SAMPLER:STUDENT"),
    ("run-n-zero", RUN, ["--n", "0"], "positive"),
    ("run-prior-even", RUN, ["--prior", "quantized:2"], "odd Q"),
    ("run-teacher-wider", RUN, ["--teacher-widths", "32"], "wider"),
    ("run-label-noise", RUN, ["--label-noise", "0.6"], "--label-noise must be < 0.5"),
    ("run-teacher-missing", RUN, ["--teacher", "{files}/missing.pt"], "does not exist"),
    ("run-dataset-missing", RUN, ["--dataset", "{files}/missing.npz"], "does not exist"),
    ("run-count-zero", RUN, ["--count", "0"], "count"),
    ("run-max-draws-zero", RUN, ["--max-draws", "0"], "--max-draws must be >= 1"),
]
if CUDA:  # "cuda" is only bad input where there is no CUDA device
    CASES = [case for case in CASES if case[0] != "device-cuda-7"]
else:
    CASES += [
        ("device-cuda", SAMPLE, ["--device", "cuda"], "no CUDA device"),
        ("run-device-cuda", RUN, ["--device", "cuda"], "no CUDA device"),
    ]


def _fill(args: list[str], files: Path, out: Path) -> list[str]:
    return [
        a.replace("{files}", str(files)).replace("{out}", str(out)).replace("{home}", str(Path.home())) for a in args
    ]


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got {lines}"
    assert lines[0].startswith("error: ") and "; " in lines[0], lines[0]
    assert "Traceback" not in err
    return lines[0]


def test_the_table_covers_at_least_60_cases():
    assert len(CASES) >= 60
    assert len({case[0] for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_bad_input_is_one_line_exit_2_nothing_written(case, files, tmp_path, capsys, monkeypatch):
    _, base, extra, phrase = case
    monkeypatch.chdir(tmp_path)  # so that "." and ".." are this test's own folders
    out = tmp_path / "out"
    before = _snapshot(files)
    code = main(_fill(base + extra, files, out))
    captured = capsys.readouterr()
    line = _one_error_line(captured.err)
    assert code == 2, line
    assert phrase.lower() in line.lower(), line
    assert not out.exists() and not list(tmp_path.glob(".out.*"))
    assert _snapshot(files) == before  # inputs and folders typicalnets did not write are untouched
    assert not list(files.glob(".*partial*"))


def test_overwrite_replaces_only_what_typicalnets_wrote(files, tmp_path, capsys):
    out = tmp_path / "res"
    args = _fill(SAMPLE, files, out)
    assert main(args) == 0
    marker = json.loads((out / ".typicalnets-output.json").read_text())
    assert {"summary.json", "networks.csv", "population.pt"} <= set(marker["files"])
    assert main(args) == 2 and "already holds results" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0  # its own folder: replaced
    (out / "my_notes.txt").write_text("mine")
    assert main(args + ["--overwrite"]) == 2
    assert "did not write" in capsys.readouterr().err and (out / "my_notes.txt").read_text() == "mine"


def test_bound_replaces_an_existing_plot_only_with_overwrite(tmp_path, capsys):
    plot = tmp_path / "eps.png"
    plot.write_bytes(b"mine")
    assert main(BOUND + ["--n", "100", "--plot", str(plot)]) == 2 and plot.read_bytes() == b"mine"
    assert main(BOUND + ["--n", "100", "--plot", str(plot), "--overwrite"]) == 0
    assert plot.read_bytes().startswith(b"\x89PNG") and not list(tmp_path.glob(".*partial*"))
    capsys.readouterr()


def test_an_empty_output_folder_is_used(files, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    assert main(_fill(SAMPLE, files, out)) == 0 and (out / "summary.json").is_file()


def test_missing_parent_folders_are_removed_after_a_failure(files, tmp_path, capsys):
    out = tmp_path / "a" / "b" / "c"
    assert main(_fill(SAMPLE, files, out) + ["--prior", "quantized:-1e38,0,1e38"]) == 2
    capsys.readouterr()
    assert not (tmp_path / "a").exists()


# ------------------------------------------------------------------ random option values

HUGE = st.sampled_from(
    [
        "0",
        "-1",
        "-99999999999999999999",
        "99999999999999999999",
        "1e309",
        "nan",
        "inf",
        "-inf",
        "",
        " ",
        "x",
        "1,2",
        "0.5",
        "3",
        "1e-300",
        "ü",
        "--",
        "quantized:3",
        "cpu",
    ]
)
VALUES = st.one_of(
    HUGE, st.integers(-(10**25), 10**25).map(str), st.floats(allow_nan=True).map(repr), st.text(max_size=8)
)
SAMPLE_OPTIONS = [
    "--arch",
    "--widths",
    "--activation",
    "--prior",
    "--sampler",
    "--count",
    "--seed",
    "--n",
    "--max-draws",
    "--time-limit",
    "--batch-size",
    "--kernel-size",
    "--stride",
    "--pool",
    "--depth",
    "--width-factor",
    "--head",
    "--engine",
    "--loss-bin",
    "--particles",
    "--repeats",
    "--block",
    "--max-moves",
    "--sgd-init",
    "--sgd-loss",
    "--sgd-lr",
    "--sgd-batch-size",
    "--sgd-max-steps",
    "--sgd-epochs",
    "--sgd-momentum",
    "--device",
]
RUN_OPTIONS = [
    "--seeds",
    "--input",
    "--in-dim",
    "--teacher-widths",
    "--student-widths",
    "--activation",
    "--prior",
    "--n",
    "--n-test",
    "--count",
    "--methods",
    "--device",
    "--engine",
    "--label-noise",
    "--max-majority",
    "--max-draws",
    "--time-limit",
    "--batch-size",
    "--smc-particles",
    "--smc-repeats",
    "--sgd-lr",
    "--sgd-batch-size",
    "--sgd-max-steps",
    "--standardize",
    "--classes",
    "--lenet-width-factor",
]
BOUND_OPTIONS = [
    "--student-widths",
    "--teacher-widths",
    "--arch",
    "--in-dim",
    "--in-shape",
    "--kernel-size",
    "--stride",
    "--pool",
    "--prior",
    "--zero-prob",
    "--margin",
    "--n",
    "--delta",
    "--epsilon",
]
# Every command also gets a time budget, so that no random value of another option can make it run long.
BUDGET = {"sample": ["--time-limit", "3"], "run": ["--time-limit", "3", "--sgd-max-steps", "200"], "bound": []}


def _check_random_call(command: str, base: list[str], option: str, value: str, tmp: Path, capsys) -> None:
    out = tmp / "out"
    args = _fill(base + BUDGET[command] + [option, value], tmp, out)  # the last value of an option wins
    code = main(args)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    assert code in (0, 2), (args, code, captured.err)
    if code == 2:
        _one_error_line(captured.err)
        assert not out.exists()
    elif command != "bound":
        assert (out / ".typicalnets-output.json").is_file()
    assert not list(tmp.glob(".out.*"))


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    np.savez(root / "good.npz", x=X, y=Y)
    return root


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(option=st.sampled_from(SAMPLE_OPTIONS), value=VALUES)
def test_random_sample_options_never_trace_back(option, value, fuzz_root, capsys):
    shutil.rmtree(fuzz_root / "out", ignore_errors=True)
    _check_random_call("sample", SAMPLE, option, value, fuzz_root, capsys)


@settings(max_examples=20, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(option=st.sampled_from(RUN_OPTIONS), value=VALUES)
def test_random_run_options_never_trace_back(option, value, fuzz_root, capsys):
    shutil.rmtree(fuzz_root / "out", ignore_errors=True)
    _check_random_call("run", RUN, option, value, fuzz_root, capsys)


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(option=st.sampled_from(BOUND_OPTIONS), value=VALUES)
def test_random_bound_options_never_trace_back(option, value, fuzz_root, capsys):
    _check_random_call("bound", BOUND + ["--json"], option, value, fuzz_root, capsys)


# ------------------------------------------------------------------ every message has a fix


def _literal_text(node: ast.AST) -> str | None:
    """The text of a string, f-string or concatenation of them, with {} for each placeholder."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(part.value if isinstance(part, ast.Constant) else "{}" for part in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _literal_text(node.left), _literal_text(node.right)
        return None if left is None or right is None else left + right
    return None


def test_every_error_message_names_the_problem_and_the_fix():
    source = Path(__file__).resolve().parents[1] / "src" / "typicalnets"
    missing = []
    for path in sorted(source.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            name = getattr(getattr(node, "func", None), "id", None) or getattr(getattr(node, "func", None), "attr", "")
            if isinstance(node, ast.Call) and name in ("TypicalnetsError", "OutputConflict") and node.args:
                text = _literal_text(node.args[0])
                # RunConfig.build's "bad setting {}: {}" gets "; change it" where pydantic's message lacks a fix.
                if text not in (None, "bad setting {}: {}") and ("; " not in text or "\n" in text):
                    missing.append(f"{path.relative_to(source)}:{node.lineno}: {text}")
    assert not missing, "\n".join(missing)
