"""Experiments beyond the default: data-set tasks, per-method student shapes, bounds in the report."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from typicalnets.cli import main
from typicalnets.data import Dataset
from typicalnets.errors import TypicalnetsError
from typicalnets.experiments import (
    RunConfig,
    build_task,
    parse_method,
    run_cell,
    student_bounds,
)
from typicalnets.nets import FCN, LeNet
from typicalnets.priors import Uniform
from typicalnets.report import volume_violations
from typicalnets.samplers.sgd import train_sgd


def run_cli(*args) -> int:
    return main([str(a) for a in args])


@pytest.mark.parametrize(
    "method, expected",
    [
        ("gc:fcn", ("gc", "fcn", "")),
        ("smc:sfcn:32x32", ("smc", "sfcn", "32x32")),
        ("sgd:lenet:0.5", ("sgd", "lenet", "0.5")),
    ],
)
def test_parse_method(method, expected):
    assert parse_method(method) == expected


@pytest.mark.parametrize("method", ["gc", "gc:cnn", "xx:fcn", "gc:fcn:0", "gc:fcn:a", "gc:lenet:1x2", "gc:fcn:"])
def test_bad_methods_are_rejected(method):
    if method == "gc:fcn:":  # an empty shape is the default shape
        assert parse_method(method) == ("gc", "fcn", "")
        return
    with pytest.raises(TypicalnetsError, match="methods"):
        RunConfig.build({"methods": [method]})


def test_student_shapes_sweep_width_and_depth():
    config = RunConfig.build({"dataset": "digits", "methods": "gc:fcn,gc:fcn:8x8,sgd:sfcn:32", "student_widths": "16"})
    assert config.student_arch("fcn").hidden == (16,)
    assert config.student_arch("fcn", "8x8").hidden == (8, 8)
    assert config.student_arch("sfcn", "32").scaled
    lenet = config.student_arch("lenet", "", (1, 28, 28))
    assert isinstance(lenet, LeNet) and lenet.layer_widths == (3, 8, 60, 42)
    flat = config.student_arch("fcn", "", (1, 8, 8))
    assert isinstance(flat, FCN) and flat.in_dim == 64


@pytest.mark.parametrize(
    "values, message",
    [
        ({"methods": "gc:lenet"}, "lenet students need image inputs"),
        ({"classes": "0,1"}, "apply only with a dataset"),
        ({"dataset": "digits", "classes": "0"}, "pair"),
        ({"dataset": "digits", "standardize": "minmax"}, "standardisation"),
        ({"methods": "gc:fcn:1"}, "narrower"),
        ({"methods": "gc:fcn:8x8"}, "one entry per student layer"),  # a deeper student needs a deeper teacher
    ],
)
def test_bad_configs_are_one_line(values, message):
    with pytest.raises(TypicalnetsError, match=message):
        RunConfig.build(values)


def test_digits_cells_use_every_test_example_of_the_pair():
    config = RunConfig.build(
        {
            "dataset": "digits",
            "classes": "3,8",
            "n": "4,6",
            "count": 5,
            "methods": "gc:fcn:8,sgd:fcn:8",
            "prior": "uniform:1",
        }
    )
    task = build_task(config, 0)
    assert task.teacher is None and task.train.n == 6 and task.train.input_shape == (1, 8, 8)
    assert task.train.y[:4].tolist() == [1, -1, 1, -1]
    assert task.info["classes"] == [3, 8] and task.test.n == task.info["n_test"] > 100
    cell = run_cell(config, "gc:fcn:8", 4, 0, task)
    rows = pd.DataFrame(cell.rows)
    assert len(rows) == 5 and (rows["train_error"] == 0).all() and rows["arch"].iloc[0] == "fcn[8]"
    again = run_cell(config, "gc:fcn:8", 4, 0, build_task(config, 0))
    assert again.rows == cell.rows  # a cell is a pure function of the spec and the seed


def test_run_on_a_dataset_writes_accuracy_intervals(tmp_path):
    out = tmp_path / "digits"
    code = run_cli(
        "run",
        "--dataset",
        "digits",
        "--classes",
        "0,1",
        "--n",
        "2,4",
        "--count",
        "8",
        "--methods",
        "gc:fcn:8,sgd:fcn:8",
        "--prior",
        "uniform:1",
        "--out",
        out,
        "--no-progress",
    )
    assert code == 0
    accuracy = pd.read_csv(out / "accuracy.csv")
    assert len(accuracy) == 4 and (accuracy["networks"] == 8).all()
    assert (accuracy["accuracy_ci_low"] <= accuracy["accuracy_mean"]).all()
    assert (accuracy["accuracy_mean"] <= accuracy["accuracy_ci_high"]).all()
    results = pd.read_csv(out / "results.csv")
    assert math.isclose(
        accuracy["accuracy_mean"].iloc[0],
        1
        - results[(results["method"] == accuracy["method"].iloc[0]) & (results["n"] == accuracy["n"].iloc[0])][
            "test_error"
        ].mean(),
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["data"]["0"]["source"] == "digits" and manifest["c_tilde"] == {"0": {}}
    assert (out / "test_accuracy_vs_n.png").is_file() and not (out / "teacher-seed0.pt").exists()


def test_a_student_that_does_not_fit_the_data_fails_before_any_work(tmp_path, capsys):
    out = tmp_path / "lenet"
    code = run_cli(
        "run",
        "--dataset",
        "digits",
        "--classes",
        "0,1",
        "--n",
        "2",
        "--methods",
        "gc:lenet",
        "--prior",
        "uniform:1",
        "--out",
        out,
        "--no-progress",
    )
    assert code == 2 and not out.exists()
    assert "16x16" in capsys.readouterr().err


def test_teacher_student_run_reports_c_tilde_and_the_volume_plot(tmp_path):
    out = tmp_path / "ts"
    assert (
        run_cli(
            "run", "--n", "4,8", "--count", "10", "--methods", "gc:fcn,gc:sfcn,sgd:fcn", "--out", out, "--no-progress"
        )
        == 0
    )
    cells = pd.read_csv(out / "cells.csv")
    bounded = cells[cells["method"] != "sgd:fcn"]
    assert bounded["c_tilde"].notna().all() and cells[cells["method"] == "sgd:fcn"]["c_tilde"].isna().all()
    # The theory: -ln P(L_S = 0) <= C~ for noiseless teacher labels, within the interval.
    assert (-bounded["log_prob_ci_high"] <= bounded["c_tilde"]).all()
    assert json.loads((out / "manifest.json").read_text())["bound_violations"] == []
    assert (out / "volume_vs_c_tilde.png").is_file()


def test_no_bound_under_label_noise():
    config = RunConfig.build({"label_noise": 0.1})
    assert student_bounds(config, build_task(config, 0)) == {}


def test_volume_violations_flags_only_measurements_above_c_tilde_beyond_the_interval():
    cells = pd.DataFrame(
        {
            "method": ["gc:fcn"] * 3,
            "n": [4, 8, 16],
            "log_prob_interpolate": [-3.0, -9.0, -12.0],
            "log_prob_ci_high": [-2.5, -8.5, -11.0],
        }
    )
    flagged = volume_violations(cells, {"gc:fcn": 10.0})
    assert flagged["n"].tolist() == [16]  # -ln P >= 11 > 10; at n = 8 the interval reaches 8.5 <= 10
    assert volume_violations(cells, {}).empty


def test_sgd_without_stop_trains_every_network_for_the_whole_budget():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    data = Dataset(x, torch.tensor([1, 1, -1, -1], dtype=torch.int8))
    arch = FCN(2, (4,))
    gen = torch.Generator().manual_seed(0)
    stopped = train_sgd(arch, Uniform(1.0), data, 6, gen, lr=0.5, max_steps=200, progress=False)
    assert stopped.converged.all() and stopped.stop_reason == "converged" and stopped.step_count < 200
    full = train_sgd(
        arch,
        Uniform(1.0),
        data,
        6,
        torch.Generator().manual_seed(0),
        lr=0.5,
        epochs=200,
        stop_at_zero=False,
        progress=False,
    )
    assert full.step_count == 200 and (full.steps == 200).all() and full.converged.all()
    batched = train_sgd(
        arch, Uniform(1.0), data, 2, gen, lr=0.5, batch_size=2, epochs=3, stop_at_zero=False, progress=False
    )
    assert batched.step_count == 6  # 3 epochs of 2 mini-batches


def test_random_labels_are_coin_flips_without_a_bound():
    config = RunConfig.build({"random_labels": True, "n": "32", "n_test": 4000})
    task = build_task(config, 0)
    teacher_labels = build_task(RunConfig.build({"n": "32", "n_test": 4000}), 0).test.y
    assert torch.equal(task.test.x, build_task(RunConfig.build({"n": "32", "n_test": 4000}), 0).test.x)
    # Independent fair coins: agreement with the teacher is 1/2 up to sampling error (sd 0.008 at 4000).
    assert abs(float((task.test.y == teacher_labels).float().mean()) - 0.5) < 0.04
    assert set(task.train.y.tolist()) <= {-1, 1} and student_bounds(config, task) == {}
    with pytest.raises(TypicalnetsError, match="random_labels"):
        RunConfig.build({"random_labels": True, "dataset": "digits"})


def test_sgd_cells_honour_the_time_limit_and_keep_non_interpolators_out_of_the_tables(tmp_path, capsys):
    # A rate too small to fit anything within the cell's 0.3 s: every SGD network stops by the time limit.
    out = tmp_path / "sgd"
    args = ["run", "--n", "8", "--count", "6", "--methods", "gc:fcn,sgd:fcn", "--sgd-lr", "1e-9"]
    code = run_cli(*args, "--sgd-max-steps", "1000000000", "--time-limit", "0.3", "--out", out, "--no-progress")
    assert code == 0
    cells = pd.read_csv(out / "cells.csv").set_index("method")
    assert cells.loc["sgd:fcn", "stop_reason"] == "time_limit" and cells.loc["sgd:fcn", "seconds"] < 5
    results = pd.read_csv(out / "results.csv")
    sgd = results[results["method"] == "sgd:fcn"]
    not_converged = int((~sgd["converged"]).sum())
    assert len(sgd) == 6 and not_converged == cells.loc["sgd:fcn", "not_converged"] > 0
    assert (sgd[~sgd["converged"]]["train_error"] > 0).all() and (sgd[sgd["converged"]]["train_error"] == 0).all()
    accuracy = pd.read_csv(out / "accuracy.csv").set_index("method")
    assert accuracy.loc["gc:fcn", "networks"] == 6
    assert accuracy["networks"].get("sgd:fcn", 0) == 6 - not_converged  # only interpolators are compared
    assert f"{not_converged} of 6 SGD networks did not reach zero training error" in capsys.readouterr().err


def test_sgd_cells_record_the_rate_scaled_to_the_init():
    config = RunConfig.build({"n": "8", "count": 4, "methods": "sgd:fcn"})
    assert config.sgd_lr is None and config.method_spec("sgd").sgd_lr is None
    cell = run_cell(config, "sgd:fcn", 8, 0)
    assert 0.01 < cell.summary["sgd_lr"] < 1 and cell.summary["not_converged"] == 0
    given = run_cell(RunConfig.build({"n": "8", "count": 4, "methods": "sgd:fcn", "sgd_lr": 0.05}), "sgd:fcn", 8, 0)
    assert given.summary["sgd_lr"] == 0.05
