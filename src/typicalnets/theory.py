"""Effective complexity C~ of narrow teachers: upper bounds, exact p~ for tiny nets, sample sizes.

``/work/shared/theory.md`` ("Typical interpolators and narrow teachers") states the facts used here;
the paper is Buzaglo et al., "How uniform random weights induce non-uniform bias: typical
interpolating neural networks generalize with narrow teachers", ICML 2024.

- p~ = P_theta(h_theta = h* on the support) is the prior probability that a random student computes
  the teacher's function; C~ = -ln p~ (nats). A typical interpolator of n noiseless samples has, with
  probability >= 1 - delta, L_D <= (C~ + ln(1/delta)) / n (theory.md, "Generic bound").
- ``c_tilde_for`` / ``c_tilde_fcn`` / ``c_tilde_cnn`` give *upper bounds* on C~ for vanilla and
  scaled FCNs and CNNs under a quantized prior (theory.md, "Why C~ is small: redundancy"), each
  derived by exhibiting an event of students that equal the teacher (see ``_quantized_bound``).
- ``c_tilde_margin`` is the continuous-prior extension with an angular margin alpha.
- ``exact_p_tilde`` computes p~ itself for tiny networks (enumeration, or Monte Carlo with a
  Clopper-Pearson interval), which the tests use to check every bound numerically.
- ``epsilon_bound`` / ``n_required`` turn C~ into an error bound or a sample size.

Quantized prior model: Q levels including 0; q0 = P(level 0) (1/Q for the package's
``QuantizedUniform``); when q0 != 1/Q the other Q - 1 levels share 1 - q0 equally, so a given
nonzero level has probability r = (1 - q0) / (Q - 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from scipy.special import betainc, betaln, hyp2f1

from typicalnets.certificate import TIE
from typicalnets.data import boolean_cube
from typicalnets.errors import TypicalnetsError
from typicalnets.nets import CNN, FCN, Architecture, Population
from typicalnets.nets.population import split_flat
from typicalnets.priors import Gaussian, Prior, QuantizedUniform, Uniform
from typicalnets.stats import clopper_pearson
from typicalnets.teachers import check_narrower

LN2 = math.log(2.0)
# Student settings enumerated at most (Q^P); beyond it exact_p_tilde uses Monte Carlo.
ENUMERATION_CAP = 2_000_000
MONTE_CARLO_SAMPLES = 1_000_000
# Networks evaluated per forward call while enumerating or sampling students.
CHUNK = 65_536
# Boolean domains with more points than this are refused (pass ``domain=`` explicitly).
MAX_DOMAIN_POINTS = 1 << 16
# A teacher value within this relative distance of a level is that level (float32 teachers).
LEVEL_TOLERANCE = 1e-6


# --------------------------------------------------------------------------------------------
# Layer bookkeeping shared by every bound
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerCount:
    """One weight layer l = 1..L of a teacher placed inside a student.

    Units are neurons (FCN) or channels (CNN); ``taps`` is the number of weights joining one output
    unit to one input unit: 1 for dense layers, k_l^dims for a conv layer, and the number of spatial
    positions of the last feature map for a CNN readout (channel-major).
    """

    layer: int
    kind: str  # "dense", "conv" or "readout"
    student_in: int  # d_{l-1}
    teacher_in: int  # d*_{l-1}
    student_out: int  # d_l (1 for the readout)
    teacher_out: int  # d*_l
    taps: int
    bias: bool
    scaled: bool  # the layer's output units carry a scale (hidden layer of a scaled student)

    @property
    def hidden(self) -> bool:
        return self.kind != "readout"

    @property
    def teacher_weights(self) -> int:
        return self.teacher_out * self.teacher_in * self.taps

    @property
    def teacher_biases(self) -> int:
        return self.teacher_out if self.bias else 0

    @property
    def extra_in(self) -> int:
        return self.student_in - self.teacher_in

    @property
    def extra_out(self) -> int:
        return self.student_out - self.teacher_out

    @property
    def weights_from_extras(self) -> int:
        """Weights from the extra units below into teacher units: forced to 0 in a vanilla student,
        free in a scaled one (the extras are silenced by their scales)."""
        return self.teacher_out * self.extra_in * self.taps

    @property
    def log_placements(self) -> float:
        """ln(d_l! / (d_l - d*_l)!): injective placements of the teacher's units (hidden layers)."""
        if not self.hidden:
            return 0.0
        return math.lgamma(self.student_out + 1) - math.lgamma(self.extra_out + 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "kind": self.kind,
            "student_in": self.student_in,
            "teacher_in": self.teacher_in,
            "student_out": self.student_out,
            "teacher_out": self.teacher_out,
            "taps": self.taps,
            "bias": self.bias,
            "scaled": self.scaled,
            "teacher_weights": self.teacher_weights,
            "weights_from_extras": self.weights_from_extras,
            "log_placements": self.log_placements,
        }


def check_pair(teacher_arch: Architecture, student_arch: Architecture) -> None:
    """The teacher must be a narrower member of the student's family with the same everything else."""
    if not isinstance(student_arch, (FCN, CNN)) or not isinstance(teacher_arch, (FCN, CNN)):
        raise TypicalnetsError(
            f"C~ bounds are derived for fcn, sfcn, cnn and scnn, not {teacher_arch.name} in {student_arch.name}; "
            "use one of those families"
        )
    check_narrower(teacher_arch, student_arch)
    if teacher_arch.scaled and not student_arch.scaled:
        raise TypicalnetsError(
            f"a scaled teacher ({teacher_arch.name}) needs a scaled student, not {student_arch.name}; "
            "use a vanilla teacher or a scaled student"
        )
    if replace(teacher_arch.with_widths(student_arch.widths), scaled=student_arch.scaled) != student_arch:
        raise TypicalnetsError(
            "teacher and student differ in more than their widths (bias, kernels, stride, pool or activation); "
            "give them the same settings"
        )


def layer_counts(teacher_arch: Architecture, student_arch: Architecture) -> tuple[LayerCount, ...]:
    """Per-layer unit counts d_l, d*_l and taps K_l of a teacher/student pair (see ``LayerCount``)."""
    check_pair(teacher_arch, student_arch)
    s_units = (student_arch.input_shape[0], *student_arch.widths)
    t_units = (teacher_arch.input_shape[0], *teacher_arch.widths)
    if isinstance(student_arch, FCN):
        taps = [1] * len(student_arch.widths) + [1]
        kinds = ["dense"] * len(student_arch.widths)
    else:
        spatial = math.prod(student_arch.spatial_sizes()[-1])
        taps = [k**student_arch.dims for k in student_arch.kernel_size] + [spatial]
        kinds = ["conv"] * len(student_arch.widths)
    counts = []
    for index, (kind, k) in enumerate(zip([*kinds, "readout"], taps), start=1):
        readout = kind == "readout"
        counts.append(
            LayerCount(
                layer=index,
                kind=kind,
                student_in=s_units[index - 1],
                teacher_in=t_units[index - 1],
                student_out=1 if readout else s_units[index],
                teacher_out=1 if readout else t_units[index],
                taps=k,
                bias=student_arch.bias,
                scaled=student_arch.scaled and not readout,
            )
        )
    return tuple(counts)


# --------------------------------------------------------------------------------------------
# Quantized priors
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LevelModel:
    """Q levels with P(0) = q0 and every nonzero level (1 - q0) / (Q - 1)."""

    q: int
    zero_prob: float
    levels: tuple[float, ...] | None = None  # None: only Q is known (teacher-independent bounds)

    @classmethod
    def build(cls, q: int, zero_prob: float | None = None, levels: Sequence[float] | None = None) -> LevelModel:
        if isinstance(q, bool) or int(q) != q or q < 2:
            raise TypicalnetsError(f"a quantized prior needs Q >= 2 levels, got Q = {q}; use e.g. quantized:3")
        q = int(q)
        if levels is not None and 0.0 not in levels and zero_prob is not None:
            raise TypicalnetsError(
                f"--zero-prob needs 0 among the levels {list(levels)}; add the level 0 or drop --zero-prob"
            )
        q0 = 1.0 / q if zero_prob is None else float(zero_prob)
        if not (math.isfinite(q0) and 0.0 < q0 < 1.0):
            raise TypicalnetsError(
                f"the zero-level probability q0 = {zero_prob} must lie strictly between 0 and 1; "
                f"give e.g. --zero-prob {1.0 / q:.3g}"
            )
        return cls(q, q0, None if levels is None else tuple(float(v) for v in levels))

    @property
    def has_zero(self) -> bool:
        return self.levels is None or 0.0 in self.levels

    @property
    def nonzero_prob(self) -> float:
        return (1.0 - self.zero_prob) / (self.q - 1)

    @property
    def min_prob(self) -> float:
        return min(self.zero_prob, self.nonzero_prob)

    def neg_log_prob(self, values: torch.Tensor) -> float:
        """sum over ``values`` of -ln P(level = value); an error if some value is not a level."""
        if self.levels is None:
            raise TypicalnetsError("a teacher-specific bound needs the prior's levels; pass the prior object")
        values = values.detach().reshape(-1).double().cpu()
        levels = torch.tensor(self.levels, dtype=torch.float64)
        close = (values[:, None] - levels[None, :]).abs() <= LEVEL_TOLERANCE * levels.abs().clamp(min=1.0)
        missing = ~close.any(dim=1)
        if bool(missing.any()):
            raise TypicalnetsError(
                f"teacher value {values[missing][0].item():.6g} is not a level of the prior {list(self.levels)}; "
                "give the prior the teacher was drawn from"
            )
        zeros = int(close[:, levels == 0.0].any(dim=1).sum()) if 0.0 in self.levels else 0
        nonzeros = values.numel() - zeros
        return zeros * -math.log(self.zero_prob) + nonzeros * -math.log(self.nonzero_prob)


@dataclass(frozen=True)
class CTildeBound:
    """An upper bound on C~ = -ln p~ and how it was assembled.

    ``terms`` (nats) add up to ``nats``; ``counts`` are the constraint counts behind them;
    ``variant`` is "worst-case" (any teacher of these widths), "teacher-specific" (the given teacher's
    parameter values) or "margin" (continuous prior); ``placement_layers`` lists the hidden layers
    whose placement term was subtracted and ``placement_condition`` says why (see ``_placements``).
    """

    nats: float
    terms: dict[str, float]
    counts: dict[str, int]
    variant: str
    placement_condition: str
    placement_layers: tuple[int, ...]
    layers: tuple[LayerCount, ...]
    q: int | None = None
    zero_prob: float | None = None
    margin: float | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def bits(self) -> float:
        return self.nats / LN2

    @property
    def placements_used(self) -> bool:
        return bool(self.placement_layers)

    def to_dict(self) -> dict[str, Any]:
        return {
            "c_tilde": self.nats,
            "c_tilde_bits": self.bits,
            "variant": self.variant,
            "terms": dict(self.terms),
            "counts": dict(self.counts),
            "placements_used": self.placements_used,
            "placement_condition": self.placement_condition,
            "placement_layers": list(self.placement_layers),
            "q": self.q,
            "zero_prob": self.zero_prob,
            "margin": self.margin,
            "layers": [layer.to_dict() for layer in self.layers],
            "notes": list(self.notes),
        }


def _outgoing_vectors(teacher: Population, layer: LayerCount) -> torch.Tensor:
    """Row a: the teacher's weights from its unit a of layer ``layer.layer`` into every unit of the
    next layer (all of which are teacher units): next conv kernels, or readout weights at a's positions."""
    params = teacher.params
    nxt = params[f"w{layer.layer + 1}"][0].double()
    if isinstance(teacher.arch, CNN) and layer.layer + 1 == teacher.arch.depth:
        return nxt.reshape(layer.teacher_out, -1)  # channel-major readout: (units, positions)
    return nxt.transpose(0, 1).reshape(layer.teacher_out, -1)  # (out, in, taps..) -> (in, out * taps)


def placement_condition(teacher: Population, student_arch: Architecture) -> dict[int, bool]:
    """For each hidden layer with more than one placement, whether the disjointness condition holds.

    Vanilla student: the teacher units' outgoing weight vectors (into the next layer's teacher units)
    are pairwise distinct, and nonzero when the student layer has extra units. Scaled student: the
    pairs (scale, outgoing vector) are pairwise distinct, and every scale is nonzero when the layer
    has extras (a vanilla teacher in a scaled student has scales 1). See ``_quantized_bound``.
    """
    if len(teacher) != 1:
        raise TypicalnetsError(f"the teacher population holds {len(teacher)} networks; give exactly one")
    result = {}
    for layer in layer_counts(teacher.arch, student_arch):
        if not layer.hidden or layer.student_out < 2:
            continue
        outgoing = _outgoing_vectors(teacher, layer)
        if student_arch.scaled:
            scales = (
                teacher.params[f"s{layer.layer}"][0].double()
                if teacher.arch.scaled
                else torch.ones(layer.teacher_out, dtype=torch.float64)
            )
            keys = torch.cat([scales[:, None], outgoing], dim=1)
            silent = bool((scales == 0).any())
        else:
            keys = outgoing
            silent = bool((outgoing == 0).all(dim=1).any())
        distinct = torch.unique(keys, dim=0).shape[0] == layer.teacher_out
        result[layer.layer] = distinct and not (layer.extra_out > 0 and silent)
    return result


def _distinct_vectors_available(
    layers: Sequence[LayerCount], index: int, model: LevelModel, student_scaled: bool, teacher_scaled: bool
) -> bool:
    """Whether some teacher with Q levels can meet the placement condition in hidden layer ``index``."""
    layer, nxt = layers[index], layers[index + 1]
    dim = nxt.teacher_out * nxt.taps  # entries of one outgoing vector
    log_vectors = dim * math.log(model.q)
    extras = layer.extra_out > 0
    if student_scaled and teacher_scaled:
        # Pairs (nonzero scale when there are extras, vector).
        log_available = log_vectors + math.log(model.q - 1 if extras else model.q)
    elif student_scaled:
        log_available = log_vectors  # scales all 1; vectors need only be distinct
    else:
        # Nonzero vectors when there are extras: ln(Q^dim - 1), without overflow for long vectors.
        log_available = log_vectors + math.log1p(-math.exp(-log_vectors)) if extras else log_vectors
    return math.log(layer.teacher_out) <= log_available + 1e-12


def _placements(
    layers: tuple[LayerCount, ...],
    teacher: Population | None,
    student_arch: Architecture,
    teacher_arch: Architecture,
    model: LevelModel,
    placements: bool | None,
) -> tuple[str, tuple[int, ...]]:
    multi = [layer.layer for layer in layers if layer.hidden and layer.student_out >= 2]
    if placements is False:
        return "off", ()
    if teacher is None:
        if placements is None:
            return "not checked (no teacher; the worst-case bound uses one placement)", ()
        for index, layer in enumerate(layers):
            if layer.layer in multi and not _distinct_vectors_available(
                layers, index, model, student_arch.scaled, teacher_arch.scaled
            ):
                raise TypicalnetsError(
                    f"no teacher with {model.q} levels meets the placement condition in layer {layer.layer} "
                    f"({layer.teacher_out} units need distinct outgoing weights); use --no-placements"
                )
        return "assumed (bound holds for teachers meeting the placement condition)", tuple(multi)
    holds = placement_condition(teacher, student_arch)
    used = tuple(layer for layer in multi if holds[layer])
    failed = [layer for layer in multi if not holds[layer]]
    if placements and failed:
        raise TypicalnetsError(
            f"the placement condition fails for this teacher in layer(s) {failed} (outgoing weights repeat or are "
            "silent); drop --placements to use it only where it holds"
        )
    if not multi:
        return "holds (no layer has more than one placement)", ()
    if not failed:
        return "holds", used
    return ("partial" if used else "fails"), used


def _quantized_bound(
    teacher_arch: Architecture,
    student_arch: Architecture,
    model: LevelModel,
    teacher: Population | None,
    placements: bool | None,
) -> CTildeBound:
    """C~ upper bound for a quantized prior (theory.md, "Why C~ is small: redundancy"; Buzaglo et al. 2024).

    Derivation (our own, checked by ``exact_p_tilde`` in the tests). Fix one placement: teacher unit
    (neuron or channel) a of layer l sits at student unit a. Let A be the event that

    * vanilla student: every teacher unit's incoming weights from teacher units and its bias equal
      the teacher's, and its incoming weights from the *extra* units below are 0 (K_l per extra
      input unit for a conv layer; S positions per extra channel for a CNN readout). By induction
      over layers every teacher unit computes the teacher's unit, and the extras never reach the
      output, so h_theta = h* everywhere;
    * scaled student: every extra hidden unit has scale 0 (its output s * act(.) is exactly 0, so all
      its weights, and all weights leaving it, are free); every teacher unit's incoming weights from
      teacher units, its bias and its scale equal the teacher's (scale 1 for a vanilla teacher, which
      needs 1 to be a level).

    A fixes distinct parameters, each independently, so with q0 = P(0) and r = (1 - q0) / (Q - 1):

        -ln P(A) = sum_{teacher params theta*} -ln P(theta*)            ("teacher_params")
                   + ln(1/q0) * sum_l d*_l (d_{l-1} - d*_{l-1}) K_l     ("zero_weights", vanilla)
                   + ln(1/q0) * sum_{hidden l} (d_l - d*_l)             ("silenced_units", scaled)
                   + ln(1/r) * sum_{hidden l} d*_l                      ("unit_scales", vanilla in scaled)

    and p~ >= P(A). Without a teacher each teacher parameter costs its worst case ln(1/min(q0, r)),
    so the bound holds for every teacher of these widths (variant "worst-case"); with q0 = 1/Q it is
    theory.md's ln Q * sum_l d*_l (d_{l-1} + 1) (vanilla FCN) and ln Q * M* + ln Q * sum_l (d_l - d*_l)
    (scaled).

    Placement term (our proof). Let A_pi be the event above for injective placements pi_l of the
    teacher's layer-l units into the student's layer l (pi_0 = identity on the inputs; the output is
    fixed). Suppose that in hidden layer l the teacher units' outgoing weight vectors into the next
    layer's (teacher) units are pairwise distinct, and nonzero if the student's layer l has extra
    units (scaled: the pairs (scale, outgoing vector) are pairwise distinct, and every teacher scale
    is nonzero if there are extras). Take pi != pi' that agree outside a set G of such layers and
    let l be the top-most layer where they differ, so the layer above has the same placement in
    both. Some teacher unit a has pi_l(a) = j != pi'_l(a); under pi', j is the unit of another
    teacher unit b or an extra. Under A_pi the weights from j into the next layer's teacher-placed
    units equal a's outgoing vector; under A_pi' they equal b's, or 0 for an extra (vanilla); for a
    scaled student A_pi gives s_j = s*_a != 0 while an extra has s_j = 0, and a role b needs
    (s*_b, b's vector) = (s*_a, a's vector). Each case contradicts the condition, so these A_pi are
    pairwise disjoint. The prior is exchangeable, so all P(A_pi) are equal, and

        p~ >= P(union A_pi) = prod_{l in G} d_l! / (d_l - d*_l)!  *  P(A),

    i.e. subtract ``sum_{l in G} ln(d_l! / (d_l - d*_l)!)`` ("placements"). For CNNs the units are
    channels and the outgoing vector is the next conv's kernels from that channel, or its readout
    weights at all positions. Layers with one placement (d_l = 1) need no condition and add 0. The
    term is used only where the condition holds for the given teacher (``placements=None``); a
    worst-case bound uses it only when asked (``placements=True``), and then holds for teachers that
    meet the condition (an error if no teacher with these levels can).
    """
    layers = layer_counts(teacher_arch, student_arch)
    vanilla_in_scaled = student_arch.scaled and not teacher_arch.scaled
    zero_weights = 0 if student_arch.scaled else sum(layer.weights_from_extras for layer in layers)
    silenced = sum(layer.extra_out for layer in layers if layer.scaled)
    unit_scales = sum(layer.teacher_out for layer in layers if layer.scaled) if vanilla_in_scaled else 0
    teacher_params = teacher_arch.num_params()
    if (zero_weights or silenced) and not model.has_zero:
        raise TypicalnetsError(
            f"the prior's levels {list(model.levels or ())} lack 0, which silences the student's extra units; "
            "use a prior with the level 0 (odd Q) or equal teacher and student widths"
        )
    if unit_scales and model.levels is not None and 1.0 not in model.levels:
        raise TypicalnetsError(
            "a vanilla teacher in a scaled student needs scale 1, which is not a level of the prior; "
            "use a scaled teacher or levels that include 1"
        )
    if teacher is not None:
        if len(teacher) != 1:
            raise TypicalnetsError(f"the teacher population holds {len(teacher)} networks; give exactly one")
        if teacher.arch != teacher_arch:
            raise TypicalnetsError(
                f"the teacher network is {teacher.arch.describe()} but the teacher architecture is "
                f"{teacher_arch.describe()}; pass matching ones"
            )
        teacher_cost = sum(model.neg_log_prob(value) for value in teacher.params.values())
        variant = "teacher-specific"
    else:
        teacher_cost = teacher_params * -math.log(model.min_prob)
        variant = "worst-case"
    condition, used = _placements(layers, teacher, student_arch, teacher_arch, model, placements)
    placement_nats = -sum(layer.log_placements for layer in layers if layer.layer in used)
    terms = {
        "teacher_params": teacher_cost,
        "zero_weights": zero_weights * -math.log(model.zero_prob),
        "silenced_units": silenced * -math.log(model.zero_prob),
        "unit_scales": unit_scales * -math.log(model.nonzero_prob),
        "placements": placement_nats,
    }
    counts = {
        "teacher_params": teacher_params,
        "zero_weights": zero_weights,
        "silenced_units": silenced,
        "unit_scales": unit_scales,
        "student_params": student_arch.num_params(),
    }
    return CTildeBound(
        nats=math.fsum(terms.values()),
        terms=terms,
        counts=counts,
        variant=variant,
        placement_condition=condition,
        placement_layers=used,
        layers=layers,
        q=model.q,
        zero_prob=model.zero_prob,
    )


def c_tilde_fcn(
    in_dim: int,
    teacher_widths: Sequence[int],
    student_widths: Sequence[int],
    q: int,
    zero_prob: float | None = None,
    bias: bool = True,
    scaled: bool = False,
    placements: bool = False,
) -> CTildeBound:
    """Worst-case C~ bound (nats; ``.bits``) for an FCN (``scaled``: scaled-neuron FCN) of depth
    len(widths) + 1 whose teacher has ``teacher_widths`` and student ``student_widths``, Q levels and
    P(level 0) = ``zero_prob`` (default 1/Q). Formula and proof: ``_quantized_bound``.

    Vanilla: C~ <= ln(1/p_min) * sum_l d*_l (d*_{l-1} + 1) + ln(1/q0) * sum_l d*_l (d_{l-1} - d*_{l-1}),
    p_min = min(q0, (1 - q0)/(Q - 1)). Scaled: ln(1/p_min) * M* + ln(1/q0) * sum_hidden (d_l - d*_l),
    M* the teacher's parameter count (scales included). ``placements=True`` subtracts
    sum_l ln(d_l!/(d_l - d*_l)!), valid for teachers meeting the placement condition only.
    """
    student = FCN(in_dim, tuple(student_widths), bias=bias, scaled=scaled)
    teacher = FCN(in_dim, tuple(teacher_widths), bias=bias, scaled=scaled)
    return _quantized_bound(teacher, student, LevelModel.build(q, zero_prob), None, placements)


def c_tilde_cnn(
    in_shape: Sequence[int],
    teacher_channels: Sequence[int],
    student_channels: Sequence[int],
    kernel_size: int | Sequence[int],
    q: int,
    zero_prob: float | None = None,
    stride: int | Sequence[int] = 1,
    pool: int | Sequence[int] = 1,
    bias: bool = True,
    scaled: bool = False,
    placements: bool = False,
) -> CTildeBound:
    """Worst-case C~ bound for a CNN (``scaled``: one scale per channel) on inputs ``in_shape`` =
    (C, L) or (C, H, W). Formula and proof: ``_quantized_bound`` with units = channels and
    K_l = k_l^dims taps per input channel; the readout has S = (last spatial size) positions per channel:

    Vanilla: ln(1/p_min) * [sum_conv c*_l (c*_{l-1} K_l + 1) + c*_last S + 1]
             + ln(1/q0) * [sum_conv c*_l (c_{l-1} - c*_{l-1}) K_l + (c_last - c*_last) S].
    Scaled:  ln(1/p_min) * M* + ln(1/q0) * sum_conv (c_l - c*_l).
    """
    common = {"kernel_size": kernel_size, "stride": stride, "pool": pool, "bias": bias, "scaled": scaled}
    student = CNN(tuple(in_shape), tuple(student_channels), **common)
    teacher = CNN(tuple(in_shape), tuple(teacher_channels), **common)
    return _quantized_bound(teacher, student, LevelModel.build(q, zero_prob), None, placements)


def c_tilde_for(
    teacher_arch: Architecture,
    student_arch: Architecture,
    prior: Prior,
    teacher: Population | None = None,
    zero_prob: float | None = None,
    placements: bool | None = None,
    margin: float | None = None,
) -> CTildeBound:
    """The C~ bound for a teacher/student pair of architectures (``typicalnets.nets``) and a prior.

    Quantized prior: ``_quantized_bound`` (worst-case without ``teacher``; teacher-specific, and
    with the placement term wherever its condition holds, given the one-network ``teacher``).
    ``placements``: None = only where proven for the teacher, True = require it, False = never.
    Uniform or Gaussian prior: needs ``margin`` (radians) and gives ``c_tilde_margin``.
    """
    if isinstance(prior, QuantizedUniform):
        if margin is not None:
            raise TypicalnetsError("--margin is for continuous priors (uniform:A, gaussian:S); drop it for quantized:Q")
        model = LevelModel.build(prior.q, zero_prob, prior.levels)
        return _quantized_bound(teacher_arch, student_arch, model, teacher, placements)
    if isinstance(prior, (Uniform, Gaussian)):
        if margin is None:
            raise TypicalnetsError(
                f"a continuous prior ({prior.spec()}) gives exact equality probability 0; give an angular margin "
                "with --margin ALPHA (radians), or use quantized:Q"
            )
        if zero_prob is not None:
            raise TypicalnetsError("--zero-prob applies to quantized priors only; drop it for uniform/gaussian")
        if placements:
            raise TypicalnetsError("the placement term is proven for quantized priors only; drop --placements")
        return c_tilde_margin(teacher_arch, student_arch, prior, margin)
    raise TypicalnetsError(f"no C~ bound for the prior {prior!r}; use quantized:Q, uniform:A or gaussian:S")


# --------------------------------------------------------------------------------------------
# Continuous priors with an angular margin
# --------------------------------------------------------------------------------------------


def log_spherical_cap_probability(alpha: float, dim: int) -> float:
    """ln P(angle(g, v) < alpha) for g ~ N(0, I_dim), any fixed v != 0, 0 < alpha <= pi/2.

    The direction g/|g| is uniform on the sphere S^{dim-1}, and the cap of half-angle alpha holds
    the fraction I_{sin^2 alpha}((dim - 1)/2, 1/2) / 2 of it (regularized incomplete beta). dim = 1:
    the "direction" is the sign, which matches with probability 1/2. Where ``betainc`` underflows
    the same value comes from I_x(a, b) = x^a (1-x)^b 2F1(a+b, 1; a+1; x) / (a B(a, b)).
    """
    if not (0.0 < alpha <= math.pi / 2):
        raise TypicalnetsError(f"the angular margin must lie in (0, pi/2] radians, got {alpha}; give e.g. --margin 0.1")
    if dim < 1:
        raise TypicalnetsError(f"a cap needs dimension >= 1, got {dim}; give a positive dimension")
    if dim == 1 or alpha == math.pi / 2:
        return -LN2  # the sign matches, or a hemisphere
    a, x = (dim - 1) / 2.0, math.sin(alpha) ** 2
    value = float(betainc(a, 0.5, x))
    if value > 1e-290:
        return math.log(value) - LN2
    return _log_incomplete_beta_series(a, 0.5, alpha) - LN2


def _log_incomplete_beta_series(a: float, b: float, alpha: float) -> float:
    """ln I_x(a, b) at x = sin^2 alpha from x^a (1-x)^b 2F1(a+b, 1; a+1; x) / (a B(a, b)), in logs
    (for caps too small for ``betainc``; ln x = 2 ln sin alpha stays finite for tiny alpha)."""
    log_x, log_rest = 2.0 * math.log(math.sin(alpha)), 2.0 * math.log(math.cos(alpha))
    series = float(hyp2f1(a + b, 1.0, a + 1.0, math.sin(alpha) ** 2))
    return a * log_x + b * log_rest - math.log(a) - float(betaln(a, b)) + math.log(series)


def spherical_cap_probability(alpha: float, dim: int) -> float:
    """P(angle(g, v) < alpha) for isotropic Gaussian g in R^dim; see ``log_spherical_cap_probability``."""
    return math.exp(log_spherical_cap_probability(alpha, dim))


def c_tilde_margin(teacher_arch: Architecture, student_arch: Architecture, prior: Prior, margin: float) -> CTildeBound:
    """C~ for continuous priors with angular margin ``margin`` = alpha (an extension; theory.md, "Continuous priors").

    Exact equality has prior probability 0, so the event is relaxed: every teacher unit's incoming
    vector (weights and bias) lies within angle alpha of the embedded teacher's vector. Its dimension
    is m = d_{l-1} K_l + bias for a vanilla student (the cap is around the teacher's weights with 0
    on the extras) and m = d*_{l-1} K_l + bias for a scaled one (extras are silenced by their scales).

    Proven (given the margin assumption below): for a Gaussian prior the directions of different
    units are independent and uniform on the sphere, so the event has probability
    prod_units cap(alpha, m_unit) with cap(alpha, m) = I_{sin^2 alpha}((m-1)/2, 1/2) / 2
    (``spherical_cap_probability``) -- the term "teacher_directions"; -ln cap ~ (m - 1) ln(1/alpha),
    i.e. ln(1/alpha) per weight plays the role of ln Q. For a uniform prior on [-a, a]^m the cone of
    the cap contains the cone inside the inscribed ball of radius a, so its probability is at least
    cap * vol(B_m) / 2^m = cap * pi^{m/2} / (Gamma(m/2 + 1) 2^m): the added term
    "uniform_correction" = sum_units ln(2^m Gamma(m/2 + 1) / pi^{m/2}) keeps that a lower bound too.

    Heuristic (not proven): (i) the margin assumption itself -- that every student in the event
    computes the teacher's labels on the support (it holds for sign activations whose
    pre-activations keep their signs under any rotation by < alpha; for ReLU positive rescalings
    propagate to the next layer, so it is an approximation); (ii) for scaled students, an extra unit
    counts as silenced when |s| <= alpha * (prior scale) -- probability erf(alpha / sqrt 2) for a
    Gaussian, alpha for a uniform prior ("silenced_units") -- and a teacher unit's scale must have the
    teacher's sign, ln 2 each ("scale_signs"). Placements are not used (not proven here).
    """
    if not isinstance(prior, (Uniform, Gaussian)):
        raise TypicalnetsError(
            f"the margin bound is for continuous priors (uniform:A or gaussian:S), not {prior.spec()}; "
            "use c_tilde_for for quantized priors"
        )
    log_spherical_cap_probability(margin, 1)  # validates the margin
    layers = layer_counts(teacher_arch, student_arch)
    directions = correction = 0.0
    units = 0
    for layer in layers:
        fan = (layer.teacher_in if student_arch.scaled else layer.student_in) * layer.taps
        m = fan + (1 if layer.bias else 0)
        directions += layer.teacher_out * -log_spherical_cap_probability(margin, m)
        if isinstance(prior, Uniform):
            correction += layer.teacher_out * (m * LN2 + math.lgamma(m / 2 + 1) - (m / 2) * math.log(math.pi))
        units += layer.teacher_out
    silenced = sum(layer.extra_out for layer in layers if layer.scaled)
    signed = sum(layer.teacher_out for layer in layers if layer.scaled)
    silence_prob = math.erf(margin / math.sqrt(2.0)) if isinstance(prior, Gaussian) else min(margin, 1.0)
    terms = {
        "teacher_directions": directions,
        "uniform_correction": correction,
        "silenced_units": silenced * -math.log(silence_prob),
        "scale_signs": signed * LN2,
    }
    counts = {
        "teacher_units": units,
        "silenced_units": silenced,
        "scale_signs": signed,
        "teacher_params": teacher_arch.num_params(),
        "student_params": student_arch.num_params(),
    }
    notes = [
        "proven given the margin assumption: Gaussian cap probabilities"
        + (" and the uniform inscribed-ball correction" if isinstance(prior, Uniform) else ""),
        "heuristic: the margin assumption itself"
        + ("; silencing extras by |s| <= alpha * scale and matching scale signs" if student_arch.scaled else ""),
    ]
    return CTildeBound(
        nats=math.fsum(terms.values()),
        terms=terms,
        counts=counts,
        variant="margin",
        placement_condition="off (not proven for continuous priors)",
        placement_layers=(),
        layers=layers,
        margin=float(margin),
        notes=tuple(notes),
    )


# --------------------------------------------------------------------------------------------
# Sample size and error
# --------------------------------------------------------------------------------------------


def _check_c_delta(c_tilde: float, delta: float) -> None:
    if not (math.isfinite(c_tilde) and c_tilde >= 0):
        raise TypicalnetsError(f"C~ must be a finite number >= 0, got {c_tilde}; pass a computed bound")
    if not (0.0 < delta < 1.0):
        raise TypicalnetsError(f"delta must lie strictly between 0 and 1, got {delta}; give e.g. --delta 0.05")


def epsilon_bound(c_tilde: float, n: int, delta: float = 0.05) -> float:
    """(C~ + ln(1/delta)) / n: with probability >= 1 - delta a typical interpolator of n noiseless
    samples has L_D at most this (theory.md, "Generic bound"); values >= 1 are vacuous."""
    _check_c_delta(c_tilde, delta)
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise TypicalnetsError(f"n must be a positive integer, got {n}; give e.g. --n 100")
    return (c_tilde + math.log(1.0 / delta)) / int(n)


def n_required(c_tilde: float, epsilon: float, delta: float = 0.05) -> int:
    """ceil((C~ + ln(1/delta)) / epsilon): samples that suffice for L_D <= epsilon w.p. >= 1 - delta
    (theory.md, "Generic bound"). A quotient within 1e-12 (relative) above an integer rounds down."""
    _check_c_delta(c_tilde, delta)
    if not (0.0 < epsilon <= 1.0):
        raise TypicalnetsError(f"epsilon must lie in (0, 1], got {epsilon}; give e.g. --epsilon 0.1")
    ratio = (c_tilde + math.log(1.0 / delta)) / epsilon
    return max(1, math.ceil(ratio * (1.0 - 1e-12)))


def plot_epsilon_vs_n(
    c_tilde: float, delta: float, path: str | Path, n: int | None = None, epsilon: float | None = None, title: str = ""
) -> None:
    """Draw the error bound (C~ + ln(1/delta)) / n against n (log x) into ``path`` (PNG, PDF, SVG)."""
    import matplotlib

    matplotlib.use("Agg")  # file output only
    import matplotlib.pyplot as plt
    import numpy as np

    budget = c_tilde + math.log(1.0 / delta)
    low = max(1.0, min(budget, n or budget))  # from where the bound leaves 1 (or the given n)
    high = max(low * 1000.0, 10.0 * (n or 1), 10.0 * (n_required(c_tilde, epsilon, delta) if epsilon else 1))
    grid = np.geomspace(low, high, 200)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(grid, np.minimum(budget / grid, 1.0), label=f"(C~ + ln(1/δ)) / n, C~ = {c_tilde:.3g} nats, δ = {delta:g}")
    if n is not None:
        ax.plot([n], [min(budget / n, 1.0)], "o", label=f"n = {n}: ε ≤ {budget / n:.3g}")
    if epsilon is not None:
        need = n_required(c_tilde, epsilon, delta)
        ax.plot([need], [epsilon], "s", label=f"ε = {epsilon:g}: n ≥ {need}")
    ax.set_xscale("log")
    ax.set_xlabel("training examples n")
    ax.set_ylabel("error bound ε")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# Exact p~ for tiny networks
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PTilde:
    """p~ = P(student = teacher on the support) for one teacher and a student architecture.

    ``method`` is "enumeration" (exact: ``count`` of the ``total`` = Q^P settings match, and ``p``
    weighs each by its prior probability; ``ci`` = (p, p)) or "monte-carlo" (``count`` of ``total``
    draws match, ``p`` = count/total, ``ci`` the Clopper-Pearson interval). ``support`` is the number
    of domain points where the teacher's f != 0. ``matches_by_zeros[z]`` counts matching settings
    with z zero parameters (enumeration only); ``at_zero_prob`` re-weighs them for another q0.
    """

    p: float
    method: str
    count: int
    total: int
    ci: tuple[float, float]
    support: int
    q: int
    num_params: int
    matches_by_zeros: tuple[int, ...] | None = None

    @property
    def c_tilde(self) -> float:
        """-ln p~ (inf if p~ = 0)."""
        return -math.log(self.p) if self.p > 0 else math.inf

    def at_zero_prob(self, zero_prob: float) -> float:
        """The exact p~ under P(0) = ``zero_prob`` and (1 - q0)/(Q - 1) per nonzero level."""
        if self.matches_by_zeros is None:
            raise TypicalnetsError("re-weighing needs an enumeration; Monte Carlo results have one q0")
        model = LevelModel.build(self.q, zero_prob)
        return _weighted(self.matches_by_zeros, model)


def _weighted(matches_by_zeros: Sequence[int], model: LevelModel) -> float:
    size = len(matches_by_zeros) - 1
    log_zero, log_other = math.log(model.zero_prob), math.log(model.nonzero_prob)
    return math.fsum(
        count * math.exp(z * log_zero + (size - z) * log_other) for z, count in enumerate(matches_by_zeros) if count
    )


def boolean_domain(input_shape: tuple[int, ...]) -> torch.Tensor:
    """Every point of {-1, +1}^(input shape), shape (2^size, *input_shape) (``data.boolean_cube``)."""
    size = math.prod(input_shape)
    if 2**size > MAX_DOMAIN_POINTS:
        raise TypicalnetsError(
            f"the Boolean cube of inputs {input_shape} has 2^{size} points; exact p~ is for tiny inputs "
            f"(<= {MAX_DOMAIN_POINTS} points), or pass domain= explicitly"
        )
    return boolean_cube(size).reshape(-1, *input_shape)


def _signs(f: torch.Tensor) -> torch.Tensor:
    """Signs with |f| <= TIE as 0 (a mistake): the certificate's tie rule, on |f| itself, since the
    tiny networks enumerated here have outputs of order 1."""
    return torch.where(f.abs() <= TIE, torch.zeros_like(f), torch.sign(f)).to(torch.int8)


def exact_p_tilde(
    teacher: Population,
    student: Architecture,
    domain: torch.Tensor | None = None,
    zero_prob: float | None = None,
    prior: QuantizedUniform | None = None,
    max_enumeration: int = ENUMERATION_CAP,
    samples: int = MONTE_CARLO_SAMPLES,
    generator: torch.Generator | None = None,
    confidence: float = 0.95,
) -> PTilde:
    """p~ = P_theta(h_theta = h* on the support) for a one-network ``teacher`` and a ``student`` arch.

    The support is the points of ``domain`` (default: the whole Boolean cube {-1,+1}^input) where
    the teacher's f* != 0; inputs with f* = 0 are excluded from the input distribution, as in
    ``typicalnets.teachers``. A student matches if sign(f) = sign(f*) at every support point, where
    its own f = 0 is a mistake (sign 0). Everything runs in float64 and |f| <= 1e-9 counts as 0.

    The student's parameters are i.i.d. over the levels of ``prior`` (default: the teacher's), with
    P(0) = ``zero_prob`` (default 1/Q) and the rest shared equally. If Q^P <= ``max_enumeration``
    every setting is enumerated and weighed (exact); otherwise ``samples`` settings are drawn with
    ``generator`` (default seed 0) and the interval is Clopper-Pearson at ``confidence``.
    """
    if len(teacher) != 1:
        raise TypicalnetsError(f"the teacher population holds {len(teacher)} networks; give exactly one")
    prior = teacher.prior if prior is None else prior
    if not isinstance(prior, QuantizedUniform):
        raise TypicalnetsError(f"exact p~ enumerates a quantized prior, not {prior.spec()}; use quantized:Q")
    if tuple(student.input_shape) != tuple(teacher.arch.input_shape):
        raise TypicalnetsError(
            f"student inputs {student.input_shape} differ from the teacher's {teacher.arch.input_shape}; match them"
        )
    model = LevelModel.build(prior.q, zero_prob, prior.levels)
    x = boolean_domain(tuple(student.input_shape)) if domain is None else domain
    x = x.double()
    with torch.no_grad():
        target = _signs(teacher.to(dtype=torch.float64).forward(x)[0])
    support = target != 0
    if not bool(support.any()):
        raise TypicalnetsError(
            "the teacher outputs 0 on every domain point, so p~ is trivially 1; draw another teacher"
        )
    x, target = x[support], target[support]
    levels = torch.tensor(prior.levels, dtype=torch.float64)
    zero_index = prior.levels.index(0.0) if 0.0 in prior.levels else -1
    size, q = student.num_params(), prior.q

    def matches(index: torch.Tensor) -> torch.Tensor:
        params = split_flat(student, levels[index])
        with torch.no_grad():
            return (_signs(student.forward(params, x)) == target).all(dim=1)

    total = q**size
    if total <= max_enumeration:
        histogram = torch.zeros(size + 1, dtype=torch.long)
        powers = q ** torch.arange(size, dtype=torch.long)
        for start in range(0, total, CHUNK):
            codes = torch.arange(start, min(start + CHUNK, total), dtype=torch.long)
            index = (codes[:, None] // powers[None, :]) % q  # base-Q digits: one level index per parameter
            ok = matches(index)
            zeros = (index[ok] == zero_index).sum(dim=1)
            histogram += torch.bincount(zeros, minlength=size + 1)
        by_zeros = tuple(int(v) for v in histogram)
        p = _weighted(by_zeros, model) if zero_index >= 0 else sum(by_zeros) / total
        return PTilde(
            p=p,
            method="enumeration",
            count=sum(by_zeros),
            total=total,
            ci=(p, p),
            support=int(support.sum()),
            q=q,
            num_params=size,
            matches_by_zeros=by_zeros,
        )
    if samples < 1:
        raise TypicalnetsError(f"Monte Carlo needs samples >= 1, got {samples}; give e.g. samples=10000")
    generator = torch.Generator().manual_seed(0) if generator is None else generator
    probs = torch.full((q,), model.nonzero_prob, dtype=torch.float64)
    if zero_index >= 0:
        probs[zero_index] = model.zero_prob
    count = 0
    for start in range(0, samples, CHUNK):
        batch = min(CHUNK, samples - start)
        index = torch.multinomial(probs, batch * size, replacement=True, generator=generator).reshape(batch, size)
        count += int(matches(index).sum())
    low, high = clopper_pearson(count, samples, confidence)
    return PTilde(
        p=count / samples,
        method="monte-carlo",
        count=count,
        total=samples,
        ci=(low, high),
        support=int(support.sum()),
        q=q,
        num_params=size,
    )


# --------------------------------------------------------------------------------------------
# The report behind `typicalnets bound`
# --------------------------------------------------------------------------------------------


def bound_report(
    bound: CTildeBound, prior: Prior, delta: float = 0.05, n: int | None = None, epsilon: float | None = None
) -> dict[str, Any]:
    """The bound as one JSON-able dict: ``c_tilde`` (nats), ``c_tilde_bits``, the terms and counts,
    ``epsilon`` = (C~ + ln(1/delta))/n when ``n`` is given, ``n_required`` when ``epsilon`` is given
    (also echoed as ``target_epsilon``), and for quantized priors ``c_tilde_all_params``: the naive
    bound that fixes every student parameter, for comparison."""
    _check_c_delta(bound.nats, delta)
    report = bound.to_dict()
    report.update(prior=prior.spec(), delta=delta, n=n, target_epsilon=epsilon)
    if bound.q is not None:
        model = LevelModel.build(bound.q, bound.zero_prob)
        report["c_tilde_all_params"] = bound.counts["student_params"] * -math.log(model.min_prob)
    if n is not None:
        report["epsilon"] = epsilon_bound(bound.nats, n, delta)
    if epsilon is not None:
        report["n_required"] = n_required(bound.nats, epsilon, delta)
    return report
