"""`typicalnets bound`: the C~ bound on the command line (JSON, table, plot, one-line errors)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from typicalnets.cli import main
from typicalnets.nets import FCN, Population
from typicalnets.priors import Gaussian, QuantizedUniform
from typicalnets.theory import c_tilde_cnn, c_tilde_fcn, c_tilde_for, c_tilde_margin

FCN_ARGS = ["bound", "--arch", "fcn", "--in-dim", "4", "--teacher-widths", "2", "--student-widths", "16"]


def run_json(capsys, *args) -> dict:
    code = main([str(a) for a in (*args, "--json")])
    out = capsys.readouterr().out
    assert code == 0
    return json.loads(out)  # exactly one JSON object: anything else on stdout fails to parse


def test_json_fcn_with_n_and_epsilon(capsys):
    report = run_json(capsys, *FCN_ARGS, "--n", 1000, "--epsilon", 0.1, "--delta", 0.01)
    expected = c_tilde_fcn(4, (2,), (16,), 3)
    assert report["c_tilde"] == pytest.approx(expected.nats)
    assert report["c_tilde"] == pytest.approx(math.log(3) * (2 * 5 + 1 * 17))  # theory.md: ln Q sum d*_l (d_{l-1}+1)
    assert report["c_tilde_bits"] == pytest.approx(report["c_tilde"] / math.log(2))
    assert report["epsilon"] == pytest.approx((report["c_tilde"] + math.log(100)) / 1000)
    assert report["n_required"] == math.ceil((report["c_tilde"] + math.log(100)) / 0.1)
    assert report["target_epsilon"] == 0.1 and report["n"] == 1000 and report["delta"] == 0.01
    assert (report["arch"], report["in_dim"], report["teacher_widths"], report["student_widths"]) == (
        "fcn",
        4,
        [2],
        [16],
    )
    assert report["prior"] == "quantized:3" and report["q"] == 3 and report["zero_prob"] == pytest.approx(1 / 3)
    assert report["variant"] == "worst-case" and report["placements_used"] is False
    assert report["terms"]["teacher_params"] == pytest.approx(13 * math.log(3))
    assert report["counts"]["zero_weights"] == 14 and report["counts"]["student_params"] == 97
    assert report["c_tilde_all_params"] == pytest.approx(97 * math.log(3))


def test_json_without_n_or_epsilon_has_neither(capsys):
    report = run_json(capsys, *FCN_ARGS)
    assert "epsilon" not in report and "n_required" not in report and report["plot"] is None


def test_json_scaled_and_zero_probability(capsys):
    report = run_json(
        capsys,
        "bound",
        "--arch",
        "sfcn",
        "--in-dim",
        "4",
        "--teacher-widths",
        "2,2",
        "--student-widths",
        "16,8",
        "--prior",
        "quantized:5",
        "--zero-prob",
        "0.5",
    )
    expected = c_tilde_fcn(4, (2, 2), (16, 8), 5, zero_prob=0.5, scaled=True)
    assert report["c_tilde"] == pytest.approx(expected.nats)
    p_min = min(0.5, 0.5 / 4)
    teacher_params = FCN(4, (2, 2), scaled=True).num_params()
    assert report["c_tilde"] == pytest.approx(teacher_params * math.log(1 / p_min) + (14 + 6) * math.log(2))


@pytest.mark.parametrize("arch", ["cnn", "scnn"])
def test_json_cnn_families(capsys, arch):
    report = run_json(
        capsys,
        "bound",
        "--arch",
        arch,
        "--in-shape",
        "1,8,8",
        "--teacher-widths",
        "2,3",
        "--student-widths",
        "8,8",
        "--kernel-size",
        "3",
        "--pool",
        "2,1",
    )
    expected = c_tilde_cnn((1, 8, 8), (2, 3), (8, 8), 3, q=3, pool=(2, 1), scaled=arch == "scnn")
    assert report["c_tilde"] == pytest.approx(expected.nats)
    assert report["in_shape"] == [1, 8, 8] and report["kernel_size"] == [3, 3] and report["pool"] == [2, 1]
    assert [layer["taps"] for layer in report["layers"]] == [9, 9, 1]  # 8 -> 6 -> 3 -> 1 spatial


def test_teacher_file_uses_its_weights_and_placements(capsys, tmp_path):
    arch = FCN(3, (2,))
    params = {
        "w1": torch.tensor([[[1.0, 0, -1], [0, 1, 1]]]),
        "b1": torch.tensor([[0.0, 1]]),
        "w2": torch.tensor([[[1.0, -1]]]),
        "b2": torch.tensor([[0.0]]),
    }
    teacher = Population(arch, QuantizedUniform.evenly_spaced(3), params)
    teacher.save(tmp_path / "teacher.pt")
    args = ["bound", "--arch", "fcn", "--student-widths", "6", "--teacher", tmp_path / "teacher.pt"]
    report = run_json(capsys, *args)
    expected = c_tilde_for(arch, FCN(3, (6,)), QuantizedUniform.evenly_spaced(3), teacher=teacher)
    assert report["variant"] == "teacher-specific" and report["placements_used"] is True
    assert report["placement_condition"] == "holds" and report["placement_layers"] == [1]
    assert report["c_tilde"] == pytest.approx(expected.nats)
    assert report["terms"]["placements"] == pytest.approx(-math.log(6 * 5))
    assert report["teacher_widths"] == [2] and report["in_dim"] == 3
    off = run_json(capsys, *args, "--no-placements")
    assert off["placements_used"] is False and off["c_tilde"] == pytest.approx(report["c_tilde"] + math.log(30))


def test_forced_placements_without_teacher_are_assumed(capsys):
    report = run_json(capsys, *FCN_ARGS, "--placements")
    assert report["placements_used"] is True and report["placement_condition"].startswith("assumed")
    assert report["c_tilde"] == pytest.approx(c_tilde_fcn(4, (2,), (16,), 3).nats - math.log(16 * 15))


@pytest.mark.parametrize("prior", ["gaussian:1.0", "uniform:0.5"])
def test_continuous_prior_with_margin(capsys, prior):
    report = run_json(
        capsys,
        *FCN_ARGS[:-4],
        "--teacher-widths",
        "2",
        "--student-widths",
        "8",
        "--prior",
        prior,
        "--margin",
        "0.1",
        "--n",
        500,
    )
    assert report["variant"] == "margin" and report["margin"] == 0.1 and report["notes"]
    if prior.startswith("gaussian"):
        assert report["c_tilde"] == pytest.approx(c_tilde_margin(FCN(4, (2,)), FCN(4, (8,)), Gaussian(1.0), 0.1).nats)
    assert report["epsilon"] == pytest.approx((report["c_tilde"] + math.log(20)) / 500)


def test_table_output(capsys):
    code = main([*FCN_ARGS, "--n", "1000", "--epsilon", "0.1"])
    out = capsys.readouterr().out
    assert code == 0
    assert "C~ (nats)" in out and "C~ (bits)" in out and f"{c_tilde_fcn(4, (2,), (16,), 3).nats:.4f}" in out
    assert "epsilon at n = 1000" in out and "n for epsilon = 0.1" in out


def test_plot_is_written(capsys, tmp_path):
    path = tmp_path / "eps.png"
    report = run_json(capsys, *FCN_ARGS, "--n", 200, "--epsilon", 0.2, "--plot", path)
    assert report["plot"] == str(path)
    assert path.read_bytes()[:4] == b"\x89PNG"


FCN_REST = ["--arch", "fcn", "--in-dim", "4", "--student-widths", "16"]
BAD = {  # arguments after `bound`, and what the error must say
    "teacher wider": ([*FCN_REST, "--teacher-widths", "20"], "exceed student widths"),
    "mismatched depths": ([*FCN_REST, "--teacher-widths", "2,2"], "depth"),
    "missing teacher widths": (FCN_REST, "--teacher-widths is missing"),
    "q0 zero": ([*FCN_ARGS[1:], "--zero-prob", "0"], "strictly between 0 and 1"),
    "q0 above one": ([*FCN_ARGS[1:], "--zero-prob", "1.5"], "strictly between 0 and 1"),
    "Q below 2": ([*FCN_ARGS[1:], "--prior", "quantized:1"], "Q"),
    "uniform without margin": ([*FCN_ARGS[1:], "--prior", "uniform:1"], "--margin"),
    "margin out of range": ([*FCN_ARGS[1:], "--prior", "gaussian:1", "--margin", "3"], "(0, pi/2]"),
    "margin with quantized": ([*FCN_ARGS[1:], "--margin", "0.1"], "continuous priors"),
    "zero-prob with gaussian": (
        [*FCN_ARGS[1:], "--prior", "gaussian:1", "--margin", "0.1", "--zero-prob", "0.5"],
        "quantized priors",
    ),
    "bad delta": ([*FCN_ARGS[1:], "--delta", "1"], "delta"),
    "bad epsilon": ([*FCN_ARGS[1:], "--epsilon", "0"], "epsilon"),
    "bad n": ([*FCN_ARGS[1:], "--n", "0"], "positive integer"),
    "plot suffix": ([*FCN_ARGS[1:], "--plot", "{tmp}/eps.txt"], ".png"),
    "plot folder": ([*FCN_ARGS[1:], "--plot", "{tmp}/missing/eps.png"], "does not exist"),
    "unknown arch": (
        ["--arch", "diag", "--in-dim", "4", "--teacher-widths", "2", "--student-widths", "4"],
        "no C~ bound",
    ),
    "in-shape for fcn": ([*FCN_ARGS[1:], "--in-shape", "1,4"], "--in-shape is for cnn"),
    "in-dim for cnn": (
        ["--arch", "cnn", "--in-dim", "4", "--teacher-widths", "2", "--student-widths", "4"],
        "--in-dim is for fcn",
    ),
    "cnn without in-shape": (
        ["--arch", "cnn", "--teacher-widths", "2", "--student-widths", "4"],
        "--in-shape is missing",
    ),
    "kernel too big": (
        ["--arch", "cnn", "--in-shape", "1,4", "--kernel-size", "5", "--teacher-widths", "1", "--student-widths", "2"],
        "does not fit",
    ),
    "infeasible placements": ([*FCN_REST, "--teacher-widths", "3", "--placements"], "no teacher with 3 levels"),
    "missing teacher file": ([*FCN_REST, "--teacher", "{tmp}/none.pt"], "does not exist"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, tmp_path, capsys):
    extra, expected = BAD[case]
    args = ["bound", *(a.format(tmp=tmp_path) for a in extra)]
    if "--plot" not in args:
        args += ["--plot", str(tmp_path / "eps.png")]  # a plot that must not be written
    code = main(args)
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and expected in err, err
    assert captured.out == "" and not list(tmp_path.iterdir())


def test_missing_student_widths_is_a_usage_error(capsys):
    code = main(["bound", "--in-dim", "4", "--teacher-widths", "2"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "student-widths" in err and len(err.splitlines()) == 1
