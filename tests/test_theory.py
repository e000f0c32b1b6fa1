"""C~ bounds (typicalnets.theory): closed forms, exact p~ of tiny networks, Guess & Check, margins.

The central check (theory.md, "What must be checked numerically"): for many random tiny
teacher/student pairs of every family, the exact p~ (every student setting enumerated on the whole
Boolean cube) satisfies p~ >= exp(-C~_bound), for the teacher-specific bound (with the placement
term wherever its condition holds), the worst-case bound, and several zero-level probabilities q0.
"""

from __future__ import annotations

import itertools
import math
import re

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from typicalnets.data import Dataset
from typicalnets.errors import TypicalnetsError
from typicalnets.nets import CNN, FCN, Population
from typicalnets.priors import Gaussian, QuantizedUniform, Uniform
from typicalnets.samplers import GuessAndCheck, sample
from typicalnets.stats import clopper_pearson
from typicalnets.theory import (
    LevelModel,
    _log_incomplete_beta_series,
    boolean_domain,
    c_tilde_cnn,
    c_tilde_fcn,
    c_tilde_for,
    c_tilde_margin,
    epsilon_bound,
    exact_p_tilde,
    log_spherical_cap_probability,
    n_required,
    placement_condition,
    spherical_cap_probability,
)

TERNARY = QuantizedUniform.evenly_spaced(3)
QUINARY = QuantizedUniform.evenly_spaced(5)
ZERO_ONE = QuantizedUniform((0.0, 1.0))
MINUS_ZERO = QuantizedUniform((-1.0, 0.0))
# Relative slack for float rounding in "p >= exp(-C)"; a real violation is far larger.
ROUNDING = 1e-9


def fixed_teacher(arch, prior=TERNARY, **values) -> Population:
    """A one-network teacher with the given parameter values (nested lists, one network)."""
    params = {name: torch.tensor([values[name]], dtype=torch.float32) for name in arch.param_shapes()}
    return Population(arch, prior, params)


def random_teacher(arch, prior, generator) -> Population:
    """A random teacher whose f* is nonzero somewhere on the Boolean cube (else p~ is trivially 1)."""
    cube = boolean_domain(arch.input_shape)
    while True:
        teacher = Population.draw(arch, prior, 1, generator)
        if bool((teacher.forward(cube) != 0).any()):
            return teacher


# --------------------------------------------------------------------------------------------
# Closed forms
# --------------------------------------------------------------------------------------------

widths_pairs = (
    st.integers(1, 3)
    .flatmap(
        lambda depth: st.tuples(
            st.lists(st.integers(1, 4), min_size=depth, max_size=depth),
            st.lists(st.integers(0, 5), min_size=depth, max_size=depth),
        )
    )
    .map(lambda pair: (tuple(pair[0]), tuple(t + e for t, e in zip(*pair))))
)


@given(in_dim=st.integers(1, 20), widths=widths_pairs, q=st.sampled_from([3, 5, 7, 15]))
def test_vanilla_fcn_bound_is_theory_md_formula(in_dim, widths, q):
    teacher, student = widths
    bound = c_tilde_fcn(in_dim, teacher, student, q)
    d, t = (in_dim, *student, 1), (in_dim, *teacher, 1)
    expected = math.log(q) * sum(t[k] * (d[k - 1] + 1) for k in range(1, len(d)))
    assert bound.nats == pytest.approx(expected, rel=1e-12)
    assert bound.bits == pytest.approx(expected / math.log(2), rel=1e-12)
    assert bound.variant == "worst-case" and not bound.placements_used
    assert bound.nats == pytest.approx(sum(bound.terms.values()))


@given(in_dim=st.integers(1, 20), widths=widths_pairs, q=st.sampled_from([3, 5, 7]))
def test_scaled_fcn_bound_is_teacher_params_plus_one_scale_per_extra(in_dim, widths, q):
    teacher, student = widths
    bound = c_tilde_fcn(in_dim, teacher, student, q, scaled=True)
    teacher_params = FCN(in_dim, teacher, scaled=True).num_params()
    extras = sum(s - t for s, t in zip(student, teacher))
    assert bound.nats == pytest.approx(math.log(q) * (teacher_params + extras), rel=1e-12)
    assert bound.counts["silenced_units"] == extras and bound.counts["zero_weights"] == 0


def test_cnn_bounds_by_hand():
    # (1, 8) input, kernel 3, pool 2: 6 conv outputs pooled to S = 3 positions per channel.
    vanilla = c_tilde_cnn((1, 8), (2,), (5,), 3, q=3, pool=2)
    # teacher: 2*(1*3 + 1) conv + (2*3 + 1) readout = 15; zeros: (5 - 2) * 3 readout positions = 9.
    assert vanilla.counts["teacher_params"] == 15 and vanilla.counts["zero_weights"] == 9
    assert vanilla.nats == pytest.approx(24 * math.log(3))
    scaled = c_tilde_cnn((1, 8), (2,), (5,), 3, q=3, pool=2, scaled=True)
    assert scaled.nats == pytest.approx((15 + 2 + 3) * math.log(3))  # + 2 teacher scales + 3 silenced channels
    # 2-D, two conv layers, kernel 2 (4 taps): spatial 5x5 -> 4x4 -> 3x3, S = 9.
    deep = c_tilde_cnn((2, 5, 5), (1, 2), (3, 4), 2, q=5)
    # sum_l c*_l (c_{l-1} K_l + 1) + (c_last S + 1) = 1*(2*4+1) + 2*(3*4+1) + (4*9+1) = 72.
    assert deep.nats == pytest.approx(72 * math.log(5))
    assert deep.layers[-1].taps == 9 and deep.layers[0].taps == 4


@given(q=st.integers(2, 9), q0=st.floats(0.01, 0.99), widths=widths_pairs, scaled=st.booleans())
def test_general_zero_probability_formula(q, q0, widths, scaled):
    teacher, student = widths
    bound = c_tilde_fcn(3, teacher, student, q, zero_prob=q0, scaled=scaled)
    p_min = min(q0, (1 - q0) / (q - 1))
    arch = FCN(3, teacher, scaled=scaled)
    d, t = (3, *student, 1), (3, *teacher, 1)
    zeros = 0 if scaled else sum(t[k] * (d[k - 1] - t[k - 1]) for k in range(1, len(d)))
    silenced = sum(s - w for s, w in zip(student, teacher)) if scaled else 0
    expected = arch.num_params() * -math.log(p_min) + (zeros + silenced) * -math.log(q0)
    assert bound.nats == pytest.approx(expected, rel=1e-12)


def test_bound_grows_linearly_with_student_width_not_its_parameter_count():
    widths = range(2, 9)
    bounds = [c_tilde_fcn(10, (1, 1), (w, w), 3).nats for w in widths]
    steps = [b - a for a, b in itertools.pairwise(bounds)]
    assert steps == pytest.approx([2 * math.log(3)] * len(steps))  # one zero weight per extra, in 2 layers
    params = [FCN(10, (w, w)).num_params() for w in widths]
    assert params[-1] - params[-2] > params[1] - params[0]  # the student's own count is quadratic


def test_teacher_specific_bound_never_exceeds_worst_case():
    gen = torch.Generator().manual_seed(5)
    for teacher_arch, student_arch, prior, q0 in [
        (FCN(6, (3, 2)), FCN(6, (8, 5)), QUINARY, None),
        (FCN(6, (3, 2), scaled=True), FCN(6, (8, 5), scaled=True), TERNARY, 0.7),
        (FCN(6, (3,)), FCN(6, (8,), scaled=True), TERNARY, 0.2),
        (
            CNN((2, 6, 6), (2, 3), kernel_size=2, pool=(1, 2)),
            CNN((2, 6, 6), (4, 6), kernel_size=2, pool=(1, 2)),
            TERNARY,
            0.5,
        ),
    ]:
        worst = c_tilde_for(teacher_arch, student_arch, prior, zero_prob=q0)
        for _ in range(10):
            teacher = Population.draw(teacher_arch, prior, 1, gen)
            specific = c_tilde_for(teacher_arch, student_arch, prior, teacher=teacher, zero_prob=q0)
            unplaced = c_tilde_for(teacher_arch, student_arch, prior, teacher=teacher, zero_prob=q0, placements=False)
            assert specific.variant == "teacher-specific"
            assert specific.nats <= unplaced.nats + 1e-9 <= worst.nats + 2e-9
            assert specific.terms["placements"] == pytest.approx(
                -sum(layer.log_placements for layer in specific.layers if layer.layer in specific.placement_layers)
            )


def test_placement_condition_on_constructed_teachers():
    arch, student = FCN(2, (2,)), FCN(2, (4,))
    base = {"w1": [[1, 0], [0, 1]], "b1": [0, 0], "b2": [0]}
    distinct = fixed_teacher(arch, w2=[[1, -1]], **base)
    repeated = fixed_teacher(arch, w2=[[1, 1]], **base)
    silent = fixed_teacher(arch, w2=[[0, 1]], **base)
    assert placement_condition(distinct, student) == {1: True}
    assert placement_condition(repeated, student) == {1: False}
    assert placement_condition(silent, student) == {1: False}  # a zero outgoing vector looks like an extra
    assert placement_condition(silent, arch) == {1: True}  # ... which is fine when there are no extras
    one_placement = c_tilde_for(arch, student, TERNARY, teacher=repeated)
    used = c_tilde_for(arch, student, TERNARY, teacher=distinct)
    assert used.placement_condition == "holds" and used.placement_layers == (1,)
    assert one_placement.placement_condition == "fails" and one_placement.placement_layers == ()
    assert used.nats == pytest.approx(one_placement.nats - math.log(4 * 3))  # 4!/2! placements
    with pytest.raises(TypicalnetsError, match="placement condition fails"):
        c_tilde_for(arch, student, TERNARY, teacher=repeated, placements=True)
    # Scaled: equal outgoing vectors are told apart by different scales; a zero scale looks like an extra.
    scaled, scaled_student = FCN(2, (2,), scaled=True), FCN(2, (3,), scaled=True)
    assert placement_condition(fixed_teacher(scaled, w2=[[1, 1]], s1=[1, -1], **base), scaled_student) == {1: True}
    assert placement_condition(fixed_teacher(scaled, w2=[[1, 1]], s1=[1, 1], **base), scaled_student) == {1: False}
    assert placement_condition(fixed_teacher(scaled, w2=[[1, -1]], s1=[0, 1], **base), scaled_student) == {1: False}
    # Worst case: never by default; assumed on request; refused where no teacher can meet it.
    assert c_tilde_for(arch, student, TERNARY).placement_layers == ()
    assumed = c_tilde_for(arch, student, TERNARY, placements=True)
    assert assumed.placement_condition.startswith("assumed") and assumed.terms["placements"] == pytest.approx(
        -math.log(12)
    )
    with pytest.raises(TypicalnetsError, match="no teacher with 3 levels"):
        c_tilde_fcn(2, (3,), (4,), 3, placements=True)  # three distinct nonzero readout weights from {-1, 1}


def test_bad_inputs_are_one_line_errors():
    cases = [
        (lambda: c_tilde_fcn(4, (5,), (4,), 3), "exceed student widths"),
        (lambda: c_tilde_fcn(4, (2,), (4, 4), 3), "share family, input and depth"),
        (lambda: c_tilde_fcn(4, (2,), (4,), 1), "Q >= 2"),
        (lambda: c_tilde_fcn(4, (2,), (4,), 3, zero_prob=0.0), "strictly between 0 and 1"),
        (lambda: c_tilde_fcn(4, (2,), (4,), 3, zero_prob=1.0), "strictly between 0 and 1"),
        (lambda: c_tilde_fcn(4, (2,), (4,), 3, zero_prob=float("nan")), "strictly between 0 and 1"),
        (lambda: c_tilde_for(FCN(4, (2,), scaled=True), FCN(4, (4,)), TERNARY), "needs a scaled student"),
        (lambda: c_tilde_for(CNN((1, 6), (1,), 2), CNN((1, 6), (2,), 3), TERNARY), "more than their widths"),
        (lambda: c_tilde_for(FCN(4, (2,)), FCN(4, (4,)), Gaussian(1.0)), "--margin"),
        (lambda: c_tilde_for(FCN(4, (2,)), FCN(4, (4,)), TERNARY, margin=0.1), "continuous priors"),
        (
            lambda: c_tilde_for(
                FCN(1, (1,)),
                FCN(1, (2,)),
                TERNARY,
                teacher=fixed_teacher(FCN(1, (1,)), w1=[[0.5]], b1=[0], w2=[[1]], b2=[0]),
            ),
            "not a level",
        ),
        (lambda: c_tilde_for(FCN(1, (1,)), FCN(1, (2,), scaled=True), MINUS_ZERO), "scale 1"),
        (lambda: c_tilde_for(FCN(1, (1,)), FCN(1, (2,)), QuantizedUniform((-1.0, 1.0))), "lack 0"),
        (lambda: c_tilde_margin(FCN(4, (2,)), FCN(4, (4,)), Gaussian(1.0), 2.0), "(0, pi/2]"),
        (lambda: epsilon_bound(10.0, 0, 0.05), "positive integer"),
        (lambda: n_required(10.0, 0.0, 0.05), "(0, 1]"),
        (lambda: n_required(10.0, 0.1, 1.0), "delta"),
    ]
    for call, message in cases:
        with pytest.raises(TypicalnetsError, match=re.escape(message)) as info:
            call()
        assert "\n" not in str(info.value) and ";" in str(info.value)


@given(c=st.floats(0, 1e4), n=st.integers(1, 10**7), delta=st.floats(1e-6, 0.5))
def test_epsilon_and_sample_size_are_inverse(c, n, delta):
    epsilon = epsilon_bound(c, n, delta)
    assert epsilon == pytest.approx((c + math.log(1 / delta)) / n)
    if epsilon <= 1:
        assert n_required(c, epsilon, delta) == n
        assert epsilon_bound(c, n_required(c, epsilon, delta), delta) <= epsilon * (1 + 1e-12)


# --------------------------------------------------------------------------------------------
# Exact p~
# --------------------------------------------------------------------------------------------


def test_exact_p_tilde_by_hand():
    # f = w2 relu(w1 x) on x in {-1, +1}; teacher w1 = w2 = 1: f*(-1) = 0 (off the support), f*(1) = 1.
    arch = FCN(1, (1,), bias=False)
    teacher = fixed_teacher(arch, w1=[[1]], w2=[[1]])
    result = exact_p_tilde(teacher, arch)
    assert (result.method, result.count, result.total, result.support) == ("enumeration", 1, 9, 1)
    assert result.p == pytest.approx(1 / 9) and result.ci == (result.p, result.p)
    # Under q0 = 0.5 the one match (w1 = w2 = 1) has probability 0.25^2.
    assert exact_p_tilde(teacher, arch, zero_prob=0.5).p == pytest.approx(0.25**2)
    assert result.at_zero_prob(0.5) == pytest.approx(0.25**2)
    assert result.c_tilde == pytest.approx(math.log(9))


def test_monte_carlo_interval_covers_the_enumeration():
    gen = torch.Generator().manual_seed(11)
    teacher = random_teacher(FCN(2, (1,)), TERNARY, gen)
    student = FCN(2, (2,))
    exact = exact_p_tilde(teacher, student)
    for q0 in (None, 0.6):
        mc = exact_p_tilde(
            teacher,
            student,
            zero_prob=q0,
            max_enumeration=0,
            samples=200_000,
            generator=torch.Generator().manual_seed(3),
            confidence=0.999,
        )
        target = exact.p if q0 is None else exact.at_zero_prob(q0)
        assert mc.method == "monte-carlo" and mc.total == 200_000
        assert mc.ci[0] <= target <= mc.ci[1]


# Tiny pairs (prior, teacher, student): each enumerates at most 3^11 or 2^19 student settings.
PAIRS = {
    "fcn": [
        (TERNARY, FCN(2, (1,)), FCN(2, (2,))),
        (TERNARY, FCN(3, (1,)), FCN(3, (2,))),
        (TERNARY, FCN(2, (2,)), FCN(2, (2,))),
        (TERNARY, FCN(1, (2,)), FCN(1, (3,))),
        (TERNARY, FCN(2, (1,), bias=False), FCN(2, (3,), bias=False)),
        (TERNARY, FCN(2, (2,), activation="sign"), FCN(2, (2,), activation="sign")),
        (QUINARY, FCN(1, (1,)), FCN(1, (2,))),
        (ZERO_ONE, FCN(2, (1, 1)), FCN(2, (2, 1))),
        (MINUS_ZERO, FCN(2, (1, 1)), FCN(2, (2, 2))),
    ],
    "sfcn": [
        (TERNARY, FCN(2, (1,), scaled=True), FCN(2, (2,), scaled=True)),
        (TERNARY, FCN(2, (1,)), FCN(2, (2,), scaled=True)),  # vanilla teacher, scales 1
        (TERNARY, FCN(2, (2,), bias=False, scaled=True), FCN(2, (2,), bias=False, scaled=True)),
        (ZERO_ONE, FCN(2, (2,), scaled=True), FCN(2, (3,), scaled=True)),
        (MINUS_ZERO, FCN(1, (2,), scaled=True), FCN(1, (3,), scaled=True)),
        (MINUS_ZERO, FCN(2, (1, 1), scaled=True), FCN(2, (2, 1), scaled=True)),
    ],
    "cnn": [
        (TERNARY, CNN((1, 3), (1,), 2), CNN((1, 3), (2,), 2)),
        (TERNARY, CNN((1, 2), (2,), 2), CNN((1, 2), (2,), 2)),
        (TERNARY, CNN((1, 4), (1,), 2, pool=2), CNN((1, 4), (2,), 2, pool=2)),
        (TERNARY, CNN((1, 4), (1,), 2, stride=2), CNN((1, 4), (2,), 2, stride=2)),
        (ZERO_ONE, CNN((2, 2), (1,), 2), CNN((2, 2), (2,), 2)),
        (ZERO_ONE, CNN((1, 3), (1, 1), 2), CNN((1, 3), (2, 1), 2)),
        (MINUS_ZERO, CNN((1, 2, 2), (1,), 2), CNN((1, 2, 2), (3,), 2)),
    ],
    "scnn": [
        (TERNARY, CNN((1, 2), (1,), 2, scaled=True), CNN((1, 2), (2,), 2, scaled=True)),
        (TERNARY, CNN((1, 2), (1,), 2), CNN((1, 2), (2,), 2, scaled=True)),  # vanilla teacher, scales 1
        (TERNARY, CNN((1, 2), (2,), 2, scaled=True), CNN((1, 2), (2,), 2, scaled=True)),
        (ZERO_ONE, CNN((1, 3), (1,), 2, scaled=True), CNN((1, 3), (2,), 2, scaled=True)),
        (MINUS_ZERO, CNN((1, 3), (1, 1), 2, scaled=True), CNN((1, 3), (2, 1), 2, scaled=True)),
    ],
}
TEACHERS_PER_PAIR = 5
ZERO_PROBS = (None, 0.15, 0.6, 0.9)


@pytest.mark.parametrize("family", sorted(PAIRS))
def test_exact_p_tilde_is_at_least_exp_minus_bound(family):
    """p~_exact >= exp(-C~) for 5 random teachers per pair (25-45 per family), 4 values of q0, and the
    teacher-specific (placements where proven), worst-case and, where the condition holds, assumed bounds."""
    gen = torch.Generator().manual_seed(sorted(PAIRS).index(family))
    checked = placed = 0
    for prior, teacher_arch, student_arch in PAIRS[family]:
        assert prior.q ** student_arch.num_params() <= 2**19  # enumerated, not sampled
        for _ in range(TEACHERS_PER_PAIR):
            teacher = random_teacher(teacher_arch, prior, gen)
            exact = exact_p_tilde(teacher, student_arch)
            assert exact.method == "enumeration" and exact.count >= 1
            for q0 in ZERO_PROBS:
                p = exact.p if q0 is None else exact.at_zero_prob(q0)
                specific = c_tilde_for(teacher_arch, student_arch, prior, teacher=teacher, zero_prob=q0)
                worst = c_tilde_for(teacher_arch, student_arch, prior, zero_prob=q0)
                bounds = [specific, worst]
                if specific.placement_condition == "holds" and specific.placement_layers:
                    bounds.append(c_tilde_for(teacher_arch, student_arch, prior, zero_prob=q0, placements=True))
                    placed += 1
                for bound in bounds:
                    assert p >= math.exp(-bound.nats) * (1 - ROUNDING), (
                        f"{teacher_arch.describe()} in {student_arch.describe()}, {prior.spec()}, q0={q0}: "
                        f"p~ = {p:.6g} < exp(-{bound.nats:.4f}) ({bound.variant}, {bound.placement_condition}); "
                        f"teacher { ({k: v[0].tolist() for k, v in teacher.params.items()}) }"
                    )
                checked += 1
    assert checked == len(PAIRS[family]) * TEACHERS_PER_PAIR * len(ZERO_PROBS)
    assert placed >= 4  # the placement term was exercised in this family


def test_weighted_enumeration_matches_direct_zero_probability():
    gen = torch.Generator().manual_seed(2)
    teacher = random_teacher(CNN((1, 3), (1,), 2), TERNARY, gen)
    student = CNN((1, 3), (2,), 2)
    exact = exact_p_tilde(teacher, student)
    assert exact.at_zero_prob(1 / 3) == pytest.approx(exact.p) == pytest.approx(exact.count / exact.total)
    assert exact_p_tilde(teacher, student, zero_prob=0.8).p == pytest.approx(exact.at_zero_prob(0.8))
    assert sum(exact.matches_by_zeros) == exact.count


def test_placement_term_needs_its_condition():
    """Two identical hidden sign neurons (same incoming and outgoing weights): swapping them gives the
    same event, the condition fails, and subtracting the placement term anyway would exceed p~."""
    arch = FCN(2, (2,), activation="sign")
    teacher = fixed_teacher(arch, MINUS_ZERO, w1=[[-1, -1], [-1, -1]], b1=[0, 0], w2=[[-1, -1]], b2=[-1])
    exact = exact_p_tilde(teacher, arch, zero_prob=0.1)
    bound = c_tilde_for(arch, arch, MINUS_ZERO, teacher=teacher, zero_prob=0.1)
    assert bound.placement_condition == "fails" and not bound.placements_used
    assert exact.p >= math.exp(-bound.nats)
    assert exact.p < 1.05 * math.exp(-bound.nats)  # this single-placement bound is nearly tight ...
    unproven = bound.nats - math.log(2)  # ... so the 2!/0! placements, not disjoint here, overshoot
    assert exact.p < math.exp(-unproven)


def test_monte_carlo_beyond_the_enumeration_cap_respects_the_bound():
    gen = torch.Generator().manual_seed(4)
    teacher_arch, student_arch = CNN((1, 3), (1,), 2, scaled=True), CNN((1, 3), (2,), 2, scaled=True)
    for _ in range(2):
        teacher = random_teacher(teacher_arch, TERNARY, gen)
        estimate = exact_p_tilde(
            teacher, student_arch, max_enumeration=100_000, samples=150_000, generator=torch.Generator().manual_seed(1)
        )
        assert estimate.method == "monte-carlo" and estimate.total == 150_000
        bound = c_tilde_for(teacher_arch, student_arch, TERNARY, teacher=teacher)
        assert estimate.ci[1] >= math.exp(-bound.nats)


# One pair per family for Guess & Check (q0 = 1/Q: G&C draws uniformly over the levels).
GC_PAIRS = [
    (FCN(2, (1,)), FCN(2, (2,))),
    (FCN(2, (1,), scaled=True), FCN(2, (2,), scaled=True)),
    (CNN((1, 3), (1,), 2), CNN((1, 3), (2,), 2)),
    (CNN((1, 2), (1,), 2, scaled=True), CNN((1, 2), (2,), 2, scaled=True)),
]
GC_DRAWS = 60_000


@pytest.mark.parametrize("pair", range(len(GC_PAIRS)))
def test_guess_and_check_interpolation_probability_is_at_least_p_tilde(pair):
    """P(L_S = 0) measured by G&C on noiseless samples S >= p~_exact.

    Tolerance: the upper end of G&C's 95% Clopper-Pearson interval must reach p~_exact; if the theory
    holds a check fails with probability <= 2.5%, and fixed seeds make it deterministic. The exact
    P(L_S = 0) (enumeration on S) must lie in G&C's 99.9% interval and be >= p~_exact, with equality
    when S is the whole support.
    """
    teacher_arch, student = GC_PAIRS[pair]
    gen = torch.Generator().manual_seed(100 + pair)
    teacher = random_teacher(teacher_arch, TERNARY, gen)
    p_tilde = exact_p_tilde(teacher, student)
    cube = boolean_domain(teacher_arch.input_shape)
    f = teacher.forward(cube)[0]
    support = cube[f != 0][torch.randperm(int((f != 0).sum()), generator=gen)]
    for n in (min(2, len(support)), len(support)):
        x = support[:n]
        train = Dataset(x, torch.sign(teacher.forward(x)[0]).to(torch.int8))
        gc = GuessAndCheck(student, TERNARY, train, engine="baseline")
        result = sample(gc, torch.Generator().manual_seed(pair), GC_DRAWS, max_draws=GC_DRAWS, progress=False)
        assert result.draws == GC_DRAWS
        assert result.acceptance_ci[1] >= p_tilde.p
        exact_on_sample = exact_p_tilde(teacher, student, domain=x).p
        assert exact_on_sample >= p_tilde.p * (1 - ROUNDING)
        if n == len(support):
            assert exact_on_sample == pytest.approx(p_tilde.p)
        low, high = clopper_pearson(result.accepted_total, result.draws, 0.999)
        assert low <= exact_on_sample <= high


# --------------------------------------------------------------------------------------------
# Continuous priors with an angular margin
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [1e-200, 0.01, 0.3, 1.0, math.pi / 2])
def test_spherical_cap_closed_forms(alpha):
    # S^1: the angle is uniform, P = alpha / pi. S^2: Archimedes, P = (1 - cos alpha) / 2 = sin^2(alpha / 2).
    assert log_spherical_cap_probability(alpha, 2) == pytest.approx(math.log(alpha / math.pi), rel=1e-10)
    assert log_spherical_cap_probability(alpha, 3) == pytest.approx(2 * math.log(math.sin(alpha / 2)), rel=1e-10)
    assert spherical_cap_probability(alpha, 1) == 0.5


def test_spherical_cap_matches_gaussian_sampling():
    gen = torch.Generator().manual_seed(0)
    for dim, alpha in [(4, 0.8), (6, 1.0), (10, 1.2), (25, 1.4)]:
        g = torch.randn(400_000, dim, generator=gen, dtype=torch.float64)
        hits = int((g[:, 0] / g.norm(dim=1) > math.cos(alpha)).sum())  # angle to e_1 below alpha
        low, high = clopper_pearson(hits, len(g), 0.999)
        assert low <= spherical_cap_probability(alpha, dim) <= high


def test_small_cap_series_agrees_with_betainc():
    from scipy.special import betainc

    for a, alpha in [(2.5, 1.2), (49.5, 0.1), (10.0, 0.01)]:
        direct = math.log(betainc(a, 0.5, math.sin(alpha) ** 2))
        assert _log_incomplete_beta_series(a, 0.5, alpha) == pytest.approx(direct, rel=1e-10)
    # Far beyond float range the slope in ln(1/alpha) is (m - 1) / 1 per dimension.
    slope = log_spherical_cap_probability(1e-3, 2001) - log_spherical_cap_probability(1e-2, 2001)
    assert slope == pytest.approx(-2000 * math.log(10), rel=1e-3)


def test_margin_bound_properties():
    teacher, student = FCN(4, (2,)), FCN(4, (6,))
    alphas = [1e-4, 1e-3, 0.01, 0.1, 0.5, 1.0, math.pi / 2]
    gaussian = [c_tilde_margin(teacher, student, Gaussian(1.0), a).nats for a in alphas]
    uniform = [c_tilde_margin(teacher, student, Uniform(1.0), a).nats for a in alphas]
    assert all(x > y for x, y in itertools.pairwise(gaussian))  # a wider margin, a smaller C~
    assert all(u >= g for u, g in zip(uniform, gaussian))  # the inscribed-ball correction only adds
    # At alpha = pi/2 each of the 3 teacher units only needs the right half-space: ln 2 each.
    assert gaussian[-1] == pytest.approx(3 * math.log(2))
    # As alpha -> 0, ln(1/alpha) per weight plays ln Q: the slope is sum over units of (m - 1),
    # m = student fan-in + bias: 2 hidden units with m = 5, the readout with m = 7.
    slope = (gaussian[0] - gaussian[1]) / math.log(10)
    assert slope == pytest.approx(2 * 4 + 6, rel=1e-3)
    # Scaled students: teacher-only fan-in, plus silenced extras and scale signs; gaussian-independent of sigma.
    scaled = c_tilde_margin(FCN(4, (2,), scaled=True), FCN(4, (6,), scaled=True), Gaussian(3.0), 0.1)
    assert scaled.counts["silenced_units"] == 4 and scaled.terms["scale_signs"] == pytest.approx(2 * math.log(2))
    assert scaled.terms["silenced_units"] == pytest.approx(-4 * math.log(math.erf(0.1 / math.sqrt(2))))
    assert scaled.variant == "margin" and not scaled.placements_used and scaled.notes
    # c_tilde_for routes continuous priors with a margin here.
    routed = c_tilde_for(teacher, student, Gaussian(1.0), margin=0.1)
    assert routed.nats == pytest.approx(gaussian[3])


def test_level_model_probabilities():
    model = LevelModel.build(5, 0.6, QUINARY.levels)
    assert model.nonzero_prob == pytest.approx(0.1) and model.min_prob == pytest.approx(0.1)
    values = torch.tensor([0.0, 0.5, -1.0, 0.0])
    assert model.neg_log_prob(values) == pytest.approx(-2 * math.log(0.6) - 2 * math.log(0.1))
