"""Experiments: a config, pure cells, and the driver behind ``typicalnets run``.

A *cell* is one (method, n, seed): it is a pure function of the config and those three values
(the task, the teacher and the sampler's random stream are all derived from them), so cells can be
re-run, resumed or farmed out anywhere and give the same rows.

Methods are ``SAMPLER:STUDENT[:SHAPE]`` with SAMPLER ``gc`` (Guess & Check), ``smc`` (sequential
Monte Carlo) or ``sgd``, and STUDENT ``fcn`` (vanilla), ``sfcn`` (scaled-neuron) or ``lenet``
(image data sets only). SHAPE overrides the student's size for that method, so one config sweeps
widths and depths: hidden widths joined by ``x`` for fcn/sfcn (``gc:fcn:32x32`` is two hidden
layers of 32), the width factor for lenet (``sgd:lenet:0.5``). With ``smc_fallback`` (the default)
a G&C cell whose draw or time budget runs out before ``count`` networks is re-run by SMC; its rows
then say ``sampler = smc``.

The task is either a teacher-student task (one vanilla FCN teacher of ``teacher_widths``, or the
saved network ``teacher``, labels Gaussian/uniform/Boolean inputs) or, with ``dataset``, a class
pair of an offline data set (``typicalnets.data.load_binary_task``: ceil(max(n) / 2) training
examples per class drawn with the task seed, interleaved by class, and every test example of the
two classes). Either way all methods see the same tasks; fully connected students see images flattened.

SGD cells train ``count`` networks with the sampler defaults of ``typicalnets.methods.MethodSpec``
(the learning rate scaled to the init unless ``sgd_lr`` is given) under ``sgd_max_steps`` and the
cell's ``time_limit``. A network that has not reached zero training error by then is no
interpolator: its row in results.csv says ``converged = False``, the cell counts it, and the
accuracy table, the plots and the printed tables leave it out (they compare interpolators).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from rich.console import Console
from rich.table import Table

from typicalnets.data import STANDARDIZATIONS, Dataset, load_binary_task
from typicalnets.errors import TypicalnetsError, build_model
from typicalnets.methods import MethodSpec, run_method
from typicalnets.nets import DEFAULT_WIDTH_FACTOR, FCN, Architecture, LeNet, Population
from typicalnets.priors import Prior, QuantizedUniform, parse_prior
from typicalnets.report import (
    accuracy_intervals,
    error_quantiles,
    plot_accuracy_vs_n,
    plot_error_vs_n,
    plot_volume_vs_n,
    volume_violations,
)
from typicalnets.resources import check_device, check_memory_bytes, check_seed
from typicalnets.store import staged_output, write_json
from typicalnets.teachers import PROBE_SIZE, Task, check_narrower, make_task, narrow_teacher
from typicalnets.theory import c_tilde_for

SAMPLERS = ("gc", "smc", "sgd")
SPEC = MethodSpec()  # the sampler defaults, defined once in typicalnets.methods
STUDENTS = ("fcn", "sfcn", "lenet")


def parse_method(method: str) -> tuple[str, str, str]:
    """``SAMPLER:STUDENT[:SHAPE]`` -> (sampler, student, shape or ""); raises ValueError when malformed."""
    sampler, _, rest = method.partition(":")
    student, _, shape = rest.partition(":")
    if sampler not in SAMPLERS or student not in STUDENTS:
        raise ValueError(
            f"method {method!r} must be SAMPLER:STUDENT[:SHAPE] with SAMPLER in {SAMPLERS} and STUDENT in {STUDENTS}"
        )
    if shape:
        try:
            values = [float(v) for v in shape.split("x")] if student == "lenet" else [int(v) for v in shape.split("x")]
        except ValueError:
            values = []
        if len(values) != 1 if student == "lenet" else not values:
            raise ValueError(
                f"method {method!r}: SHAPE is hidden widths joined by x (fcn:32x32) or a lenet width factor (lenet:0.5)"
            )
        if any(v <= 0 for v in values):
            raise ValueError(f"method {method!r}: widths and width factors must be positive")
    return sampler, student, shape


def _int_list(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return [int(v) for v in value.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"expected comma-separated integers, got {value!r}") from None
    return value


class RunConfig(BaseModel):
    """Every knob of ``typicalnets run``; TOML config files use the same names."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seeds: list[int] = Field([0], description="task seeds; one teacher and dataset per seed")
    dataset: str = Field(
        "",
        description="offline data set (digits, fashion-mnist, mnist, cifar10 or an .npz/.csv "
        "path) instead of a teacher-student task",
    )
    classes: list[str] = Field([], description="dataset: the class pair A,B (A is labelled +1)")
    data_dir: str = Field("", description="dataset: directory holding fashion-mnist, mnist or cifar10 files")
    standardize: str = Field("global", description="dataset: none, global or feature")
    input: Literal["gaussian", "uniform", "boolean"] = Field("gaussian", description="input distribution")
    in_dim: int = Field(4, ge=1, description="input dimension d")
    teacher_widths: list[int] = Field([2], description="hidden widths of the narrow teacher")
    teacher: str = Field("", description="saved teacher population (.pt, one network) used instead of a drawn one")
    student_widths: list[int] = Field([16], description="hidden widths of the students")
    activation: Literal["relu", "sign", "leaky-relu", "tanh"] = "relu"
    bias: bool = True
    prior: str = Field("quantized:3", description="quantized:Q, uniform:A or gaussian:SIGMA")
    n: list[int] = Field([4, 8, 16, 32], description="training-set sizes")
    n_test: int = Field(10_000, ge=1, description="test examples per task")
    count: int = Field(100, ge=1, description="networks per method and n")
    methods: list[str] = Field(["gc:fcn", "gc:sfcn", "sgd:fcn"], description="SAMPLER:STUDENT[:SHAPE] triples")
    lenet_width_factor: float = Field(
        DEFAULT_WIDTH_FACTOR, gt=0, description="lenet students' width factor (0.5 = 3, 8, 60, 42)"
    )
    device: Literal["cpu", "cuda"] = Field("cpu", description="where samplers and SGD run")
    engine: Literal["fast", "native", "torch", "baseline"] = Field(SPEC.engine, description="G&C engine")
    label_noise: float = Field(0.0, ge=0.0, lt=0.5, description="probability of flipping each training label")
    random_labels: bool = Field(
        False, description="replace every train and test label by a fair coin flip (no teacher: nothing to generalize)"
    )
    max_majority: float = Field(0.75, ge=0.5, le=1.0, description="largest majority-label share of the teacher")
    max_draws: int = Field(100_000_000, ge=1, description="G&C draw budget per cell")
    time_limit: float = Field(300.0, gt=0, description="time budget per G&C or SGD cell, seconds")
    batch_size: int = Field(SPEC.batch_size, ge=1, description="G&C networks per batch")
    smc_fallback: bool = Field(True, description="re-run by SMC the G&C cells that run out of budget")
    smc_particles: int | None = Field(SPEC.particles, ge=2, description="SMC particles per run (default: from count)")
    smc_repeats: int | None = Field(SPEC.repeats, ge=1, description="independent SMC runs per cell (default: 2)")
    smc_refresh: float = Field(SPEC.refresh, gt=0, description="SMC: accepted moves per particle per step, in sweeps")
    sgd_init: Literal["prior", "standard"] = SPEC.sgd_init
    sgd_loss: Literal["logistic", "hinge"] = SPEC.sgd_loss
    sgd_lr: float | None = Field(SPEC.sgd_lr, gt=0, description="SGD learning rate [default: scaled to the init]")
    sgd_batch_size: int = Field(0, ge=0, description="mini-batch size; 0 = full batch")
    sgd_max_steps: int = Field(SPEC.sgd_max_steps, ge=1)

    _split = field_validator("seeds", "teacher_widths", "student_widths", "n", mode="before")(_int_list)

    @field_validator("seeds")
    @classmethod
    def _check_seeds(cls, value: list[int]) -> list[int]:
        for seed in value:
            check_seed(seed, "seeds")
        return value

    @field_validator("classes", mode="before")
    @classmethod
    def _split_classes(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        return [str(v) for v in value] if isinstance(value, (list, tuple)) else value

    @field_validator("standardize")
    @classmethod
    def _check_standardize(cls, value: str) -> str:
        if value not in STANDARDIZATIONS:
            raise ValueError(f"unknown standardisation {value!r}; use one of {', '.join(STANDARDIZATIONS)}")
        return value

    @field_validator("methods", mode="before")
    @classmethod
    def _split_methods(cls, value: Any) -> Any:
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value

    @field_validator("methods")
    @classmethod
    def _check_methods(cls, value: list[str]) -> list[str]:
        for method in value:
            parse_method(method)
        if not value:
            raise ValueError("give at least one method, e.g. gc:fcn")
        return value

    @field_validator("prior")
    @classmethod
    def _check_prior(cls, value: str) -> str:
        return parse_prior(value).spec()

    @model_validator(mode="after")
    def _check_sizes(self) -> RunConfig:
        for name in ("seeds", "teacher_widths", "student_widths", "n"):
            if not getattr(self, name):
                raise ValueError(f"{name} is empty; give at least one value")
        if any(w < 1 for w in self.teacher_widths + self.student_widths) or any(k < 1 for k in self.n):
            raise ValueError("widths and n must be positive integers")
        if len(self.classes) not in (0, 2):
            raise ValueError(f"classes must be a pair A,B, got {self.classes}")
        if not self.dataset and (self.classes or self.data_dir):
            raise ValueError("classes and data_dir apply only with a dataset; set dataset or drop them")
        if self.dataset and self.random_labels:
            raise ValueError("random_labels replaces a teacher's labels; drop it with a dataset")
        if self.dataset and self.teacher:
            raise ValueError("a dataset has its own labels; drop teacher (or dataset)")
        students = [parse_method(m)[1:] for m in self.methods]
        if not self.dataset and any(student == "lenet" for student, _ in students):
            raise ValueError("lenet students need image inputs; set dataset (e.g. fashion-mnist) or use fcn/sfcn")
        if not self.teacher and not self.dataset:
            for student, shape in students:
                check_narrower(self.teacher_arch(), self.student_arch(student, shape, (self.in_dim,)))
        return self

    @classmethod
    def build(cls, values: dict[str, Any], strict: bool = False) -> RunConfig:
        """Validate ``values``, turning the first problem into a one-line TypicalnetsError. With
        ``strict`` every value must have its field's exact type (``count = true`` or ``bias = "yes"``
        in a TOML file are refused, not read as 1 and True); lists may still be comma-separated strings."""
        return build_model(cls, values, strict)

    @property
    def prior_obj(self) -> Prior:
        return parse_prior(self.prior)

    def method_spec(self, sampler: str) -> MethodSpec:
        """The settings of this config's ``sampler`` cells, as ``run_method`` takes them."""
        return MethodSpec(
            sampler=sampler,
            device=self.device,
            engine=self.engine,
            batch_size=self.batch_size,
            particles=self.smc_particles,
            repeats=self.smc_repeats,
            refresh=self.smc_refresh,
            sgd_init=self.sgd_init,
            sgd_loss=self.sgd_loss,
            sgd_lr=self.sgd_lr,
            sgd_batch_size=self.sgd_batch_size or None,
            sgd_max_steps=self.sgd_max_steps,
        )

    def teacher_arch(self) -> FCN:
        return FCN(self.in_dim, tuple(self.teacher_widths), self.activation, self.bias)

    def student_arch(self, student: str, shape: str = "", input_shape: tuple[int, ...] | None = None) -> Architecture:
        """The student of a method: fcn/sfcn of ``student_widths`` (or SHAPE's), or lenet on image inputs."""
        input_shape = input_shape or (self.in_dim,)
        if student == "lenet":
            if len(input_shape) != 3:
                raise TypicalnetsError(f"lenet students need image inputs (c, h, w), got {input_shape}; use fcn")
            return LeNet.with_width_factor(float(shape) if shape else self.lenet_width_factor, input_shape)
        widths = tuple(int(v) for v in shape.split("x")) if shape else tuple(self.student_widths)
        return FCN(math.prod(input_shape), widths, self.activation, self.bias, scaled=student == "sfcn")


def derived_seed(*parts: Any) -> int:
    """A stable 63-bit seed from any parts (same on every machine and Python run)."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def load_teacher(config: RunConfig) -> Population:
    """The explicit teacher of ``config.teacher``: one network whose inputs match ``in_dim``."""
    teacher = Population.load(config.teacher)
    if len(teacher) != 1 or teacher.arch.input_shape != (config.in_dim,):
        raise TypicalnetsError(
            f"teacher {config.teacher} holds {len(teacher)} network(s) with inputs {teacher.arch.input_shape}; "
            f"give one network with inputs ({config.in_dim},) or change --in-dim"
        )
    if isinstance(teacher.arch, FCN):
        check_narrower(teacher.arch, config.student_arch("fcn"))
    return teacher


def build_task(config: RunConfig, seed: int) -> Task:
    """The seed's teacher (none for a data set) and data: train on the first n of a pool of max(n) examples."""
    gen = torch.Generator().manual_seed(derived_seed("task", seed))
    if not config.dataset:  # inputs and labels of the pool, the test set and the teacher's probe, and a copy of each
        check_memory_bytes(
            2 * (max(config.n) + config.n_test + PROBE_SIZE) * (4 * config.in_dim + 1),
            f"{max(config.n):,} training and {config.n_test:,} test inputs of dimension {config.in_dim:,}",
            "lower n, n_test or in_dim",
        )
    if config.dataset:
        task = load_binary_task(
            config.dataset,
            config.classes or None,
            math.ceil(max(config.n) / 2),
            seed=seed,
            standardize=config.standardize,
            data_dir=config.data_dir or None,
        )
        flipped = torch.rand(task.train.n, generator=gen) < config.label_noise
        noisy = torch.where(flipped, -task.train.y, task.train.y).to(torch.int8)
        return Task(None, Dataset(task.train.x, noisy), task.test, flipped, task.info())
    if config.teacher:
        teacher = load_teacher(config)
    else:
        teacher = narrow_teacher(config.teacher_arch(), config.prior_obj, gen, config.input, config.max_majority)
    task = make_task(teacher, max(config.n), config.n_test, gen, config.input, config.label_noise)
    if config.random_labels:
        train_y, test_y = (2 * torch.randint(2, (count,), generator=gen) - 1 for count in (task.train.n, task.test.n))
        task = replace(
            task, train=Dataset(task.train.x, train_y.to(torch.int8)), test=Dataset(task.test.x, test_y.to(torch.int8))
        )
    return task


def _inputs_for(arch: Architecture, data: Dataset) -> Dataset:
    """Images flattened for fully connected students; anything else as it is."""
    if isinstance(arch, FCN) and data.x.dim() > 2:
        return Dataset(data.x.reshape(len(data.x), -1), data.y)
    return data


@dataclass(frozen=True)
class CellResult:
    rows: list[dict[str, Any]]
    summary: dict[str, Any]


def run_cell(
    config: RunConfig, method: str, n: int, seed: int, task: Task | None = None, progress: bool = False
) -> CellResult:
    """One (method, n, seed): sample or train ``config.count`` networks and measure their errors."""
    task = build_task(config, seed) if task is None else task
    sampler, student, shape = parse_method(method)
    arch = config.student_arch(student, shape, task.train.input_shape)
    train, test = _inputs_for(arch, task.train.head(n)), _inputs_for(arch, task.test)
    device = config.device
    rng = torch.Generator(device=device).manual_seed(derived_seed("cell", seed, method, n))
    label = f"{method} n={n} seed={seed}"
    summary: dict[str, Any] = {"method": method, "n": n, "seed": seed, "arch": arch.describe()}
    if sampler in ("gc", "smc"):
        ran = None
        if sampler == "gc":
            spec = config.method_spec("gc")
            ran = run_method(
                spec,
                arch,
                config.prior_obj,
                train,
                rng,
                config.count,
                config.max_draws,
                config.time_limit,
                progress,
                label,
            )
        if sampler == "smc" or (len(ran.population) < config.count and config.smc_fallback):
            sampler = "smc"
            ran = run_method(
                config.method_spec("smc"), arch, config.prior_obj, train, rng, config.count, progress=progress
            )
        done = ran.summary
        log_low, log_high = done["log_prob_interpolate_ci"]
        summary.update(
            sampler=sampler,
            networks=done["count"],
            draws=done["draws"],
            log_prob_interpolate=done["log_prob_interpolate"],
            log_prob_ci_low=log_low,
            log_prob_ci_high=log_high,
            stop_reason=done["stop_reason"],
            seconds=done["seconds"],
            message=done["message"],
        )
        if sampler == "gc":
            low, high = done["acceptance_ci"]
            summary.update(acceptance_rate=done["acceptance_rate"], acceptance_ci_low=low, acceptance_ci_high=high)
    else:
        ran = run_method(
            config.method_spec("sgd"),
            arch,
            config.prior_obj,
            train,
            rng,
            config.count,
            time_limit=config.time_limit,
            progress=progress,
            description=label,
        )
        done = ran.summary
        summary.update(
            networks=done["count"],
            converged=done["converged"],
            not_converged=done["count"] - done["converged"],
            sgd_lr=done["sgd"]["lr"],
            stop_reason=done["stop_reason"],
            seconds=done["seconds"],
            message=done["message"],
        )
    population, draws = ran.population, ran.summary["draws"]
    converged, steps = ran.converged.tolist(), ran.steps.tolist()
    population = population.to("cpu")
    train_err = population.errors(train.x, train.y).tolist()
    test_err = population.errors(test.x, test.y).tolist()
    rows = [
        {
            "method": method,
            "sampler": sampler,
            "arch": arch.describe(),
            "n": n,
            "seed": seed,
            "network": i,
            "train_error": train_err[i],
            "test_error": test_err[i],
            "draws": draws,
            "converged": converged[i],
            "steps": steps[i],
        }
        for i in range(len(population))
    ]
    return CellResult(rows, summary)


def student_bounds(config: RunConfig, task: Task) -> dict[str, float]:
    """C~ (nats) of each G&C/SMC method's student for this task's teacher: teacher-specific, with the
    placement term where it is proven (``typicalnets.theory.c_tilde_for``). Only noiseless
    teacher-student tasks with a quantized prior have one."""
    if (
        task.teacher is None
        or config.label_noise > 0
        or config.random_labels
        or not isinstance(config.prior_obj, QuantizedUniform)
    ):
        return {}
    bounds = {}
    for method in config.methods:
        sampler, student, shape = parse_method(method)
        if sampler != "sgd":
            arch = config.student_arch(student, shape, task.train.input_shape)
            bounds[method] = c_tilde_for(task.teacher.arch, arch, config.prior_obj, task.teacher).nats
    return bounds


def experiment_inputs(config: RunConfig) -> list[Path]:
    """The files ``config`` reads (a saved teacher, a data file), which its output must not replace."""
    return [Path(path) for path in (config.teacher, config.dataset) if path and Path(path).exists()]


def run_experiment(
    config: RunConfig,
    out: Path,
    overwrite: bool = False,
    progress: bool = True,
    console: Console | None = None,
    inputs: list[Path] = (),
) -> pd.DataFrame:
    """Run every cell; write results.csv/.parquet, cells.csv, accuracy.csv, manifest.json and plots.

    Plots: test error against n (with the C~ bound of each student, for teacher-student tasks),
    test accuracy against n (mean and 95% interval) and, where there is a bound, the measured
    -ln P(L_S = 0) against C~. A measurement above C~ beyond its interval contradicts the theory:
    it is printed in red, listed in manifest.json under ``bound_violations`` and ringed in the plot.
    ``inputs``: further files the run read (its config file), which ``out`` must not contain.
    """
    console = console or Console(stderr=True)
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    cells: list[dict[str, Any]] = []
    bounds: dict[int, dict[str, float]] = {}
    data_info: dict[int, Any] = {}
    check_device(config.device)
    with staged_output(out, overwrite, [*inputs, *experiment_inputs(config)]) as staging:
        for seed in config.seeds:
            task = build_task(config, seed)
            for method in config.methods:  # a student that does not fit the data fails before any work
                config.student_arch(*parse_method(method)[1:], task.train.input_shape)
            if task.teacher is not None:
                task.teacher.save(staging / f"teacher-seed{seed}.pt")
            data_info[seed] = task.info
            bounds[seed] = student_bounds(config, task)
            for n in config.n:
                for method in config.methods:
                    cell = run_cell(config, method, n, seed, task, progress)
                    cell.summary["c_tilde"] = bounds[seed].get(method)
                    rows.extend(cell.rows)
                    cells.append(cell.summary)
                    console.print(f"[dim]{cell.summary['message']}[/dim]  ({method}, n={n}, seed={seed})")
        table = pd.DataFrame(
            rows,
            columns=[
                "method",
                "sampler",
                "arch",
                "n",
                "seed",
                "network",
                "train_error",
                "test_error",
                "draws",
                "converged",
                "steps",
            ],
        )
        table.to_csv(staging / "results.csv", index=False)
        table.to_parquet(staging / "results.parquet", index=False)
        cell_table = pd.DataFrame(cells)
        cell_table.to_csv(staging / "cells.csv", index=False)
        interpolators = table[table["converged"].astype(bool)]  # what the tables and plots compare
        accuracy_intervals(interpolators).to_csv(staging / "accuracy.csv", index=False)
        # One bound per method: the largest over seeds (every seed's C~ bounds its own cells).
        method_bounds = {
            m: max(b[m] for b in bounds.values() if m in b)
            for m in config.methods
            if any(m in b for b in bounds.values())
        }
        violations = (
            pd.concat(
                [volume_violations(cell_table[cell_table["seed"] == seed], bounds[seed]) for seed in config.seeds]
            )
            if len(cell_table)
            else cell_table
        )
        title = (
            f"{config.dataset} {','.join(config.classes)}"
            if config.dataset
            else f"teacher fcn{config.teacher_widths} -> students {config.student_widths}"
        ) + f", {config.prior}"
        if len(interpolators):
            plot_error_vs_n(interpolators, staging / "test_error_vs_n.png", title, method_bounds)
            plot_accuracy_vs_n(interpolators, staging / "test_accuracy_vs_n.png", title)
        if method_bounds and len(cell_table):
            plot_volume_vs_n(cell_table, staging / "volume_vs_c_tilde.png", method_bounds, title)
        write_json(
            staging / "manifest.json",
            {
                "config": config.model_dump(),
                "seconds": time.perf_counter() - start,
                "torch": torch.__version__,
                "data": data_info,
                "c_tilde": {str(seed): b for seed, b in bounds.items()},
                "bound_violations": violations[
                    ["method", "n", "seed", "log_prob_interpolate", "log_prob_ci_high", "c_tilde"]
                ].to_dict("records")
                if len(violations)
                else [],
                "cells": cells,
            },
        )
    print_summary(table, console)
    print_not_converged(cell_table, console)
    for record in violations.to_dict("records") if len(violations) else []:
        console.print(
            f"[bold red]BOUND VIOLATED: {record['method']} n={record['n']} seed={record['seed']}: "
            f"-ln P(L_S = 0) >= {-record['log_prob_ci_high']:.2f} > C~ = {record['c_tilde']:.2f}; "
            "the sampler or the bound is wrong: please report it[/bold red]"
        )
    console.print(f"results in {out}")
    return table


def _table_by_n(title: str, frame: pd.DataFrame, sizes: list, cell) -> Table:
    """One row per method, one column per n; ``cell(row)`` formats a (method, n) row of ``frame``."""
    view = Table(title=title)
    view.add_column("method")
    for n in sizes:
        view.add_column(f"n={n}", justify="right")
    for method, part in frame.groupby("method", sort=False):
        by_n = part.set_index("n")
        view.add_row(method, *(cell(by_n.loc[n]) if n in by_n.index else "-" for n in sizes))
    return view


def print_not_converged(cells: pd.DataFrame, console: Console) -> None:
    """One line per SGD cell with networks that did not reach zero training error (left out of the tables)."""
    if "not_converged" not in cells:
        return
    for cell in cells[cells["not_converged"].fillna(0) > 0].to_dict("records"):
        console.print(
            f"[yellow]{cell['method']} n={cell['n']} seed={cell['seed']}: {int(cell['not_converged'])} of "
            f"{int(cell['networks'])} SGD networks did not reach zero training error ({cell['stop_reason']}); "
            "they are in results.csv with converged = False and left out of the tables and plots[/yellow]"
        )


def print_summary(table: pd.DataFrame, console: Console) -> None:
    """The interpolators' test error and accuracy per method and n (SGD networks that did not converge left out)."""
    table = table[table["converged"].astype(bool)]
    if not len(table):
        console.print("no interpolators were produced; every cell ran out of budget")
        return
    quantiles = error_quantiles(table)
    sizes = sorted(quantiles["n"].unique())
    console.print(
        _table_by_n(
            "test error: median [IQR] (networks)",
            quantiles,
            sizes,
            lambda r: f"{r['median']:.3f} [{r['q25']:.3f}-{r['q75']:.3f}] ({r['networks']})",
        )
    )
    console.print(
        _table_by_n(
            "test accuracy: mean ± 95% interval",
            accuracy_intervals(table),
            sizes,
            lambda r: f"{r['accuracy_mean']:.3f} ± {r['accuracy_ci_high'] - r['accuracy_mean']:.3f}",
        )
    )
