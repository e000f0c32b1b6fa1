"""SGD baseline: train a population of networks by gradient descent until each one interpolates.

The harness compares typical interpolators (Guess & Check draws from the prior conditioned on zero
training error) with the interpolators that SGD finds for the same architecture and data, as
Chiang et al., "Loss landscapes are all you need: neural network generalization can be explained
without the implicit bias of gradient descent", ICLR 2023, did. All M networks train at once in one
batched forward (stacked parameters, leading dimension M). Each network is frozen as soon as it
makes no mistake on the full training set (f = 0 counts as a mistake), so it stops at the first
interpolator on its path, like a G&C sample; training ends when every network is frozen or the step
budget runs out. ``SGDTrainer`` follows the samplers' protocol, so ``samplers.base.sample`` runs it
(with its progress bar and time limit) and returns a ``SampleResult``; ``train_sgd`` builds one and
runs it.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from typicalnets.data import Dataset
from typicalnets.errors import TypicalnetsError
from typicalnets.nets import Architecture, Population
from typicalnets.priors import Prior, Uniform
from typicalnets.resources import check_memory
from typicalnets.samplers.base import SampleResult, sample

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
    """Full-batch or mini-batch SGD of ``count`` networks at once, each frozen once it interpolates.

    Its size is ``count``, fixed here as SMC's particles are: run it with ``sample(trainer, rng,
    trainer.count)``. Its step budget is ``max_steps``, or ``epochs`` passes over the training set
    when given; without ``stop_at_zero`` every network trains for the whole budget, and
    ``converged`` then says whether it interpolates at the end."""

    name = "sgd"
    draws_per_trial = 1

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
        max_steps: int = DEFAULT_MAX_STEPS,
        epochs: int | None = None,
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
        if max_steps < 1:
            raise TypicalnetsError(f"max steps must be >= 1, got {max_steps}; give a positive step budget")
        if epochs is not None and epochs < 1:
            raise TypicalnetsError(f"epochs must be >= 1, got {epochs}; give a positive number of passes")
        # Parameters, gradients, momentum and the optimizer's copy, per network.
        check_memory(arch.num_params(), count, f"count = {count:,} networks", copies=4, fix="lower count or the widths")
        self.arch, self.prior, self.count, self.init_kind = arch, prior, int(count), init
        self.stop_at_zero = bool(stop_at_zero)
        self.loss, self.lr, self.momentum = LOSSES[loss], float(lr), float(momentum)
        self.x = train.x.to(device)
        self.y = train.y.to(device)
        self.n = train.n
        self.batch_size = self.n if batch_size is None else min(int(batch_size), self.n)
        self.batches_per_epoch = -(-self.n // self.batch_size)
        self.max_steps = int(max_steps) if epochs is None else epochs * self.batches_per_epoch

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

    def stopped(self, state: SGDState, count: int) -> str | None:
        """Why training is over: "converged" once every network is frozen (with ``stop_at_zero``),
        "max_steps" once the step budget is spent. ``count`` is not consulted: the size is the trainer's."""
        if self.stop_at_zero and bool(state.converged.all()):
            return "converged"
        return "max_steps" if state.step_count >= self.max_steps else None

    def progress(self, state: SGDState, count: int) -> tuple[int, int, str]:
        """(converged networks, networks, steps): what the driver's progress bar shows."""
        return int(state.converged.sum()), self.count, f"converged, step {state.step_count}"

    def finish(
        self, state: SGDState, count: int, stop_reason: str, seconds: float, history: tuple[SGDInfo, ...]
    ) -> SampleResult:
        """Every network trained (detached, recorded with the given prior) and how each one ended."""
        return SampleResult(
            sampler=self.name,
            population=state.population,
            requested=self.count,
            accepted_total=int(state.converged.sum()),
            draws=state.draws,
            seconds=seconds,
            stop_reason=stop_reason,
            history=history,
            converged=state.converged,
            steps=state.steps,
        )

    def step(self, rng: torch.Generator, state: SGDState, max_draws: int | None = None) -> tuple[SGDState, SGDInfo]:
        """One SGD update of every network not yet converged (of every network without
        ``stop_at_zero``); converged networks stay bit-identical. A step draws nothing, so
        ``max_draws`` does not bind."""
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


def train_sgd(
    arch: Architecture,
    prior: Prior,
    train: Dataset,
    count: int,
    rng: torch.Generator,
    *,
    time_limit: float | None = None,
    progress: bool = True,
    **settings,
) -> SampleResult:
    """Train ``count`` networks by SGD until each reaches zero training error, the step budget or
    ``time_limit`` (s) runs out; ``settings`` are ``SGDTrainer``'s (init, loss, lr, batch_size,
    momentum, max_steps, epochs, stop_at_zero, device)."""
    trainer = SGDTrainer(arch, prior, train, count, **settings)
    return sample(trainer, rng, trainer.count, time_limit=time_limit, progress=progress)
