"""TypicalInterpolatorClassifier: scikit-learn's estimator checks, votes, budgets and the interpolation invariant."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import cross_val_score
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import estimator_checks
from sklearn.utils.estimator_checks import parametrize_with_checks

from typicalnets.estimator import TypicalInterpolatorClassifier
from typicalnets.nets import Population

# The checks fit 10-300 examples with random labels or overlapping blobs; quantized:3 networks of
# width 8 that interpolate them are rare. The checks below need such a fit and fail with the
# RuntimeError that an exhausted budget raises; the sgd configuration passes every check.
NEEDS_A_HARD_FIT = (
    "check_fit_score_takes_y",
    "check_n_features_in_after_fitting",
    "check_estimators_dtypes",
    "check_dtype_object",
    "check_classifiers_train",
    "check_supervised_y_2d",
    "check_decision_proba_consistency",
    "check_fit_idempotent",
    "check_fit_check_is_fitted",
    "check_n_features_in",
)
EXPECTED_FAILURES = {
    "sgd": {},
    "gc": dict.fromkeys(
        NEEDS_A_HARD_FIT + ("check_estimators_nan_inf",),
        "G&C accepts none of 65,536 draws on the check's random or overlapping examples",
    ),
    "smc": dict.fromkeys(NEEDS_A_HARD_FIT, "all 256 SMC particles die on the check's random or overlapping examples"),
}
# Seeded: with random_state=None each fit draws a fresh seed, and whether SMC interpolates a check's
# data (a strict expected failure) would then change from run to run.
CHECKED = [
    TypicalInterpolatorClassifier(sampler="sgd", widths=(8,), sgd_max_steps=100, random_state=0),
    TypicalInterpolatorClassifier(sampler="gc", widths=(8,), max_draws=65_536, random_state=0),
    TypicalInterpolatorClassifier(sampler="smc", widths=(8,), particles=256, random_state=0),
]


def expected_failed_checks(estimator) -> dict[str, str]:
    return EXPECTED_FAILURES[estimator.sampler]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # sgd on the checks' random labels
@parametrize_with_checks(CHECKED, expected_failed_checks=expected_failed_checks, xfail_strict=True)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.mark.parametrize(
    "estimator, name",
    [
        pytest.param(estimator, name, id=f"{estimator.sampler}-{name}")
        for estimator in CHECKED
        for name in EXPECTED_FAILURES[estimator.sampler]
    ],
)
def test_expected_check_failures_are_exhausted_budgets(estimator, name):
    """Each expected failure fails for the reason given: the sampler found no interpolator."""
    with pytest.raises(RuntimeError, match="found no interpolator|lost every particle"):
        getattr(estimator_checks, name)(type(estimator).__name__, clone(estimator))


def linear_task(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """2-D Gaussian inputs labelled "yes" iff x1 + x2 > 0, a halfspace that a quantized:3 network
    computes exactly (w = (1, 1), b = 0); the first two inputs lie on either side."""
    X = np.random.RandomState(seed).normal(size=(n, 2))
    X[0], X[1] = np.abs(X[0]), -np.abs(X[1])
    return X, np.where(X.sum(axis=1) > 0, "yes", "no")


def training_mistakes(classifier: TypicalInterpolatorClassifier, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mistakes of every fitted network on (X, y), f = 0 counted as a mistake."""
    signs = torch.from_numpy(np.where(y == classifier.classes_[1], 1, -1))
    return classifier.population_.mistakes(torch.from_numpy(X.astype(np.float32)), signs).numpy()


@given(
    seed=st.integers(0, 10_000),
    n=st.integers(2, 12),
    n_networks=st.integers(1, 4),
    sampler=st.sampled_from(["gc", "smc"]),
    prior=st.sampled_from(["quantized:3", "uniform:1", "gaussian:1"]),
)
def test_every_gc_and_smc_member_interpolates(seed, n, n_networks, sampler, prior):
    X, y = linear_task(n, seed)
    classifier = TypicalInterpolatorClassifier(
        widths=(4,), prior=prior, sampler=sampler, n_networks=n_networks, particles=100, random_state=seed
    ).fit(X, y)
    assert len(classifier.population_) == n_networks
    assert (training_mistakes(classifier, X, y) == 0).all()
    assert classifier.interpolates_.all()
    assert classifier.score(X, y) == 1.0


def test_pipeline_and_cross_val_score_with_guess_and_check():
    X, y = linear_task(36, seed=3)
    pipeline = make_pipeline(StandardScaler(), TypicalInterpolatorClassifier(widths=(4,), n_networks=5, random_state=0))
    scores = cross_val_score(pipeline, X, y, cv=3, error_score="raise")
    assert scores.mean() > 0.7  # 24 examples of a halfspace: typical interpolators generalize
    assert pipeline.fit(X, y).score(X, y) == 1.0


@pytest.mark.parametrize("sampler", ["gc", "smc", "sgd"])
def test_same_random_state_gives_the_same_networks(sampler):
    X, y = linear_task(10, seed=2)

    def fit(state):
        return TypicalInterpolatorClassifier(
            widths=(4,), sampler=sampler, n_networks=3, particles=50, sgd_max_steps=2000, random_state=state
        ).fit(X, y)

    first, again, from_instance, other = fit(0), fit(0), fit(np.random.RandomState(0)), fit(1)
    for name, value in first.population_.params.items():
        assert torch.equal(value, again.population_.params[name])
        assert torch.equal(value, from_instance.population_.params[name])
    assert any(
        not torch.equal(value, other.population_.params[name]) for name, value in first.population_.params.items()
    )


def test_predict_proba_is_the_vote_share():
    X, y = linear_task(8, seed=3)
    classifier = TypicalInterpolatorClassifier(widths=(4,), n_networks=9, random_state=0).fit(X, y)
    X_test = np.random.RandomState(4).normal(size=(200, 2))
    votes = classifier.population_.predict(torch.from_numpy(X_test.astype(np.float32))).numpy()  # (9, 200)
    proba = classifier.predict_proba(X_test)
    assert proba.shape == (200, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_allclose(proba[:, 1], ((votes == 1).sum(0) + 0.5 * (votes == 0).sum(0)) / 9)
    np.testing.assert_allclose(classifier.decision_function(X_test), votes.mean(0))
    assert (classifier.predict(X_test) == classifier.classes_[proba.argmax(axis=1)]).all()


def test_majority_vote_on_constructed_networks():
    """Three networks f = w2 relu(w1 x + b1) + b2 with known votes, abstentions (f = 0) and ties."""
    X = np.array([[-2.0], [0.5], [2.0], [1.0]])
    classifier = TypicalInterpolatorClassifier(widths=(1,), random_state=0).fit(X, np.array([0, 1, 1, 1]))
    # relu(x) - 1, relu(-x) - 1 and relu(x): votes at x = -2, 0.5, 2, 1 are
    # (-1, +1, 0), (-1, -1, +1), (+1, -1, +1), (0, -1, +1); a 0 is an abstention.
    params = {
        "w1": torch.tensor([[[1.0]], [[-1.0]], [[1.0]]]),
        "b1": torch.zeros(3, 1),
        "w2": torch.ones(3, 1, 1),
        "b2": torch.tensor([[-1.0], [-1.0], [0.0]]),
    }
    classifier.population_ = Population(classifier.arch_, classifier.prior_, params)
    np.testing.assert_allclose(classifier.decision_function(X), [0.0, -1 / 3, 1 / 3, 0.0])
    np.testing.assert_allclose(classifier.predict_proba(X), [[0.5, 0.5], [2 / 3, 1 / 3], [1 / 3, 2 / 3], [0.5, 0.5]])
    assert classifier.predict(X).tolist() == [0, 0, 1, 0]  # ties go to classes_[0]


def test_multiclass_y_is_refused_but_one_vs_rest_works():
    rs = np.random.RandomState(0)
    X, y = rs.normal(size=(30, 2)), np.arange(30) % 3
    with pytest.raises(ValueError, match="Only binary classification is supported.*OneVsRestClassifier"):
        TypicalInterpolatorClassifier().fit(X, y)
    X = np.repeat(np.eye(3) * 3, 4, axis=0) + 0.1 * rs.normal(size=(12, 3))
    y = np.repeat(["a", "b", "c"], 4)
    one_vs_rest = OneVsRestClassifier(TypicalInterpolatorClassifier(widths=(4,), random_state=0)).fit(X, y)
    assert one_vs_rest.score(X, y) == 1.0


def test_one_class_is_refused():
    with pytest.raises(ValueError, match="only one class"):
        TypicalInterpolatorClassifier().fit(np.ones((4, 2)), np.zeros(4))


X_SMALL, Y_SMALL = linear_task(6, seed=5)


@pytest.mark.parametrize(
    "params, message",
    [
        (
            {"sampler": "mcmc"},
            r"The 'sampler' parameter of TypicalInterpolatorClassifier must be .* Got 'mcmc' instead",
        ),
        ({"n_networks": 0}, r"The 'n_networks' parameter of TypicalInterpolatorClassifier must be .* Got 0 instead"),
        (
            {"n_networks": 2.5},
            r"The 'n_networks' parameter of TypicalInterpolatorClassifier must be .* Got 2.5 instead",
        ),
        ({"max_draws": 0}, r"The 'max_draws' parameter of TypicalInterpolatorClassifier must be .* Got 0 instead"),
        (
            {"time_limit": -1.0},
            r"The 'time_limit' parameter of TypicalInterpolatorClassifier must be .* Got -1.0 instead",
        ),
        ({"widths": (0,)}, r"widths must be a positive integer or a tuple"),
        ({"widths": "16"}, r"The 'widths' parameter of TypicalInterpolatorClassifier must be .* Got '16' instead"),
        ({"arch": "rnn"}, r"The 'arch' parameter of TypicalInterpolatorClassifier must be .* Got 'rnn' instead"),
        (
            {"activation": "gelu"},
            r"The 'activation' parameter of TypicalInterpolatorClassifier must be .* Got 'gelu' instead",
        ),
        ({"prior": "laplace:1"}, "unknown prior 'laplace:1'"),
        ({"prior": 3}, r"The 'prior' parameter of TypicalInterpolatorClassifier must be .* Got 3 instead"),
        ({"engine": "warp"}, r"The 'engine' parameter of TypicalInterpolatorClassifier must be .* Got 'warp' instead"),
        ({"batch_size": 0}, r"The 'batch_size' parameter of TypicalInterpolatorClassifier must be .* Got 0 instead"),
        ({"sampler": "smc", "n_networks": 20, "particles": 10}, "n_networks=20 exceeds particles=10"),
        (
            {"sampler": "smc", "particles": 1},
            r"The 'particles' parameter of TypicalInterpolatorClassifier must be .* Got 1 instead",
        ),
        (
            {"sampler": "sgd", "sgd_lr": 0.0},
            r"The 'sgd_lr' parameter of TypicalInterpolatorClassifier must be .* Got 0.0 instead",
        ),
        (
            {"sampler": "sgd", "sgd_init": "zeros"},
            r"The 'sgd_init' parameter of TypicalInterpolatorClassifier must be .* Got 'zeros' instead",
        ),
        (
            {"sampler": "sgd", "sgd_max_steps": 0},
            r"The 'sgd_max_steps' parameter of TypicalInterpolatorClassifier must be .* Got 0 instead",
        ),
        ({"arch": "cnn"}, r"arch='cnn' needs input_shape"),
        ({"input_shape": (1, 3, 3)}, r"input_shape \(1, 3, 3\) holds 9 values but X has 2 features"),
        ({"input_shape": (2, -1)}, "input_shape must be None or a tuple of positive integers"),
        ({"arch_options": {"kernel": 3}}, "arch_options must be None or a dict with keys among kernel_size"),
        ({"device": "tpu"}, "device 'tpu' is not a device; use cpu or cuda"),
    ],
)
def test_bad_hyperparameters_fail_in_fit_with_a_clear_message(params, message):
    classifier = TypicalInterpolatorClassifier(**params)  # __init__ only stores them
    with pytest.raises(ValueError, match=message):
        classifier.fit(X_SMALL, Y_SMALL)


def test_guess_and_check_keeps_a_partial_ensemble_with_a_warning():
    X, y = linear_task(3, seed=6)
    classifier = TypicalInterpolatorClassifier(widths=(4,), n_networks=100_000, max_draws=16_384, random_state=0)
    with pytest.warns(ConvergenceWarning, match=r"found \d+ of the 100000 interpolators .* in 16,384 draws"):
        classifier.fit(X, y)
    assert 0 < len(classifier.population_) < 100_000
    assert classifier.sampling_result_.stop_reason == "max_draws"
    assert (training_mistakes(classifier, X, y) == 0).all()


GC_FOUND_NONE = (
    r"found no interpolator of the 2 training examples in 1,000 draws \(max draws reached\); "
    "raise max_draws"
)


@pytest.mark.parametrize("sampler, message", [("gc", GC_FOUND_NONE), ("smc", "SMC lost every particle")])
def test_no_interpolator_raises(sampler, message):
    X, y = np.zeros((2, 2)), np.array([0, 1])  # one input with both labels: nothing interpolates
    with pytest.raises(RuntimeError, match=message):
        TypicalInterpolatorClassifier(sampler=sampler, max_draws=1000, particles=20, random_state=0).fit(X, y)


def test_sgd_networks_that_do_not_interpolate_stay_with_a_warning():
    X, y = np.zeros((2, 2)), np.array([0, 1])
    classifier = TypicalInterpolatorClassifier(sampler="sgd", n_networks=3, sgd_max_steps=5, random_state=0)
    with pytest.warns(ConvergenceWarning, match="3 of 3 SGD networks did not reach zero training error"):
        classifier.fit(X, y)
    assert len(classifier.population_) == 3 and not classifier.interpolates_.any()
    assert classifier.predict(X).shape == (2,)


def test_images_through_input_shape():
    rs = np.random.RandomState(7)
    images = rs.normal(size=(6, 1, 4, 4))
    y = np.where(images[:, 0, :2].sum(axis=(1, 2)) > images[:, 0, 2:].sum(axis=(1, 2)), 1, 0)
    classifier = TypicalInterpolatorClassifier(
        arch="cnn",
        widths=(2,),
        input_shape=(1, 4, 4),
        sampler="sgd",
        arch_options={"kernel_size": 3},
        sgd_max_steps=2000,
        random_state=0,
    ).fit(images.reshape(6, -1), y)
    assert classifier.arch_.input_shape == (1, 4, 4)
    assert classifier.interpolates_.all() and classifier.score(images.reshape(6, -1), y) == 1.0


def test_feature_names_and_pickling():
    X, y = linear_task(8, seed=8)
    frame = pd.DataFrame(X, columns=["height", "weight"])
    classifier = TypicalInterpolatorClassifier(widths=(4,), n_networks=3, random_state=0).fit(frame, y)
    assert classifier.feature_names_in_.tolist() == ["height", "weight"]
    with pytest.raises(ValueError, match="feature names should match"):
        classifier.predict(frame.rename(columns={"weight": "mass"}))
    restored = pickle.loads(pickle.dumps(classifier))
    np.testing.assert_array_equal(restored.decision_function(frame), classifier.decision_function(frame))


def test_every_hyperparameter_has_a_constraint():
    """scikit-learn validates exactly the parameters of __init__ (``_parameter_constraints``)."""
    assert set(TypicalInterpolatorClassifier._parameter_constraints) == set(
        TypicalInterpolatorClassifier().get_params()
    )
