"""Slice moves of one layer at a time for continuous priors, with the rest of the forward cached.

SMC's rejuvenation for Gaussian and uniform priors moves a network one *group* of parameters at a
time (``move_groups``): a hidden layer's weight and bias, its scale, the head, or one factor of a
diagonal network. Each move leaves prior x 1{examples 0..seen-1 correct} x exp(-beta x mistakes on
the tempered block) invariant, as a Gibbs update of the group given the rest.

1. Elliptical slice sampling (Murray, Adams & MacKay, AISTATS 2010) on the ellipse
   theta_g(t) = theta_g cos t + nu sin t, nu ~ N(0, sigma^2 I); or, with a Gaussian N(mu, Sigma)
   fitted to other particles (``CloudGaussian``, one per row through ``Clouds``), on the generalized ellipse
   mu + (theta_g - mu) cos t + nu sin t, nu ~ N(0, Sigma), with the likelihood x prior / N(mu, Sigma)
   (Nishihara, Murray & Adams, JMLR 2014), which follows a narrow, elongated version space.
2. Uniform priors U[-a, a] move the same way in z-space, theta = a (2 Phi(z) - 1) with
   z ~ N(0, I) (``to_weights``).
3. Cached forward: the layers below the group are computed once per move (``SplitForward``).
   For a Gaussian prior a hidden layer's pre-activations are linear in its weight and bias
   jointly, so along the ellipse they are Z0 c0 + Z1 c1 + Z2 c2 with the images Z_i of the basis
   (mu, theta - mu, nu) computed once: a shrink then costs the activation and the layers above,
   for the first layer of a 784-32-1 MLP O(examples x units) instead of O(examples x parameters).
   A head's or a diagonal factor's output is linear in it, so the hard constraint's arc on the
   prior's ellipse is found exactly (``_feasible_arc``). Under the uniform prior's map a shrink
   recomputes the group's own layer from its cached input.

Decisions use float64 and the certificate's tie rule (correct iff y f > TIE x scale), as
``SequentialMonteCarlo._mistakes`` does; the sampler certifies its final particles.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from typicalnets.certificate import TIE, plan_input, post_activation, pre_activation, run_layers
from typicalnets.nets import Architecture
from typicalnets.nets.base import Head, Product
from typicalnets.nets.population import split_flat
from typicalnets.priors import Gaussian, Prior, Uniform

MAX_SHRINKS = 100  # a bracket still open after this many shrinks is within 2^-100 of the current point
CACHE_BYTES = 2**30  # float64 images and activations one chunk of particles may hold (a bound: see chunk_rows)
CLOUD_RIDGE = 0.1  # the fitted Gaussian's isotropic part, as a fraction of the particles' mean variance


class Group(NamedTuple):
    """Parameters one move changes together, and how the forward is split around them."""

    layer: int  # index in the layer plan
    names: tuple[str, ...]
    columns: torch.Tensor  # their columns in the flat parameter vector
    kind: str  # "affine" (hidden weight + bias), "scale", "head" or "factor" (of a Product)


def move_groups(arch: Architecture) -> tuple[Group, ...]:
    """The groups of ``arch``'s layer plan, in forward order."""
    offsets, start = {}, 0
    for name, shape in arch.param_shapes().items():
        offsets[name] = torch.arange(start, start + math.prod(shape))
        start += math.prod(shape)

    def group(index: int, names, kind: str) -> Group:
        names = tuple(name for name in names if name)
        return Group(index, names, torch.cat([offsets[name] for name in names]), kind)

    groups = []
    for index, layer in enumerate(arch.layer_plan()):
        if isinstance(layer, Product):
            groups += [group(index, (name,), "factor") for name in layer.weights]
        elif isinstance(layer, Head):
            groups.append(group(index, (layer.weight, layer.bias), "head"))
        else:
            groups.append(group(index, (layer.weight, layer.bias), "affine"))
            if layer.scale:
                groups.append(group(index, (layer.scale,), "scale"))
    return tuple(groups)


def _with_group(params: dict, arch: Architecture, group: Group, values: torch.Tensor) -> dict:
    """``params`` with the group's tensors replaced by ``values`` (rows, group size)."""
    shapes, out, begin = arch.param_shapes(), dict(params), 0
    for name in group.names:
        size = math.prod(shapes[name])
        out[name] = values[:, begin : begin + size].reshape(len(values), *shapes[name])
        begin += size
    return out


def _rows(h: torch.Tensor, rows: torch.Tensor, count: int, n: int) -> torch.Tensor:
    """Rows ``rows`` of a per-network activation (conv maps are (A * n, c, H, W))."""
    if h.ndim == 4:
        return h.view(count, n, *h.shape[1:])[rows].reshape(len(rows) * n, *h.shape[1:])
    return h[rows]


class SplitForward:
    """The float64 forward of a chunk of particles around one group: what the group's move leaves
    fixed is computed once, and ``outputs`` gives (f, scale) on the curve's points.

    The curve is z_g = sum_i c_i P_i over a basis P_i of (rows, group size) tensors (a (1, size)
    one is shared by every row), and the group's weights are theta_g = ``mapping``(z_g) (None: the
    identity). ``flat`` holds the weights (mapped) of every parameter. With a mapping the
    pre-activations are not linear along the curve, so a shrink recomputes the group's layer from
    its cached input; the layers below stay cached."""

    def __init__(self, arch: Architecture, flat: torch.Tensor, x: torch.Tensor, group: Group, basis, mapping=None):
        self.arch, self.group, self.basis, self.mapping = arch, group, basis, mapping
        self.count, self.n = len(flat), len(x)
        self.params = split_flat(arch, flat)
        self.layer = arch.layer_plan()[group.layer]
        h = run_layers(arch, self.params, plan_input(x, torch.float64), 0, group.layer, self.count, self.n)
        self.shared = group.layer == 0
        self.grouped = x.device.type == "cpu"  # as forward_with_scale chooses (see its docstring)
        self.input = h
        self.linear = group.kind == "affine" and mapping is None
        if self.linear:  # the pre-activations' images under each basis tensor
            self.images = [None if p is None else self._image(p) for p in basis]
        elif group.kind == "scale":
            self.z = pre_activation(self.layer, self.params, h, self.count, self.n, self.shared, self.grouped)

    def _image(self, p: torch.Tensor) -> torch.Tensor:
        values = _with_group({}, self.arch, self.group, p)
        if len(p) == 1 and self.shared:  # one network's image on the shared input
            return pre_activation(self.layer, values, self.input, 1, self.n, True, self.grouped)
        values = {k: v.expand(self.count, *v.shape[1:]) for k, v in values.items()}
        return pre_activation(self.layer, values, self.input, self.count, self.n, self.shared, self.grouped)

    def point(self, rows: torch.Tensor, coefficients) -> torch.Tensor:
        """theta_g at the coefficients (one (len(rows),) tensor per basis tensor) of ``rows``."""
        total = 0.0
        for p, c in zip(self.basis, coefficients):
            if p is not None:
                total = total + c.unsqueeze(1) * (p if len(p) == 1 else p[rows])
        return total

    def outputs(self, rows: torch.Tensor, coefficients) -> tuple[torch.Tensor, torch.Tensor]:
        """(f, scale), each (len(rows), n), of ``rows`` at the coefficients."""
        count, n = len(rows), self.n
        # The group's own tensors are replaced below, or (the linear path) not read.
        params = {k: v[rows] for k, v in self.params.items() if k not in self.group.names}
        kind = self.group.kind
        if self.linear:
            z = 0.0
            for image, c in zip(self.images, coefficients):
                if image is not None:
                    c = c.view(-1, *([1] * (image.ndim - 1)))
                    z = z + c * (image if len(image) == 1 else image[rows])
            h = post_activation(self.layer, params, z, count, n)
            return run_layers(self.arch, params, h, self.group.layer + 1, None, count, n)
        values = self.point(rows, coefficients)
        params = _with_group(params, self.arch, self.group, values if self.mapping is None else self.mapping(values))
        if kind == "scale":
            h = post_activation(self.layer, params, self.z[rows], count, n)
            return run_layers(self.arch, params, h, self.group.layer + 1, None, count, n)
        h = self.input if self.shared else _rows(self.input, rows, self.count, n)
        return run_layers(self.arch, params, h, self.group.layer, None, count, n)


def chunk_rows(arch: Architecture, examples: int) -> int:
    """Particles per ``SplitForward``, so that its float64 images and activations fit CACHE_BYTES:
    four tensors (the cached input, up to three images) of the widest activation per example, an
    overestimate where that is the first layer's im2col columns, which all particles share."""
    per_particle = 8 * 4 * max(1, arch.widest_activation()) * max(1, examples)
    return max(1, min(256, CACHE_BYTES // per_particle))


class Target(NamedTuple):
    """What a move keeps invariant besides the prior: examples 0..seen-1 correct, and the block
    seen..target-1 weighed by exp(-beta x mistakes) (beta = inf: correct too)."""

    x: torch.Tensor  # float64 inputs 0..target-1
    y: torch.Tensor  # labels 0..target-1
    seen: int
    beta: float

    @property
    def hard(self) -> bool:
        return math.isinf(self.beta)

    def judge(self, f: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(whether the hard part holds, the mistakes on the tempered block) per row."""
        correct = self.y.double() * f > TIE * scale
        if self.hard:
            return correct.all(dim=1), torch.zeros(len(f), dtype=torch.int64, device=f.device)
        return correct[:, : self.seen].all(dim=1), (~correct[:, self.seen :]).sum(dim=1)


def group_move(
    rng: torch.Generator,
    arch: Architecture,
    prior: Prior,
    flat: torch.Tensor,
    mistakes: torch.Tensor,
    target: Target,
    group: Group,
    clouds: Clouds | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """One elliptical slice move of ``group`` for every particle (rows of the float64 ``flat``, in
    z-space for a uniform prior: see ``to_weights``), on the prior's ellipse or, given ``clouds``
    (Gaussians fitted to other particles, one per row), on the ellipse centred on its row's mean.
    Moving many particles in one call matters where they are few and small: there the moves'
    cost is per call, not per particle. Returns the new parameters, block
    mistakes, 1.0 where the particle moved, and the forward evaluations spent (one per particle for
    the cached part, one per shrink)."""
    flat, mistakes = flat.clone(), mistakes.clone()
    moved = torch.zeros(len(flat), device=flat.device)
    evaluations = 0
    step = chunk_rows(arch, len(target.y))
    for begin in range(0, len(flat), step):
        rows = torch.arange(begin, min(len(flat), begin + step), device=flat.device)
        chunk_clouds = None if clouds is None else clouds.rows(rows)
        new, new_mistakes, ok, cost = _chunk_move(
            rng, arch, prior, flat[rows], mistakes[rows], target, group, chunk_clouds
        )
        flat[rows], mistakes[rows], moved[rows] = new, new_mistakes, ok
        evaluations += cost
    return flat, mistakes, moved, evaluations


def to_weights(prior: Prior, flat: torch.Tensor) -> torch.Tensor:
    """The weights of particles held as ``flat``: themselves for a Gaussian prior; a (2 Phi(z) - 1)
    for a uniform prior U[-a, a], whose particles are z ~ N(0, I) (the map carries N(0, I) exactly
    onto the uniform prior, and its ellipses mix where hit-and-run lines in the box barely move:
    in P dimensions their chord is ~1/P long)."""
    return prior.a * torch.erf(flat / math.sqrt(2.0)) if isinstance(prior, Uniform) else flat


def _chunk_move(rng, arch, prior, flat, mistakes, target: Target, group: Group, clouds: Clouds | None):
    """``group_move`` on one chunk; it writes the accepted points into ``flat`` and ``mistakes``,
    the copies ``group_move`` indexed out for it."""
    count, device = len(flat), flat.device
    columns = group.columns.to(device)
    theta = flat[:, columns]

    def uniform(size) -> torch.Tensor:
        return torch.rand(size, generator=rng, device=rng.device, dtype=torch.float64).to(device)

    if not isinstance(prior, (Gaussian, Uniform)):
        raise TypeError(f"slice moves need a Gaussian or uniform prior, not {prior!r}")
    sigma, mapping = (prior.sigma, None) if isinstance(prior, Gaussian) else (1.0, lambda z: to_weights(prior, z))
    # 1. The ellipse through the current point; u is its angle, the bracket [u - 2 pi, u].
    forms = None
    if clouds is None:
        nu = sigma * torch.randn(theta.shape, generator=rng, device=rng.device, dtype=torch.float64).to(device)
        basis, coefficients = (theta, nu), lambda u: (torch.cos(u), torch.sin(u))
    else:
        mean = clouds.means()
        nu = clouds.sample(rng)
        basis, coefficients = (mean, theta - mean, nu), lambda u: (torch.ones_like(u), torch.cos(u), torch.sin(u))
        forms = _EllipseForms.of(clouds, mean, theta - mean, nu, sigma)
    u = 2 * math.pi * uniform(count)
    low, high = u - 2 * math.pi, u.clone()
    forward = SplitForward(arch, to_weights(prior, flat), target.x, group, basis, mapping)
    evaluations = count
    hard_examples = len(target.y) if target.hard else target.seen
    if group.kind in ("head", "factor") and mapping is None and hard_examples:
        # 2. The output is linear in a head or a diagonal factor, so the angles where the hard
        #    constraint holds form arcs found exactly; the bracket is the one about 0.
        arc_low, arc_high = _feasible_arc(forward, target.y[:hard_examples], hard_examples)
        bounded = torch.isfinite(arc_low) & torch.isfinite(arc_high)  # else the whole ellipse is feasible
        low, high = torch.where(bounded, arc_low, low), torch.where(bounded, arc_high, high)
        u = torch.where(bounded, low + (high - low) * uniform(count), u)
        evaluations += count

    def log_likelihood(rows, block_mistakes, at) -> torch.Tensor:
        value = torch.zeros(len(rows), dtype=torch.float64, device=device)
        if not target.hard:
            value = value - target.beta * block_mistakes.double()
        if forms is not None:
            value = value + forms.at(rows, at)
        return value

    sliced = forms is not None or not target.hard  # else the slice is the constraint set itself
    everyone = torch.arange(count, device=device)
    if sliced:
        current = None if forms is None else torch.zeros(count, dtype=torch.float64, device=device)
        level = uniform(count).log() + log_likelihood(everyone, mistakes, current)
    pending = torch.ones(count, dtype=torch.bool, device=device)
    for _ in range(MAX_SHRINKS):
        rows = torch.nonzero(pending).flatten()
        if rows.numel() == 0:
            break
        # 3. Evaluate the proposals from the cached forward; accept, or shrink the bracket towards 0.
        at = coefficients(u[rows])
        ok, proposed = target.judge(*forward.outputs(rows, at))
        if sliced:
            ok &= log_likelihood(rows, proposed, u[rows] if forms is not None else None) > level[rows]
        evaluations += rows.numel()
        accepted = rows[ok]
        flat[accepted.unsqueeze(1), columns] = forward.point(accepted, [c[ok] for c in at])
        mistakes[accepted] = proposed[ok]
        pending[accepted] = False
        shrink = rows[~ok]
        negative = u[shrink] < 0
        low[shrink] = torch.where(negative, u[shrink], low[shrink])
        high[shrink] = torch.where(negative, high[shrink], u[shrink])
        u[shrink] = low[shrink] + (high[shrink] - low[shrink]) * uniform(shrink.numel())
    return flat, mistakes, (~pending).float(), evaluations


def _feasible_arc(forward: SplitForward, y: torch.Tensor, examples: int):
    """The arc about 0 of the angles u where y f > 0 on the first ``examples`` examples, for an
    output f linear in the group. Along the ellipse y f(u) = c + a cos u + b sin u = c + R cos(u - phi),
    with c, a, b the outputs at the basis tensors (c = 0 on the prior's ellipse), so each example
    keeps |u - phi| < arccos(-c / R), an arc that contains 0 since the current point classifies it;
    their intersection about 0 is the bracket. Taking the same arc from every point in it keeps the
    shrinkage procedure exact (Neal, Ann. Stat. 2003, section 4). The tie rule (y f > TIE x scale)
    is left to the shrinks, which rarely need a second proposal without a fitted ellipse's forms."""
    count, device, terms = forward.count, y.device, len(forward.basis)
    # One evaluation of every particle at each basis tensor: rows repeated, one-hot coefficients.
    rows = torch.arange(count, device=device).repeat(terms)
    one_hot = torch.eye(terms, dtype=torch.float64, device=device).repeat_interleave(count, dim=0)
    images = (y.double() * forward.outputs(rows, list(one_hot.T))[0][:, :examples]).view(terms, count, examples)
    offset, along, across = images if terms == 3 else (torch.zeros_like(images[0]), *images)
    radius, phase = torch.hypot(along, across), torch.atan2(across, along)
    # Where c >= R the example holds on the whole ellipse and restricts nothing (an infinite half-width).
    half = torch.arccos((-offset / radius.clamp_min(1e-300)).clamp(-1.0, 1.0))
    half = torch.where(offset >= radius, math.inf, half)
    # An arc has length 2 arccos(-c / R) < 2 pi; rounding aside, it contains 0.
    return (phase - half).amax(dim=1).clamp_max(0.0), (phase + half).amin(dim=1).clamp_min(0.0)


class _EllipseForms(NamedTuple):
    """ln prior(theta) - ln N(theta; mu, Sigma) + const along theta(t) = center + offset cos t + nu sin t,
    as coefficients per particle: Sigma-quadratic terms (oo, on, nn) and prior ones (cc, co, cn, oo,
    on, nn) of |theta(t)|^2 / (2 scale^2)."""

    quadratic: torch.Tensor  # (N, 3): d^T Sigma^-1 d / 2 for d = offset cos t + nu sin t, in cos^2, cos sin, sin^2
    squared: torch.Tensor  # (N, 6): |theta(t)|^2 / (2 scale^2) in 1, cos, sin, cos^2, cos sin, sin^2

    @classmethod
    def of(cls, clouds: Clouds, center, offset, nu, scale: float) -> _EllipseForms:
        offset, nu = offset.double(), nu.double()
        center = torch.as_tensor(center, dtype=torch.float64, device=offset.device).expand_as(offset)
        off_off, off_nu, nu_nu = clouds.quadratic_forms(offset, nu)
        quadratic = torch.stack([off_off, 2 * off_nu, nu_nu], 1) / 2
        dots = [(center * center), 2 * center * offset, 2 * center * nu, offset * offset, 2 * offset * nu, nu * nu]
        squared = torch.stack([d.sum(1) for d in dots], 1) / (2 * scale**2)
        return cls(quadratic, squared)

    def at(self, rows: torch.Tensor, angle: torch.Tensor | None) -> torch.Tensor:
        """The value at ``angle`` (None: t = 0, the current points) of the ellipses ``rows``."""
        if angle is None:
            angle = torch.zeros(len(rows), dtype=torch.float64, device=self.quadratic.device)
        c, s = torch.cos(angle).double(), torch.sin(angle).double()
        terms = torch.stack([c * c, c * s, s * s], 1)
        quadratic = (self.quadratic[rows] * terms).sum(1)
        squared = self.squared[rows] * torch.cat([torch.ones_like(c)[:, None], c[:, None], s[:, None], terms], 1)
        return quadratic - squared.sum(1)


class CloudGaussian(NamedTuple):
    """N(mean, K^T K + ridge x I) fitted to particles: K holds their deviations from the mean over
    sqrt(N - 1), so K^T K is their covariance (rank < N), and the ridge (a fraction of the mean
    variance) gives every direction some spread. Densities and draws cost O(N P) per particle by
    the Woodbury identity, so it serves networks with far more parameters than particles."""

    mean: torch.Tensor  # (P,)
    factor: torch.Tensor  # K, (N, P)
    ridge: float
    inner: torch.Tensor  # (ridge I + K K^T)^-1, (N, N)

    @classmethod
    def fit(cls, flat: torch.Tensor, ridge_fraction: float = CLOUD_RIDGE) -> CloudGaussian | None:
        """The fit to ``flat``'s rows, or None where the particles have no spread."""
        theta = flat.double()
        mean = theta.mean(0)
        factor = (theta - mean) / math.sqrt(max(1, len(theta) - 1))
        ridge = ridge_fraction * float(factor.square().sum()) / theta.shape[1]
        if not ridge > 0:
            return None
        gram = factor @ factor.T
        inner = torch.linalg.inv(ridge * torch.eye(len(gram), dtype=gram.dtype, device=gram.device) + gram)
        return cls(mean, factor, ridge, inner)

    def sample(self, rng: torch.Generator, count: int) -> torch.Tensor:
        """``count`` draws from N(0, K^T K + ridge I) (centred: the ellipse's auxiliary draws)."""
        rows, dim = self.factor.shape
        eta = torch.randn(count, rows, generator=rng, device=rng.device, dtype=torch.float64).to(self.factor.device)
        xi = torch.randn(count, dim, generator=rng, device=rng.device, dtype=torch.float64).to(self.factor.device)
        return eta @ self.factor + math.sqrt(self.ridge) * xi

    def quadratic_forms(self, u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(u^T Sigma^-1 u, u^T Sigma^-1 v, v^T Sigma^-1 v) per row, by Woodbury: a^T Sigma^-1 b =
        (a.b - (K a)^T (ridge I + K K^T)^-1 (K b)) / ridge, projecting u and v on K once."""
        ku, kv = u @ self.factor.T, v @ self.factor.T
        inner_ku = ku @ self.inner
        return tuple(
            ((a * b).sum(1) - (inner_ka * kb).sum(1)) / self.ridge
            for a, b, inner_ka, kb in ((u, u, inner_ku, ku), (u, v, inner_ku, kv), (v, v, kv @ self.inner, kv))
        )


class Clouds(NamedTuple):
    """Fitted Gaussians for a set of particles: row i's ellipse follows ``fits[which[i]]``. (Each
    half of SMC's particles follows the fit to the other half, and both halves move in one call.)"""

    fits: tuple[CloudGaussian, ...]
    which: torch.Tensor  # (N,) long: each row's fit

    @classmethod
    def one(cls, fit: CloudGaussian, count: int) -> Clouds:
        """Every one of ``count`` rows following ``fit``."""
        return cls((fit,), torch.zeros(count, dtype=torch.long, device=fit.mean.device))

    def rows(self, rows: torch.Tensor) -> Clouds:
        return Clouds(self.fits, self.which[rows])

    def means(self) -> torch.Tensor:
        """Each row's centre, (N, P); (1, P) where every row has the same, so that its images are
        computed once."""
        if len(self.fits) == 1:
            return self.fits[0].mean.unsqueeze(0)
        return torch.stack([fit.mean for fit in self.fits])[self.which]

    def sample(self, rng: torch.Generator) -> torch.Tensor:
        """One centred draw per row from its fit (the ellipses' auxiliary draws), (N, P)."""
        out = torch.empty(len(self.which), self.fits[0].factor.shape[1], dtype=torch.float64, device=self.which.device)
        for fit, rows in self._fit_rows():
            out[rows] = fit.sample(rng, len(rows))
        return out

    def quadratic_forms(self, u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``CloudGaussian.quadratic_forms`` per row, under its row's fit."""
        if len(self.fits) == 1:
            return self.fits[0].quadratic_forms(u, v)
        out = torch.empty(3, len(u), dtype=torch.float64, device=u.device)
        for fit, rows in self._fit_rows():
            out[:, rows] = torch.stack(fit.quadratic_forms(u[rows], v[rows]))
        return out[0], out[1], out[2]

    def _fit_rows(self):
        """Each fit with the rows that follow it."""
        for index, fit in enumerate(self.fits):
            yield fit, torch.nonzero(self.which == index).flatten()
