"""The command line: the `sample` output contract, `run`, and one-line errors with exit code 2."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import typer

from typicalnets import native, store
from typicalnets.cli import SampleOptions, app, main
from typicalnets.data import Dataset
from typicalnets.experiments import RunConfig
from typicalnets.methods import MethodSpec, run_method
from typicalnets.nets import FCN, Population
from typicalnets.nets import population as population_module
from typicalnets.priors import QuantizedUniform
from typicalnets.teachers import make_task, narrow_teacher

Q3 = QuantizedUniform.evenly_spaced(3)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    gen = torch.Generator().manual_seed(0)
    teacher = narrow_teacher(FCN(4, (2,)), QuantizedUniform.evenly_spaced(3), gen)
    task = make_task(teacher, 6, 500, gen)
    task.train.save_npz(root / "train.npz")
    task.test.save_npz(root / "test.npz")
    x_img = np.random.default_rng(0).normal(size=(5, 1, 6, 6)).astype(np.float32)
    np.savez(root / "images.npz", x=x_img, y=np.array([0, 1, 1, 0, 1]))
    np.savez(root / "three.npz", x=np.zeros((3, 4)), y=np.array([0, 1, 2]))
    np.savez(root / "nan.npz", x=np.array([[np.nan, 0, 0, 0]]), y=np.array([1]))
    (root / "corrupt.npz").write_bytes(b"not a zip file at all")
    return root


def run_cli(*args) -> int:
    return main([str(a) for a in args])


def test_sample_gc_writes_the_contract(files, tmp_path, capsys):
    out = tmp_path / "gc"
    code = run_cli(
        "sample",
        "--train",
        files / "train.npz",
        "--test",
        files / "test.npz",
        "--arch",
        "fcn",
        "--widths",
        "8",
        "--prior",
        "quantized:3",
        "--sampler",
        "gc",
        "--count",
        12,
        "--seed",
        3,
        "--max-draws",
        2_000_000,
        "--out",
        out,
        "--no-progress",
    )
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    for key in (
        "sampler",
        "count",
        "draws",
        "acceptance_rate",
        "acceptance_ci",
        "seconds",
        "log_prob_interpolate",
        "log_prob_interpolate_ci",
    ):
        assert key in summary
    assert summary["sampler"] == "gc" and summary["count"] == 12
    low, high = summary["acceptance_ci"]
    assert low <= summary["acceptance_rate"] <= high
    assert summary["log_prob_interpolate"] == pytest.approx(np.log(summary["acceptance_rate"]))
    table = pd.read_csv(out / "networks.csv")
    assert len(table) == 12 and (table["train_error"] == 0).all() and table["test_error"].between(0, 1).all()
    train_pred = np.load(out / "train_predictions.npy")
    test_pred = np.load(out / "test_predictions.npy")
    train = Dataset.load_npz(files / "train.npz")
    assert train_pred.dtype == np.int8 and train_pred.shape == (12, train.n)
    assert (train_pred == train.y.numpy()).all()
    assert test_pred.shape == (12, 500) and set(np.unique(test_pred)) <= {-1, 0, 1}
    population = Population.load(out / "population.pt")
    assert len(population) == 12 and population.arch == FCN(4, (8,))
    assert (population.predict(train.x).numpy() == train_pred).all()
    assert not list(tmp_path.glob(".*partial*"))


def test_sample_is_reproducible(files, tmp_path):
    args = ["sample", "--train", files / "train.npz", "--widths", "6", "--count", 5, "--seed", 9, "--no-progress"]
    assert run_cli(*args, "--out", tmp_path / "a") == 0 and run_cli(*args, "--out", tmp_path / "b") == 0
    assert (np.load(tmp_path / "a/train_predictions.npy") == np.load(tmp_path / "b/train_predictions.npy")).all()
    first, second = Population.load(tmp_path / "a/population.pt"), Population.load(tmp_path / "b/population.pt")
    assert all(torch.equal(first.params[k], second.params[k]) for k in first.params)


def test_sample_sgd_and_cnn(files, tmp_path):
    assert (
        run_cli(
            "sample",
            "--train",
            files / "train.npz",
            "--test",
            files / "test.npz",
            "--sampler",
            "sgd",
            "--count",
            8,
            "--widths",
            "8",
            "--out",
            tmp_path / "sgd",
            "--no-progress",
        )
        == 0
    )
    table = pd.read_csv(tmp_path / "sgd/networks.csv")
    assert len(table) == 8 and {"converged", "steps", "test_error"} <= set(table.columns)
    assert (table.loc[table["converged"], "train_error"] == 0).all()
    assert (
        run_cli(
            "sample",
            "--train",
            files / "images.npz",
            "--arch",
            "scnn",
            "--widths",
            "2",
            "--kernel-size",
            3,
            "--pool",
            2,
            "--count",
            3,
            "--out",
            tmp_path / "cnn",
            "--no-progress",
        )
        == 0
    )
    assert Population.load(tmp_path / "cnn/population.pt").arch.name == "scnn"


def test_nothing_accepted_is_one_line_with_upper_bound(tmp_path, capsys):
    np.savez(tmp_path / "clash.npz", x=np.ones((2, 3)), y=np.array([1, -1]))
    code = run_cli(
        "sample",
        "--train",
        tmp_path / "clash.npz",
        "--count",
        3,
        "--max-draws",
        5000,
        "--out",
        tmp_path / "none",
        "--no-progress",
    )
    err = capsys.readouterr().err
    assert code == 0
    assert "no interpolator accepted in 5,000 draws" in err and "95% upper bound" in err
    assert "Traceback" not in err
    summary = json.loads((tmp_path / "none/summary.json").read_text())
    assert summary["count"] == 0 and summary["acceptance_ci"][1] < 1e-3 and summary["log_prob_interpolate"] is None


BAD_SAMPLE = {
    "unknown architecture": (["--arch", "resnet"], "unknown architecture"),
    "unknown prior": (["--prior", "beta:2"], "unknown prior"),
    "even Q": (["--prior", "quantized:4"], "odd Q"),
    "widths do not fit": (["--widths", "0"], "positive integers"),
    "kernel too big": (["--train", "{images}", "--arch", "cnn", "--widths", "2", "--kernel-size", "9"], "does not fit"),
    "fcn on images": (["--train", "{images}"], "needs flat inputs"),
    "labels not binary": (["--train", "{three}"], "not binary"),
    "nan in data": (["--train", "{nan}"], "NaN or inf"),
    "n larger than data": (["--n", "100"], "only 6"),
    "zero count": (["--count", "0"], "count must be >= 1"),
    "zero draws": (["--max-draws", "0"], "max draws"),
    "zero time": (["--time-limit", "0"], "time limit"),
    "missing file": (["--train", "{missing}"], "does not exist"),
    "corrupt file": (["--train", "{corrupt}"], "cannot read"),
    "unknown sampler": (["--sampler", "mcmc"], "unknown sampler"),
    "smc count above particles": (
        ["--sampler", "smc", "--count", "500", "--particles", "10", "--repeats", "2"],
        "raise --particles",
    ),
    "unknown option": (["--bogus"], "No such option"),
}


@pytest.mark.parametrize("case", sorted(BAD_SAMPLE))
def test_bad_sample_input_is_one_line_exit_2(case, files, tmp_path, capsys):
    extra, expected = BAD_SAMPLE[case]
    paths = {
        "images": files / "images.npz",
        "three": files / "three.npz",
        "nan": files / "nan.npz",
        "missing": files / "missing.npz",
        "corrupt": files / "corrupt.npz",
    }
    extra = [a.format(**paths) for a in extra]
    args = ["sample", "--train", files / "train.npz", "--out", tmp_path / "out", "--no-progress"]
    if "--train" in extra:
        args = ["sample", "--out", tmp_path / "out", "--no-progress"]
    code = run_cli(*args, *extra)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and expected in err
    assert not (tmp_path / "out").exists() and not list(tmp_path.iterdir())


def test_existing_results_are_refused_unless_overwrite(files, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["sample", "--train", files / "train.npz", "--count", 2, "--out", out, "--no-progress"]
    assert run_cli(*args) == 0
    before = (out / "summary.json").read_text()
    assert run_cli(*args, "--seed", 1) == 2
    assert "already holds results" in capsys.readouterr().err
    assert (out / "summary.json").read_text() == before
    assert run_cli(*args, "--seed", 1, "--overwrite") == 0
    assert (out / "summary.json").read_text() != before


SMALL_RUN = [
    "--n",
    "2,4",
    "--count",
    "5",
    "--in-dim",
    "3",
    "--student-widths",
    "4",
    "--n-test",
    "200",
    "--sgd-max-steps",
    "500",
    "--no-progress",
]


def test_run_writes_rows_manifest_and_plot(tmp_path):
    out = tmp_path / "run"
    assert run_cli("run", *SMALL_RUN, "--out", out) == 0
    rows = pd.read_csv(out / "results.csv")
    for column in ("method", "arch", "n", "seed", "train_error", "test_error", "draws"):
        assert column in rows.columns
    assert set(rows["method"]) == {"gc:fcn", "gc:sfcn", "sgd:fcn"} and set(rows["n"]) == {2, 4}
    assert len(rows) == 3 * 2 * 5
    assert (rows.loc[rows["sampler"] == "gc", "train_error"] == 0).all()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["count"] == 5 and manifest["config"]["n"] == [2, 4]
    assert (out / "test_error_vs_n.png").read_bytes()[:4] == b"\x89PNG"
    assert pd.read_parquet(out / "results.parquet").equals(rows)


def test_run_cells_are_pure_functions_of_spec_and_seed(tmp_path):
    assert run_cli("run", *SMALL_RUN, "--out", tmp_path / "a") == 0
    assert run_cli("run", *SMALL_RUN, "--out", tmp_path / "b") == 0
    first, second = pd.read_csv(tmp_path / "a/results.csv"), pd.read_csv(tmp_path / "b/results.csv")
    assert first.equals(second)


def test_run_config_file_and_command_line_precedence(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('n = [3]\ncount = 4\nmethods = ["gc:fcn"]\nin-dim = 3\nstudent_widths = [4]\nn_test = 100\n')
    assert run_cli("run", "--config", config, "--count", 2, "--out", tmp_path / "r", "--no-progress") == 0
    manifest = json.loads((tmp_path / "r/manifest.json").read_text())["config"]
    assert manifest["n"] == [3] and manifest["count"] == 2 and manifest["in_dim"] == 3
    assert manifest["methods"] == ["gc:fcn"]


def test_run_has_one_option_per_config_field():
    options = {param.name for param in typer.main.get_command(app).commands["run"].params}
    assert set(RunConfig.model_fields) <= options


def test_sample_settings_default_to_method_spec():
    """The sampler settings of `sample` are named like MethodSpec's fields and take its defaults."""
    spec = MethodSpec()
    shared = [field for field in dataclasses.fields(SampleOptions) if field.name in MethodSpec.model_fields]
    assert len(shared) >= 15
    assert all(field.default == getattr(spec, field.name) for field in shared)


BAD_RUN = {
    "teacher wider than student": (["--teacher-widths", "32"], "exceed student widths"),
    "teacher deeper than student": (["--teacher-widths", "2,2"], "share family"),
    "unknown method": (["--methods", "gc:resnet"], "SAMPLER:STUDENT"),
    "unknown prior": (["--prior", "laplace:1"], "unknown prior"),
    "bad n": (["--n", "4,x"], "comma-separated integers"),
    "zero count": (["--count", "0"], "count"),
    "unknown config key": (["--config", "{bad_key}"], "unknown setting"),
    "corrupt config": (["--config", "{corrupt}"], "not valid TOML"),
    "missing config": (["--config", "{missing}"], "does not exist"),
}


@pytest.mark.parametrize("case", sorted(BAD_RUN))
def test_bad_run_input_is_one_line_exit_2(case, tmp_path, capsys):
    (tmp_path / "bad_key.toml").write_text("bogus = 1\n")
    (tmp_path / "corrupt.toml").write_text("n = [\n")
    extra, expected = BAD_RUN[case]
    extra = [
        a.format(
            bad_key=tmp_path / "bad_key.toml", corrupt=tmp_path / "corrupt.toml", missing=tmp_path / "missing.toml"
        )
        for a in extra
    ]
    code = run_cli("run", *extra, "--out", tmp_path / "out", "--no-progress")
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and expected in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("engine", ["fast", "torch", "baseline"])
def test_sample_lenet_with_each_engine(tmp_path, engine):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "img.npz", x=rng.normal(size=(4, 1, 16, 16)).astype(np.float32), y=np.array([0, 1, 0, 1]))
    out = tmp_path / engine
    lenet = ["--train", tmp_path / "img.npz", "--arch", "lenet", "--width-factor", "0.25", "--prior", "uniform:1.0"]
    options = ["--count", 3, "--no-progress"]
    assert run_cli("sample", *lenet, *options, "--engine", engine, "--loss-bin", "0,100", "--out", out) == 0
    summary = json.loads((out / "summary.json").read_text())
    expected_engine = {"fast": "native" if native.load() else "torch", "torch": "torch", "baseline": "baseline"}[engine]
    assert summary["engine"] == expected_engine and summary["count"] == 3 and summary["loss_bin"] == [0.0, 100.0]
    assert summary["draws_per_trial"] == (1 if engine == "baseline" else 2)  # two logits: mirrored pairs
    if engine == "fast":
        unpaired = tmp_path / "unpaired"
        assert run_cli("sample", *lenet, *options, "--no-mirror", "--out", unpaired) == 0
        assert json.loads((unpaired / "summary.json").read_text())["draws_per_trial"] == 1
    population = Population.load(out / "population.pt")
    assert population.arch.name == "lenet" and population.arch.layer_widths == (2, 4, 30, 21)
    assert (np.load(out / "train_predictions.npy") == np.array([-1, 1, -1, 1])).all()


def test_sample_smc_writes_the_contract(files, tmp_path):
    out = tmp_path / "smc"
    assert (
        run_cli(
            "sample",
            "--train",
            files / "train.npz",
            "--test",
            files / "test.npz",
            "--widths",
            "6",
            "--sampler",
            "smc",
            "--count",
            30,
            "--particles",
            100,
            "--repeats",
            3,
            "--out",
            out,
            "--no-progress",
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sampler"] == "smc" and summary["count"] == 30 and summary["repeats"] == 3
    low, high = summary["log_prob_interpolate_ci"]
    assert low <= summary["log_prob_interpolate"] <= high < 0
    assert summary["acceptance_rate"] == pytest.approx(np.exp(summary["log_prob_interpolate"]))
    table = pd.read_csv(out / "networks.csv")
    assert len(table) == 30 and (table["train_error"] == 0).all() and "test_error" in table
    assert np.load(out / "train_predictions.npy").shape == (30, 6)
    assert np.load(out / "test_predictions.npy").shape == (30, 500)
    diagnostics = pd.read_csv(out / "diagnostics.csv")
    columns = {"seen", "survival", "ess", "unique", "move_acceptance", "moves", "beta", "correlation", "run"}
    assert columns <= set(diagnostics.columns)
    # One row per step: a hard step adds an example, a tempered one (beta < inf) does not.
    assert (diagnostics["beta"] == np.inf).groupby(diagnostics["run"]).sum().tolist() == [6, 6, 6]
    assert len(Population.load(out / "population.pt")) == 30


def test_run_falls_back_to_smc_when_guess_and_check_runs_out(tmp_path):
    out = tmp_path / "fallback"
    assert (
        run_cli(
            "run",
            "--n",
            "2,48",
            "--count",
            "10",
            "--in-dim",
            "3",
            "--student-widths",
            "4",
            "--n-test",
            "200",
            "--methods",
            "gc:fcn,smc:sfcn",
            "--max-draws",
            "3000",
            "--smc-particles",
            "50",
            "--smc-repeats",
            "2",
            "--out",
            out,
            "--no-progress",
        )
        == 0
    )
    rows = pd.read_csv(out / "results.csv")
    cells = pd.read_csv(out / "cells.csv").set_index(["method", "n"])
    assert cells.loc[("gc:fcn", 2), "sampler"] == "gc"  # cheap: G&C finishes within 3,000 draws
    assert cells.loc[("gc:fcn", 48), "sampler"] == "smc"  # out of budget: SMC takes over
    assert (rows.loc[rows["method"] == "smc:sfcn", "sampler"] == "smc").all()
    assert len(rows) == 2 * 2 * 10 and (rows["train_error"] == 0).all()
    assert cells["log_prob_interpolate"].lt(0).all()


def test_run_with_an_explicit_teacher(tmp_path):
    teacher = Population.draw(FCN(3, (1,)), QuantizedUniform.evenly_spaced(3), 1, torch.Generator().manual_seed(4))
    teacher.params["w2"][:] = 1.0  # make sure the teacher is not constant
    teacher.params["w1"][0, 0] = torch.tensor([1.0, -1.0, 0.0])
    teacher.save(tmp_path / "teacher.pt")
    out = tmp_path / "explicit"
    assert (
        run_cli(
            "run",
            "--teacher",
            tmp_path / "teacher.pt",
            "--in-dim",
            "3",
            "--student-widths",
            "4",
            "--n",
            "4",
            "--count",
            "5",
            "--n-test",
            "100",
            "--methods",
            "gc:fcn",
            "--out",
            out,
            "--no-progress",
        )
        == 0
    )
    saved = Population.load(out / "teacher-seed0.pt")
    assert all(torch.equal(saved.params[k], teacher.params[k]) for k in teacher.params)
    wide = Population.draw(FCN(3, (9,)), QuantizedUniform.evenly_spaced(3), 1, torch.Generator().manual_seed(4))
    wide.save(tmp_path / "wide.pt")
    assert (
        run_cli(
            "run",
            "--teacher",
            tmp_path / "wide.pt",
            "--in-dim",
            "3",
            "--student-widths",
            "4",
            "--out",
            tmp_path / "refused",
            "--no-progress",
        )
        == 2
    )
    assert not (tmp_path / "refused").exists()


def test_sample_streamed_over_several_shards_equals_the_in_memory_output(files, tmp_path, monkeypatch):
    """A count spanning two prediction blocks and many shards: the files hold exactly what the in-memory run of the
    same seed gives (the networks in order, their predictions and errors), written as they came."""
    monkeypatch.setattr(population_module, "SHARD_BYTES", 100 * 4 * FCN(4, (8,)).num_params())  # 100 per shard
    out, count = tmp_path / "many", 1500
    args = ["sample", "--train", files / "train.npz", "--test", files / "test.npz", "--widths", "8", "--n", 3]
    assert run_cli(*args, "--count", count, "--seed", 2, "--out", out, "--no-progress") == 0
    train = Dataset.load_npz(files / "train.npz").head(3)
    test = Dataset.load_npz(files / "test.npz")
    held = run_method(MethodSpec(), FCN(4, (8,)), Q3, train, torch.Generator().manual_seed(2), count).population
    assert len(held) == count
    shards = sorted(path.name for path in out.glob("population-*.pt"))
    assert len(shards) == 15 and not (out / "population.pt").exists()
    saved = Population.load(out)
    assert all(torch.equal(saved.params[k], held.params[k]) for k in held.params)
    assert (np.load(out / "train_predictions.npy") == held.predict(train.x).numpy()).all()
    assert (np.load(out / "test_predictions.npy") == held.predict(test.x).numpy()).all()
    table = pd.read_csv(out / "networks.csv")
    assert (table["network"] == np.arange(count)).all() and (table["train_error"] == 0).all()
    np.testing.assert_array_equal(table["test_error"], held.errors(test.x, test.y).numpy())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["count"] == count and summary["test_error_mean"] == float(table["test_error"].mean())
    marker = json.loads((out / ".typicalnets-output.json").read_text())
    assert set(shards) | {"population-shards.json", "networks.csv"} <= set(marker["files"])


def test_sample_refuses_a_count_the_disk_cannot_hold(files, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(store.shutil, "disk_usage", lambda path: SimpleNamespace(free=10**6))  # 1 MB free
    args = ["sample", "--train", files / "train.npz", "--count", 100_000, "--out", tmp_path / "out", "--no-progress"]
    assert run_cli(*args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --count = 100,000 networks") and "on disk" in err and len(err.splitlines()) == 1
    assert not list(tmp_path.iterdir())
