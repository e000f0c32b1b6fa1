"""Teacher-student experiments: a config, pure cells, and the driver behind ``typicalnets run``.

A *cell* is one (method, n, seed): it is a pure function of the config and those three values
(the task, the teacher and the sampler's random stream are all derived from them), so cells can be
re-run, resumed or farmed out anywhere and give the same rows.

Methods are ``SAMPLER:STUDENT`` with SAMPLER ``gc`` (Guess & Check), ``smc`` (sequential Monte
Carlo) or ``sgd``, and STUDENT ``fcn`` (vanilla) or ``sfcn`` (scaled-neuron). With ``smc_fallback``
(the default) a G&C cell whose draw or time budget runs out before ``count`` networks is re-run by
SMC; its rows then say ``sampler = smc``. One vanilla FCN teacher of ``teacher_widths``
(or the saved network ``teacher``) labels the data for every method, so all methods see the same tasks.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from rich.console import Console
from rich.table import Table

from typicalnets.errors import TypicalnetsError
from typicalnets.nets import FCN, Population
from typicalnets.priors import Prior, parse_prior
from typicalnets.report import error_quantiles, plot_error_vs_n
from typicalnets.samplers import GuessAndCheck, SequentialMonteCarlo, sample, sample_smc
from typicalnets.samplers.sgd import train_sgd
from typicalnets.store import staged_output, write_json
from typicalnets.teachers import Task, check_narrower, make_task, narrow_teacher

SAMPLERS = ("gc", "smc", "sgd")
STUDENTS = ("fcn", "sfcn")


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
    methods: list[str] = Field(["gc:fcn", "gc:sfcn", "sgd:fcn"], description="SAMPLER:STUDENT pairs")
    label_noise: float = Field(0.0, ge=0.0, lt=0.5, description="probability of flipping each training label")
    max_majority: float = Field(0.75, ge=0.5, le=1.0, description="largest majority-label share of the teacher")
    max_draws: int = Field(100_000_000, ge=1, description="G&C draw budget per cell")
    time_limit: float = Field(300.0, gt=0, description="G&C time budget per cell, seconds")
    batch_size: int = Field(16_384, ge=1, description="G&C networks per batch")
    smc_fallback: bool = Field(True, description="re-run by SMC the G&C cells that run out of budget")
    smc_particles: int = Field(1000, ge=2, description="SMC particles per run")
    smc_repeats: int = Field(4, ge=1, description="independent SMC runs per cell (>= 2 gives an interval)")
    sgd_init: Literal["prior", "standard"] = "prior"
    sgd_loss: Literal["logistic", "hinge"] = "logistic"
    sgd_lr: float = Field(0.1, gt=0)
    sgd_batch_size: int = Field(0, ge=0, description="mini-batch size; 0 = full batch")
    sgd_max_steps: int = Field(10_000, ge=1)

    _split = field_validator("seeds", "teacher_widths", "student_widths", "n", mode="before")(_int_list)

    @field_validator("methods", mode="before")
    @classmethod
    def _split_methods(cls, value: Any) -> Any:
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value

    @field_validator("methods")
    @classmethod
    def _check_methods(cls, value: list[str]) -> list[str]:
        for method in value:
            sampler, _, student = method.partition(":")
            if sampler not in SAMPLERS or student not in STUDENTS:
                raise ValueError(f"method {method!r} must be SAMPLER:STUDENT with SAMPLER in {SAMPLERS} and STUDENT in {STUDENTS}")
        if not value:
            raise ValueError("give at least one method, e.g. gc:fcn")
        return value

    @field_validator("prior")
    @classmethod
    def _check_prior(cls, value: str) -> str:
        return parse_prior(value).spec()

    @model_validator(mode="after")
    def _check_sizes(self) -> "RunConfig":
        for name in ("seeds", "teacher_widths", "student_widths", "n"):
            if not getattr(self, name):
                raise ValueError(f"{name} is empty; give at least one value")
        if any(w < 1 for w in self.teacher_widths + self.student_widths) or any(k < 1 for k in self.n):
            raise ValueError("widths and n must be positive integers")
        if not self.teacher:
            check_narrower(self.teacher_arch(), self.student_arch("fcn"))
        return self

    @classmethod
    def build(cls, values: dict[str, Any]) -> "RunConfig":
        """Validate ``values``, turning the first problem into a one-line TypicalnetsError."""
        try:
            return cls(**values)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(p) for p in error["loc"]) or "config"
            message = str(error["msg"]).removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "unknown setting; remove it (typicalnets run --help lists the names)"
            elif ";" not in message:
                message += "; change it"
            raise TypicalnetsError(f"bad setting {where}: {message}") from None

    @property
    def prior_obj(self) -> Prior:
        return parse_prior(self.prior)

    def teacher_arch(self) -> FCN:
        return FCN(self.in_dim, tuple(self.teacher_widths), self.activation, self.bias)

    def student_arch(self, student: str) -> FCN:
        return FCN(self.in_dim, tuple(self.student_widths), self.activation, self.bias, scaled=student == "sfcn")


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
    """The seed's teacher and data: train on the first n of a pool of max(n) examples."""
    gen = torch.Generator().manual_seed(derived_seed("task", seed))
    if config.teacher:
        teacher = load_teacher(config)
    else:
        teacher = narrow_teacher(config.teacher_arch(), config.prior_obj, gen, config.input, config.max_majority)
    return make_task(teacher, max(config.n), config.n_test, gen, config.input, config.label_noise)


@dataclass(frozen=True)
class CellResult:
    rows: list[dict[str, Any]]
    summary: dict[str, Any]


def run_cell(config: RunConfig, method: str, n: int, seed: int, task: Task | None = None,
             progress: bool = False) -> CellResult:
    """One (method, n, seed): sample or train ``config.count`` networks and measure their errors."""
    task = build_task(config, seed) if task is None else task
    sampler, _, student = method.partition(":")
    arch = config.student_arch(student)
    train = task.train.head(n)
    rng = torch.Generator().manual_seed(derived_seed("cell", seed, method, n))
    label = f"{method} n={n} seed={seed}"
    summary: dict[str, Any] = {"method": method, "n": n, "seed": seed, "arch": arch.describe()}
    if sampler in ("gc", "smc"):
        result = None
        if sampler == "gc":
            result = sample(GuessAndCheck(arch, config.prior_obj, train, config.batch_size), rng, config.count,
                            config.max_draws, config.time_limit, progress, label)
        if sampler == "smc" or (result.count < config.count and config.smc_fallback):
            sampler = "smc"
            result = sample_smc(lambda: SequentialMonteCarlo(arch, config.prior_obj, train, config.smc_particles),
                                rng, config.count, config.smc_repeats, progress=progress)
        population, draws = result.population, result.draws
        log_low, log_high = result.log_prob_interpolate_ci
        summary.update(sampler=sampler, networks=result.count, draws=result.draws,
                       log_prob_interpolate=result.log_prob_interpolate, log_prob_ci_low=log_low,
                       log_prob_ci_high=log_high, stop_reason=result.stop_reason, seconds=result.seconds,
                       message=result.message())
        if sampler == "gc":
            low, high = result.acceptance_ci
            summary.update(acceptance_rate=result.acceptance_rate, acceptance_ci_low=low, acceptance_ci_high=high)
        converged = [True] * len(population)
        steps = [0] * len(population)
    else:
        result = train_sgd(arch, config.prior_obj, train, config.count, rng, init=config.sgd_init,
                           loss=config.sgd_loss, lr=config.sgd_lr, batch_size=config.sgd_batch_size or None,
                           max_steps=config.sgd_max_steps, progress=progress)
        population, draws = result.population, 0
        converged = result.converged.tolist()
        steps = result.steps.tolist()
        summary.update(networks=len(population), converged=int(sum(converged)), stop_reason=result.stop_reason,
                       seconds=result.seconds, message=result.message())
    train_err = population.errors(train.x, train.y).tolist()
    test_err = population.errors(task.test.x, task.test.y).tolist()
    rows = [
        {"method": method, "sampler": sampler, "arch": arch.describe(), "n": n, "seed": seed, "network": i,
         "train_error": train_err[i], "test_error": test_err[i], "draws": draws,
         "converged": converged[i], "steps": steps[i]}
        for i in range(len(population))
    ]
    return CellResult(rows, summary)


def run_experiment(config: RunConfig, out: Path, overwrite: bool = False, progress: bool = True,
                   console: Console | None = None) -> pd.DataFrame:
    """Run every cell and write results.csv/.parquet, cells.csv, manifest.json and the error-vs-n plot."""
    console = console or Console(stderr=True)
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    cells: list[dict[str, Any]] = []
    with staged_output(out, overwrite) as staging:
        for seed in config.seeds:
            task = build_task(config, seed)
            task.teacher.save(staging / f"teacher-seed{seed}.pt")
            for n in config.n:
                for method in config.methods:
                    cell = run_cell(config, method, n, seed, task, progress)
                    rows.extend(cell.rows)
                    cells.append(cell.summary)
                    console.print(f"[dim]{cell.summary['message']}[/dim]  ({method}, n={n}, seed={seed})")
        table = pd.DataFrame(rows, columns=["method", "sampler", "arch", "n", "seed", "network", "train_error",
                                            "test_error", "draws", "converged", "steps"])
        table.to_csv(staging / "results.csv", index=False)
        table.to_parquet(staging / "results.parquet", index=False)
        pd.DataFrame(cells).to_csv(staging / "cells.csv", index=False)
        if len(table):
            plot_error_vs_n(table, staging / "test_error_vs_n.png",
                            f"teacher fcn{config.teacher_widths} -> students {config.student_widths}, {config.prior}")
        write_json(staging / "manifest.json", {
            "config": config.model_dump(),
            "seconds": time.perf_counter() - start,
            "torch": torch.__version__,
            "cells": cells,
        })
    print_summary(table, console)
    console.print(f"results in {out}")
    return table


def print_summary(table: pd.DataFrame, console: Console) -> None:
    if not len(table):
        console.print("no networks were produced; every cell ran out of budget")
        return
    quantiles = error_quantiles(table)
    view = Table(title="test error: median [IQR] (networks)")
    view.add_column("method")
    sizes = sorted(quantiles["n"].unique())
    for n in sizes:
        view.add_column(f"n={n}", justify="right")
    for method, part in quantiles.groupby("method", sort=False):
        by_n = part.set_index("n")
        view.add_row(method, *(
            f"{by_n.at[n, 'median']:.3f} [{by_n.at[n, 'q25']:.3f}-{by_n.at[n, 'q75']:.3f}] ({by_n.at[n, 'networks']})"
            if n in by_n.index else "-" for n in sizes))
    console.print(view)
