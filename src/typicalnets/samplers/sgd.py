"""SGD baseline: train a population of networks by gradient descent until each one interpolates.

The harness compares typical interpolators (Guess & Check draws from the prior conditioned on zero
training error) with the interpolators that SGD finds for the same architecture and data, as
Chiang et al., "Loss landscapes are all you need: neural network generalization can be explained
without the implicit bias of gradient descent", ICLR 2023, did. All M networks train at once in one
batched forward (stacked parameters, leading dimension M). Each network is frozen as soon as it
makes no mistake on the full training set (f = 0 counts as a mistake), so it stops at the first
interpolator on its path, like a G&C sample; training ends when every network is frozen or the step
budget runs out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from typicalnets.data import Dataset
from typicalnets.errors import TypicalnetsError
from typicalnets.nets import Architecture, Population
from typicalnets.priors import Prior, Uniform
from typicalnets.resources import check_memory

LOSSES = {
    "logistic": lambda margin: F.softplus(-margin),
    "hinge": lambda margin: torch.relu(1.0 - margin),
}
INITS = ("prior", "standard")
DEFAULT_LR = 0.1
DEFAULT_MAX_STEPS = 10_000


def standard_init(
    arch: Architecture, size: int, generator: torch.Generator, device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """PyTorch's default-style init: weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)), scales 1."""
    return {
        name: torch.ones(size, *shape, device=device)
        if name.startswith("s")
        else Uniform(arch.fan_in(name) ** -0.5).sample((size, *shape), generator, device=device)
        for name, shape in arch.param_shapes().items()
    }


class SGDState(NamedTuple):
    population: Population  # all M networks, current (detached) parameters
    velocity: dict[str, torch.Tensor]  # momentum buffers, shaped like the parameters
    converged: torch.Tensor  # (M,) bool: reached zero training error, frozen since
    steps: torch.Tensor  # (M,) long: SGD updates applied to each network
    step_count: int  # trainer steps taken
    order: torch.Tensor  # the current epoch's shuffle of the training examples

    @property
    def accepted(self) -> Population:
        """The interpolators found so far (networks that reached zero training error)."""
        return self.population[self.converged]

    @property
    def draws(self) -> int:
        """Networks initialised (each one starting point is one draw)."""
        return len(self.population)


class SGDInfo(NamedTuple):
    loss: float  # this step's mini-batch loss, averaged over the networks updated
    updated: int  # networks updated in this step
    converged: int  # networks converged after this step


class SGDTrainer:
    """Full-batch or mini-batch SGD of ``count`` networks at once, each frozen once it interpolates."""

    name = "sgd"

    def __init__(
        self,
        arch: Architecture,
        prior: Prior,
        train: Dataset,
        count: int,
        *,
        init: str = "prior",
        loss: str = "logistic",
        lr: float = DEFAULT_LR,
        batch_size: int | None = None,
        momentum: float = 0.0,
        stop_at_zero: bool = True,
        device: torch.device | str = "cpu",
    ):
        arch.check_input(train.x)
        if getattr(arch, "activation", None) == "sign":
            raise TypicalnetsError(
                "sign activations have zero gradient, so SGD cannot train them; use relu, leaky-relu or tanh"
            )
        if count < 1:
            raise TypicalnetsError(f"count must be >= 1, got {count}; ask for at least one network")
        if init not in INITS:
            raise TypicalnetsError(f"unknown init {init!r}; use prior or standard")
        if loss not in LOSSES:
            raise TypicalnetsError(f"unknown loss {loss!r}; use logistic or hinge")
        if not lr > 0:
            raise TypicalnetsError(f"learning rate must be > 0, got {lr}; use e.g. {DEFAULT_LR}")
        if batch_size is not None and batch_size < 1:
            raise TypicalnetsError(
                f"batch size must be >= 1, got {batch_size}; give a positive size, or none for full batch"
            )
        if not 0 <= momentum < 1:
            raise TypicalnetsError(f"momentum must lie in [0, 1), got {momentum}; use e.g. 0 or 0.9")
        self.arch, self.prior, self.count, self.init_kind = arch, prior, int(count), init
        self.stop_at_zero = bool(stop_at_zero)
        self.loss, self.lr, self.momentum = LOSSES[loss], float(lr), float(momentum)
        self.x = train.x.to(device)
        self.y = train.y.to(device)
        self.n = train.n
        self.batch_size = self.n if batch_size is None else min(int(batch_size), self.n)
        self.batches_per_epoch = -(-self.n // self.batch_size)

    def init(self, rng: torch.Generator) -> SGDState:
        device = self.x.device
        if self.init_kind == "prior":
            population = Population.draw(self.arch, self.prior, self.count, rng, device=device)
        else:
            population = Population(self.arch, self.prior, standard_init(self.arch, self.count, rng, device))
        velocity = {name: torch.zeros_like(p) for name, p in population.params.items()}
        converged = population.mistakes(self.x, self.y) == 0  # a start that already interpolates never moves
        steps = torch.zeros(self.count, dtype=torch.long, device=device)
        return SGDState(population, velocity, converged, steps, 0, torch.arange(self.n, device=device))

    def step(self, rng: torch.Generator, state: SGDState) -> tuple[SGDState, SGDInfo]:
        """One SGD update of every network not yet converged (of every network without
        ``stop_at_zero``); converged networks stay bit-identical."""
        moving = ~state.converged if self.stop_at_zero else torch.ones_like(state.converged)
        active = moving.nonzero().squeeze(1)
        if len(active) == 0:
            return state, SGDInfo(0.0, 0, self.count)
        # 1. Take this step's mini-batch; every epoch starts with a fresh seeded shuffle.
        position = (state.step_count % self.batches_per_epoch) * self.batch_size
        order = state.order
        if position == 0 and self.batch_size < self.n:
            order = torch.randperm(self.n, generator=rng, device=rng.device).to(self.x.device)
        batch = order[position : position + self.batch_size]
        # 2. Forward the active networks in one batch, their parameters as fresh leaf tensors.
        params = {name: p[active].requires_grad_() for name, p in state.population.params.items()}
        margins = self.arch.forward(params, self.x[batch]) * self.y[batch]
        losses = self.loss(margins).mean(dim=1)
        # 3. Summing over networks gives each network the gradient of its own loss, whatever M is.
        grads = torch.autograd.grad(losses.sum(), list(params.values()))
        # 4. Update with PyTorch's momentum convention: v <- momentum * v + g, w <- w - lr * v.
        new_params, velocity = {}, {}
        with torch.no_grad():
            for (name, p), g in zip(params.items(), grads):
                v = self.momentum * state.velocity[name][active] + g
                velocity[name] = state.velocity[name].index_copy(0, active, v)
                new_params[name] = state.population.params[name].index_copy(0, active, p - self.lr * v)
        population = Population(self.arch, self.prior, new_params)
        # 5. Freeze every updated network that makes no mistake on the full training set (without
        #    stop_at_zero, converged just says whether a network interpolates now).
        interpolates = population[active].mistakes(self.x, self.y) == 0
        converged = state.converged.clone()
        if self.stop_at_zero:
            converged[active[interpolates]] = True
        else:
            converged[active] = interpolates
        steps = state.steps + moving.long()
        new_state = SGDState(population, velocity, converged, steps, state.step_count + 1, order)
        return new_state, SGDInfo(losses.mean().item(), len(active), int(converged.sum()))


@dataclass(frozen=True)
class SGDResult:
    """Trained networks (detached, recorded with the given prior) and how each run ended."""

    population: Population
    converged: torch.Tensor  # (M,) bool: reached zero training error
    steps: torch.Tensor  # (M,) long: SGD updates each network took
    step_count: int  # trainer steps run
    stop_reason: str  # "converged" or "max_steps"
    seconds: float

    @property
    def count(self) -> int:
        return len(self.population)

    @property
    def converged_count(self) -> int:
        return int(self.converged.sum())

    def message(self) -> str:
        """One line on how training ended."""
        text = f"{self.converged_count}/{self.count} networks reached zero training error in {self.step_count} steps"
        if self.stop_reason == "max_steps":
            text += f"; {self.count - self.converged_count} stopped by the step budget"
        return text


def train_sgd(
    arch: Architecture,
    prior: Prior,
    train: Dataset,
    count: int,
    rng: torch.Generator,
    *,
    init: str = "prior",
    loss: str = "logistic",
    lr: float = DEFAULT_LR,
    batch_size: int | None = None,
    momentum: float = 0.0,
    max_steps: int = DEFAULT_MAX_STEPS,
    epochs: int | None = None,
    stop_at_zero: bool = True,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> SGDResult:
    """Train ``count`` networks by SGD until each reaches zero training error or ``max_steps`` run out.

    ``epochs`` (passes over the training set) replaces ``max_steps`` when given. Without
    ``stop_at_zero`` every network trains for the whole budget; ``converged`` then says whether it
    interpolates at the end."""
    if max_steps < 1:
        raise TypicalnetsError(f"max steps must be >= 1, got {max_steps}; give a positive step budget")
    if epochs is not None and epochs < 1:
        raise TypicalnetsError(f"epochs must be >= 1, got {epochs}; give a positive number of passes")
    # Parameters, gradients, momentum and the optimizer's copy, per network.
    check_memory(arch.num_params(), count, f"count = {count:,} networks", copies=4, fix="lower count or the widths")
    start = time.perf_counter()
    trainer = SGDTrainer(
        arch,
        prior,
        train,
        count,
        init=init,
        loss=loss,
        lr=lr,
        batch_size=batch_size,
        momentum=momentum,
        stop_at_zero=stop_at_zero,
        device=device,
    )
    if epochs is not None:
        max_steps = epochs * trainer.batches_per_epoch
    state = trainer.init(rng)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("converged, step {task.fields[step]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, disable=not progress, transient=True) as bar:
        task = bar.add_task("sgd", total=count, completed=int(state.converged.sum()), step=0)
        while not (stop_at_zero and state.converged.all()) and state.step_count < max_steps:
            state, info = trainer.step(rng, state)
            bar.update(task, completed=info.converged, step=state.step_count)
    return SGDResult(
        population=state.population,
        converged=state.converged,
        steps=state.steps,
        step_count=state.step_count,
        stop_reason="converged" if stop_at_zero and state.converged.all() else "max_steps",
        seconds=time.perf_counter() - start,
    )
