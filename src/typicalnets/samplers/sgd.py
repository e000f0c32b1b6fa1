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

The default recipe: full-batch gradient descent on the logistic loss, at the learning rate
``init_scaled_lr`` measures for the architecture, prior and data, for up to 10,000 steps. A prior's
weights do not shrink with the fan-in as a standard initialisation's do, so its networks' outputs
grow with depth and width (about 10^3 for LeNet with U[-1, 1] on standardised images, about 3 for an
FCN 4-16-1), and no one learning rate suits every family: 0.1 sends LeNet's weights to inf, 0.001
leaves an FCN crawling. ``init_scaled_lr`` picks the rate whose first step moves the weights by
``LR_STEP`` (a tenth) of their scale: about 0.2 for the FCN of ``typicalnets run``, 0.001 for LeNet
(the published recipe's rate, Chiang et al.). With it every family interpolated on the toolkit's
teacher task, digits and Fashion-MNIST with U[-1, 1] weights, and nearly always with {-1, 0, 1}
(``benchmarks/results/sgd_recipe_cpu.txt``; there a diagonal network's coordinates whose factors
are all 0 get no gradient, a saddle that no learning rate leaves).

Each step is one forward and one backward (``typicalnets.nets.backprop``, no autograd): the forward
of the zero-training-error check after an update is kept in the state for the next step's gradient.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from typicalnets.data import Dataset
from typicalnets.errors import TypicalnetsError
from typicalnets.nets import Architecture, Population, backprop
from typicalnets.priors import Prior, Uniform
from typicalnets.resources import check_memory, check_memory_bytes
from typicalnets.samplers.base import SampleResult, sample

LOSSES = {
    "logistic": lambda margin: F.softplus(-margin),
    "hinge": lambda margin: torch.relu(1.0 - margin),
}
INITS = ("prior", "standard")
DEFAULT_MAX_STEPS = 10_000
LR_STEP = 0.1  # init_scaled_lr: the first step's size, relative to the initial weights' scale
LR_PROBE = 32  # init_scaled_lr: networks it measures, drawn with its own fixed seed
LR_PROBE_SEED = 0


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


def init_scaled_lr(
    arch: Architecture,
    prior: Prior,
    train: Dataset,
    init: str = "prior",
    loss: str = "logistic",
    device: torch.device | str = "cpu",
) -> float:
    """The default learning rate: the one whose first full-batch step moves the weights by ``LR_STEP``
    of their scale.

    It draws ``LR_PROBE`` networks as ``init`` would (from its own generator, seeded
    ``LR_PROBE_SEED``, so the rate depends on the architecture, the prior, the data and the loss, not on
    the run's seed) and takes the full-batch gradient g of each at its start. For a network, the layer
    that the gradient moves most has g_rms = max over parameter tensors of RMS(g); the weights' scale s
    is the RMS of every parameter of the probe. The rate is LR_STEP * s / median g_rms, the median over
    the networks that do not interpolate at the start (the others never move)."""
    x, y = train.x.to(device), train.y.to(device)
    probe = _initial_population(arch, prior, LR_PROBE, init, torch.Generator(device=device).manual_seed(LR_PROBE_SEED))
    outputs, saved = backprop.forward(arch, probe.params, x)
    d_outputs, _ = _loss_gradient(LOSSES[loss], outputs, y)
    grads = backprop.backward(arch, probe.params, saved, d_outputs)
    moved = torch.stack([g.flatten(1).pow(2).mean(1).sqrt() for g in grads.values()]).amax(0)
    moving = ~(outputs * y > 0).all(1)
    moved = moved[moving] if moving.any() else moved
    scale = torch.cat([p.flatten() for p in probe.params.values()]).pow(2).mean().sqrt()
    if not (moved.median() > 0 and torch.isfinite(moved).all()):
        raise TypicalnetsError(
            f"the {arch.describe()} networks of {prior.spec()} have no finite, nonzero gradient at the start, so no "
            "learning rate can be scaled to them; give lr, or rescale the inputs or the prior"
        )
    return float(LR_STEP * scale / moved.median())


def _initial_population(arch: Architecture, prior: Prior, count: int, init: str, rng: torch.Generator) -> Population:
    if init == "prior":
        return Population.draw(arch, prior, count, rng)
    return Population(arch, prior, standard_init(arch, count, rng, rng.device))


def _loss_gradient(loss, outputs: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """dL/df (M, n) of each network's mean loss over the examples in ``y``'s columns, and those losses (M,)."""
    outputs = outputs.detach().requires_grad_()
    losses = loss(outputs * y).mean(dim=1)
    (d_outputs,) = torch.autograd.grad(losses.sum(), outputs)  # autograd only over the (M, n) outputs
    return d_outputs, losses.detach()


class SGDState(NamedTuple):
    population: Population  # all M networks, current (detached) parameters
    velocity: dict[str, torch.Tensor]  # momentum buffers, shaped like the parameters
    converged: torch.Tensor  # (M,) bool: reached zero training error, frozen since
    steps: torch.Tensor  # (M,) long: SGD updates applied to each network
    step_count: int  # trainer steps taken
    order: torch.Tensor  # the current epoch's shuffle of the training examples
    # The forward of the networks still moving (in index order) on the full training set, at their
    # current parameters: the zero-training-error check that the next step's gradient reuses.
    outputs: torch.Tensor  # (moving, n)
    saved: backprop.Saved

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
    ``converged`` then says whether it interpolates at the end. ``lr`` None (the default) is
    ``init_scaled_lr``'s rate, which ``self.lr`` then holds."""

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
        lr: float | None = None,
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
        if lr is not None and not lr > 0:
            raise TypicalnetsError(f"learning rate must be > 0, got {lr}; give a positive rate, or none to scale it")
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
        _check_forward_memory(arch, train, max(int(count), LR_PROBE))
        self.arch, self.prior, self.count, self.init_kind = arch, prior, int(count), init
        self.stop_at_zero = bool(stop_at_zero)
        self.loss, self.momentum = LOSSES[loss], float(momentum)
        self.lr = init_scaled_lr(arch, prior, train, init, loss, device) if lr is None else float(lr)
        self.x = train.x.to(device)
        self.y = train.y.to(device)
        self.n = train.n
        self.batch_size = self.n if batch_size is None else min(int(batch_size), self.n)
        self.batches_per_epoch = -(-self.n // self.batch_size)
        self.max_steps = int(max_steps) if epochs is None else epochs * self.batches_per_epoch

    def init(self, rng: torch.Generator) -> SGDState:
        device = self.x.device
        population = _initial_population(self.arch, self.prior, self.count, self.init_kind, rng).to(device)
        velocity = {name: torch.zeros_like(p) for name, p in population.params.items()}
        outputs, saved, converged = self._check(population.params)  # a start that already interpolates never moves
        steps = torch.zeros(self.count, dtype=torch.long, device=device)
        moving = ~converged if self.stop_at_zero else torch.ones_like(converged)
        order = torch.arange(self.n, device=device)
        return SGDState(population, velocity, converged, steps, 0, order, outputs[moving], saved.rows(moving))

    def _check(self, params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, backprop.Saved, torch.Tensor]:
        """The forward of ``params`` on the full training set and which networks make no mistake. The
        verdict on a network that the forward finds correct everywhere is ``Population.mistakes``', the
        forward that every output reports, so converged networks always have zero ``train_error``."""
        outputs, saved = backprop.forward(self.arch, params, self.x)
        interpolates = (outputs * self.y > 0).all(dim=1)
        if interpolates.any():
            candidates = Population(self.arch, self.prior, {name: p[interpolates] for name, p in params.items()})
            interpolates[interpolates.clone()] = candidates.mistakes(self.x, self.y) == 0
        return outputs, saved, interpolates

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

    def step(
        self, rng: torch.Generator, state: SGDState, max_draws: int | None = None, deadline: float | None = None
    ) -> tuple[SGDState, SGDInfo]:
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
        # 2. dL/df of each moving network's mini-batch loss, at the forward the state keeps (0 off the batch).
        d_outputs = torch.zeros_like(state.outputs)
        d_batch, losses = _loss_gradient(self.loss, state.outputs[:, batch], self.y[batch])
        d_outputs[:, batch] = d_batch
        # 3. Backpropagate it through that forward: each network gets the gradient of its own loss.
        params = {name: p[active] for name, p in state.population.params.items()}
        grads = backprop.backward(self.arch, params, state.saved, d_outputs)
        # 4. Update with PyTorch's momentum convention: v <- momentum * v + g, w <- w - lr * v.
        new_params, velocity = {}, {}
        for name, p in params.items():
            v = self.momentum * state.velocity[name][active] + grads[name]
            velocity[name] = state.velocity[name].index_copy(0, active, v)
            new_params[name] = state.population.params[name].index_copy(0, active, p - self.lr * v)
        population = Population(self.arch, self.prior, new_params)
        # 5. Check every updated network on the full training set and freeze those that make no mistake
        #    (without stop_at_zero, converged just says whether a network interpolates now); the check's
        #    forward of the networks still moving is the next step's.
        outputs, saved, interpolates = self._check({name: p[active] for name, p in new_params.items()})
        converged = state.converged.clone()
        if self.stop_at_zero and interpolates.any():
            converged[active[interpolates]] = True
            outputs, saved = outputs[~interpolates], saved.rows(~interpolates)
        elif not self.stop_at_zero:
            converged[active] = interpolates
        steps = state.steps + moving.long()
        new_state = SGDState(population, velocity, converged, steps, state.step_count + 1, order, outputs, saved)
        return new_state, SGDInfo(losses.mean().item(), len(active), int(converged.sum()))


def _check_forward_memory(arch: Architecture, train: Dataset, count: int) -> None:
    """Refuse a run whose kept forwards would not fit: the current state's, the next one's and the
    backward's buffers, each about what one forward of ``count`` networks on the training set keeps."""
    one = Population.draw(arch, Uniform(1.0), 1, torch.Generator().manual_seed(0))
    outputs, saved = backprop.forward(arch, one.params, train.x[:1].cpu())
    per_example = sum(t.numel() * t.element_size() for t in [outputs, *saved.tensors()])
    check_memory_bytes(
        3 * per_example * count * train.n,
        f"SGD's forwards of {count:,} {arch.describe()} networks on {train.n:,} examples",
        "lower count or the training set, or narrow the network",
    )


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
    momentum, max_steps, epochs, stop_at_zero, device): by default the recipe of the module docstring."""
    trainer = SGDTrainer(arch, prior, train, count, **settings)
    return sample(trainer, rng, trainer.count, time_limit=time_limit, progress=progress)
