"""One way to run a method: ``MethodSpec`` holds every sampler setting and its default, once, and
``run_method`` runs it and summarizes the run. ``typicalnets sample``, the cells of
``typicalnets run`` and the scikit-learn estimator all go through it.

SMC's size follows the request: unless ``particles`` and ``repeats`` are given, a run of ``count``
samples uses ``SMC_REPEATS`` independent runs (two, the fewest that give an interval for
ln P(L_S = 0)) of max(``SMC_MIN_PARTICLES``, ceil(count / repeats)) particles, so that asking for
100 samples buys 100 samples, not 4,000 particles.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from typicalnets.data import Dataset
from typicalnets.nets import Architecture, Population
from typicalnets.priors import Prior
from typicalnets.resources import check_device
from typicalnets.samplers import GuessAndCheck, SampleResult, SequentialMonteCarlo, SGDTrainer, sample, sample_smc
from typicalnets.samplers.gc import DEFAULT_BATCH
from typicalnets.samplers.sgd import DEFAULT_MAX_STEPS
from typicalnets.samplers.smc import DEFAULT_MAX_MOVES

SMC_REPEATS = 2
SMC_MIN_PARTICLES = 100


class MethodSpec(BaseModel):
    """How to sample (or train) networks; each field's default is the toolkit's default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sampler: Literal["gc", "smc", "sgd"] = Field("gc", description="gc (Guess & Check), smc or sgd")
    device: str = Field("cpu", description="where the sampler runs: cpu, cuda or cuda:N")
    engine: Literal["fast", "native", "torch", "baseline"] = Field("fast", description="G&C engine")
    batch_size: int = Field(DEFAULT_BATCH, ge=1, description="G&C networks per batch")
    mirror: bool = Field(True, description="G&C: draw mirrored pairs where the prior allows")
    loss_bin: tuple[float, float] | None = Field(None, description="G&C: also require LOW <= loss < HIGH")
    particles: int | None = Field(None, ge=2, description="SMC particles per run (default: from count)")
    repeats: int | None = Field(None, ge=1, description="independent SMC runs (default: 2)")
    block: int = Field(1, ge=1, description="SMC: training examples added per step")
    max_moves: int = Field(DEFAULT_MAX_MOVES, ge=0, description="SMC: most MCMC sweeps per step")
    refresh: float = Field(1.0, gt=0, description="SMC: accepted moves per particle per step, in sweeps")
    sgd_init: Literal["prior", "standard"] = Field("prior", description="SGD initialisation")
    sgd_loss: Literal["logistic", "hinge"] = Field("logistic", description="SGD loss")
    sgd_lr: float | None = Field(
        None, gt=0, description="SGD learning rate (None: scaled to the init, samplers.sgd.init_scaled_lr)"
    )
    sgd_batch_size: int | None = Field(None, ge=1, description="SGD mini-batch size (None: full batch)")
    sgd_max_steps: int = Field(DEFAULT_MAX_STEPS, ge=1, description="SGD step budget per network")
    sgd_epochs: int | None = Field(None, ge=1, description="SGD passes over the data (replaces sgd_max_steps)")
    sgd_momentum: float = Field(0.0, ge=0.0, lt=1.0, description="SGD momentum")
    sgd_stop: bool = Field(True, description="SGD: freeze each network at zero training error")

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        return check_device(value)

    @model_validator(mode="after")
    def _check_loss_bin(self) -> MethodSpec:
        if self.loss_bin is not None and not self.loss_bin[0] < self.loss_bin[1]:
            raise ValueError(f"loss_bin {list(self.loss_bin)} is empty; give LOW < HIGH")
        return self

    def smc_layout(self, count: int) -> tuple[int, int]:
        """(particles per run, runs) for ``count`` samples: the given ones, or derived from count."""
        repeats = self.repeats or SMC_REPEATS
        return self.particles or max(SMC_MIN_PARTICLES, math.ceil(count / repeats)), repeats


@dataclass(frozen=True)
class MethodResult:
    """What ``run_method`` produced: the networks, per-network flags, and a JSON-ready summary."""

    sampler: str
    population: Population
    converged: np.ndarray  # (K,) bool: interpolates the training set (always, for G&C and SMC)
    steps: np.ndarray  # (K,) int: SGD updates (0 for samplers)
    summary: dict[str, Any]
    raw: SampleResult = field(repr=False)
    diagnostics: tuple = ()  # SMC: one record per step

    def message(self) -> str:
        return self.raw.message()


def run_method(
    spec: MethodSpec,
    arch: Architecture,
    prior: Prior,
    train: Dataset,
    rng: torch.Generator,
    count: int,
    max_draws: int | None = None,
    time_limit: float | None = None,
    progress: bool = False,
    description: str | None = None,
    sink: Callable[[Population], None] | None = None,
) -> MethodResult:
    """Sample (G&C, SMC) or train (SGD) ``count`` networks on ``train`` under the budgets (SGD: the
    time limit and its step budget; it draws only its starting networks). ``sink``: G&C hands it
    each step's networks as they come, and its result then holds none (SMC and SGD return theirs)."""
    if spec.sampler == "gc":
        gc = GuessAndCheck(
            arch, prior, train, spec.batch_size, spec.device, spec.engine, spec.loss_bin, mirror=spec.mirror
        )
        result = sample(gc, rng, count, max_draws, time_limit, progress, description, sink)
        low, high = result.acceptance_ci
        summary = {
            "engine": gc.engine,
            "draws_per_trial": result.draws_per_trial,
            "accepted_total": result.accepted_total,
            "acceptance_rate": result.acceptance_rate,
            "acceptance_ci": [low, high],
            "loss_bin": list(spec.loss_bin) if spec.loss_bin else None,
        }
        return _sampled(spec, result, count, summary)
    if spec.sampler == "smc":
        particles, repeats = spec.smc_layout(count)
        result = sample_smc(
            SequentialMonteCarlo(
                arch,
                prior,
                train,
                particles,
                spec.block,
                max_moves=spec.max_moves,
                refresh=spec.refresh,
                device=spec.device,
            ),
            rng,
            count,
            repeats,
            max_draws,
            time_limit,
            progress,
        )
        estimate, (log_low, log_high) = result.log_prob_interpolate, result.log_prob_interpolate_ci
        # SMC estimates P(L_S = 0) itself; its SampleResult.acceptance_rate counts samples per draw.
        summary = {
            "acceptance_rate": math.exp(estimate) if math.isfinite(estimate) else 0.0,
            "acceptance_ci": [
                math.exp(log_low) if math.isfinite(log_low) else None,
                math.exp(log_high) if math.isfinite(log_high) else None,
            ],
            "particles": particles,
            "repeats": repeats,
            "block": spec.block,
            # A run stopped by a budget: how far it got, and ln P(those examples correct).
            "examples_reached": result.examples_reached,
            "log_prob_reached": result.log_prob_reached,
        }
        return _sampled(spec, result, count, summary)
    trainer = SGDTrainer(
        arch,
        prior,
        train,
        count,
        init=spec.sgd_init,
        loss=spec.sgd_loss,
        lr=spec.sgd_lr,
        batch_size=spec.sgd_batch_size,
        max_steps=spec.sgd_max_steps,
        epochs=spec.sgd_epochs,
        momentum=spec.sgd_momentum,
        stop_at_zero=spec.sgd_stop,
        device=spec.device,
    )
    trained = sample(trainer, rng, count, time_limit=time_limit, progress=progress, description=description)
    settings = {
        "init": spec.sgd_init,
        "loss": spec.sgd_loss,
        "lr": trainer.lr,
        "lr_scaled_to_init": spec.sgd_lr is None,
        "batch_size": spec.sgd_batch_size,
        "max_steps": spec.sgd_max_steps,
        "epochs": spec.sgd_epochs,
        "momentum": spec.sgd_momentum,
        "stop_at_zero": spec.sgd_stop,
    }
    summary = {
        "count": trained.count,
        "requested": count,
        "converged": trained.converged_count,
        "draws": 0,  # SGD rejects no draw (its result's draws are its starting networks)
        "stop_reason": trained.stop_reason,
        "steps": trained.step_count,
        "sgd": settings,
        "seconds": trained.seconds,
        "message": trained.message(),
    }
    return MethodResult(
        "sgd", trained.population, trained.converged.cpu().numpy(), trained.steps.cpu().numpy(), summary, trained
    )


def _sampled(spec: MethodSpec, result: SampleResult, count: int, extra: dict[str, Any]) -> MethodResult:
    log_low, log_high = result.log_prob_interpolate_ci
    summary = {
        "count": result.count,
        "requested": count,
        "draws": result.draws,
        "stop_reason": result.stop_reason,
        "log_prob_interpolate": result.log_prob_interpolate,
        "log_prob_interpolate_ci": [log_low, log_high],
        "seconds": result.seconds,
        "message": result.message(),
        **extra,
    }
    size = result.count
    return MethodResult(
        spec.sampler,
        result.population,
        np.ones(size, dtype=bool),
        np.zeros(size, dtype=np.int64),
        summary,
        result,
        result.history if spec.sampler == "smc" else (),
    )
