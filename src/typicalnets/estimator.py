"""A scikit-learn classifier that votes with typical interpolating networks.

``TypicalInterpolatorClassifier.fit`` draws ``n_networks`` networks from a flat prior over the weights
conditioned on zero training error (Guess & Check, exact; or sequential Monte Carlo, approximate),
or trains them by SGD for comparison, and predicts by their majority vote. References: Chiang et
al., "Loss landscapes are all you need: neural network generalization can be explained without
the implicit bias of gradient descent", ICLR 2023; Buzaglo et al., "How uniform random weights
induce non-uniform bias: typical interpolating neural networks generalize with narrow teachers",
ICML 2024.
"""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, validate_data

from typicalnets.data import Dataset, check_inputs
from typicalnets.engines import ENGINES
from typicalnets.errors import TypicalnetsError, build_model
from typicalnets.methods import MethodSpec, run_method
from typicalnets.nets import ARCH_NAMES, Architecture, Population, build_arch
from typicalnets.nets.base import ACTIVATIONS
from typicalnets.nets.population import DEFAULT_CHUNK
from typicalnets.priors import Prior, parse_prior
from typicalnets.resources import check_device
from typicalnets.samplers.gc import DEFAULT_BATCH
from typicalnets.samplers.sgd import DEFAULT_MAX_STEPS

SAMPLERS = ("gc", "smc", "sgd")
IMAGE_ARCHS = ("cnn", "scnn", "lenet")
ARCH_OPTIONS = ("kernel_size", "stride", "pool", "depth", "width_factor", "head")
DEFAULT_MAX_DRAWS = 10_000_000


class TypicalInterpolatorClassifier(ClassifierMixin, BaseEstimator):
    """Binary classifier: the majority vote of typical interpolating networks.

    ``fit`` draws ``n_networks`` networks of one architecture from a flat prior over the weights,
    conditioned on zero training error (f = 0 counts as a mistake), and ``predict`` takes their
    majority vote. The samplers:

    - ``"gc"``, Guess & Check (Chiang et al., ICLR 2023; Buzaglo et al., ICML 2024): draw from the
      prior, keep the interpolators. Every member is an exact draw, but the expected number of draws
      is 1 / P(L_S = 0), which grows exponentially with the training set: use it for tens of examples.
    - ``"smc"``, sequential Monte Carlo over the training examples: approximate draws (the first
      ``n_networks`` of ``particles`` final particles, which may repeat) that reach further than G&C.
    - ``"sgd"``: networks initialised by ``sgd_init`` and trained by SGD, each stopped at its first
      interpolator; the baseline that typical interpolators are compared with.

    Parameters
    ----------
    arch : {"fcn", "sfcn", "diag", "cnn", "scnn", "lenet"}, default="fcn"
        Architecture; ``sfcn``/``scnn`` have one scale per hidden neuron (channel). Rows of X are
        the inputs of ``fcn``, ``sfcn`` and ``diag``; ``cnn``, ``scnn`` and ``lenet`` need
        ``input_shape``.
    widths : int or tuple of int, default=(16,)
        Hidden widths (fcn, sfcn) or channels per conv layer (cnn, scnn).
    activation : {"relu", "leaky-relu", "tanh", "sign"}, default="relu"
    bias : bool, default=True
        Biases in every layer.
    input_shape : tuple of int, default=None
        Shape that each row of X is reshaped to, e.g. ``(1, 8, 8)`` for 8x8 images (C order, as
        ``images.reshape(n, -1)`` flattens them); its product must be the number of features.
    arch_options : dict, default=None
        Further keyword arguments of ``typicalnets.nets.build_arch``: ``kernel_size``, ``stride``
        and ``pool`` (cnn, scnn), ``depth`` (diag), ``width_factor`` and ``head`` (lenet).
    prior : str or Prior, default="quantized:3"
        ``quantized:Q``, ``quantized:L1,L2,...``, ``uniform:A`` or ``gaussian:SIGMA``.
    sampler : {"gc", "smc", "sgd"}, default="gc"
    n_networks : int, default=1
        Ensemble size.
    max_draws : int or None, default=10_000_000
        Budget of gc (networks drawn) and smc (network evaluations); None for no limit. The default
        is finite so that an unreachable G&C target ends with an error instead of running forever.
    time_limit : float or None, default=None
        Budget in seconds (gc, smc, sgd). A run stopped by time is not reproducible.
    engine : {"fast", "native", "torch", "baseline"}, default="fast"
        G&C engine; all accept exactly the same networks.
    batch_size : int, default=16384
        G&C networks drawn per step.
    particles : int or None, default=None
        SMC particles; at least ``n_networks``. None sizes them from ``n_networks`` as
        ``typicalnets sample`` does (``methods.MethodSpec.smc_layout``: at least 100). The estimator
        runs SMC once: it needs networks, not an interval for ln P(L_S = 0).
    sgd_init : {"prior", "standard"}, default="prior"
    sgd_loss : {"logistic", "hinge"}, default="logistic"
    sgd_lr : float or None, default=None
        SGD learning rate; None scales it to the init (``typicalnets.samplers.sgd.init_scaled_lr``).
    sgd_batch_size : int or None, default=None
        SGD mini-batch size; None for full batch.
    sgd_max_steps : int, default=10000
    device : str, default="cpu"
        ``"cpu"`` or ``"cuda"``; the fitted networks stay there.
    verbose : bool, default=False
        Show the sampler's progress bar.
    random_state : int, RandomState instance or None, default=None
        Seeds the torch generator of each fit. Fits with the same int are identical (unless
        stopped by ``time_limit``).

    Attributes
    ----------
    classes_ : ndarray of shape (2,)
        The two labels, sorted; ``classes_[1]`` is the positive class (label +1 of the networks).
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Defined only when X has string column names.
    arch_ : Architecture
    prior_ : Prior
    population_ : Population
        The fitted networks (the ensemble), on ``device``.
    interpolates_ : ndarray of bool, shape (len(population_),)
        Whether each member has zero training error: always for gc and smc, for sgd the networks
        that converged.
    sampling_result_ : SampleResult
        How the sampler ran: draws, acceptance rate and ln P(L_S = 0) (gc, smc), steps and converged
        networks (sgd).

    Notes
    -----
    Votes and ties: each member votes sign(f(x)); a member with f(x) = 0 exactly abstains, i.e. gives
    half a vote to each class. ``decision_function`` is the mean vote in [-1, 1], ``predict_proba``
    the vote shares ((1 - mean) / 2, (1 + mean) / 2), and ``predict`` returns ``classes_[1]`` iff the
    mean vote is > 0. A tie goes to ``classes_[0]``, scikit-learn's rule for binary decision
    functions, which keeps ``predict`` equal to the argmax of ``predict_proba``.

    Budgets: when gc stops before ``n_networks`` interpolators, the ensemble keeps the ones it
    found and a ``ConvergenceWarning`` says so; with none found (or an smc run that did not reach the
    last example) ``fit`` raises ``RuntimeError`` naming the fixes. SGD networks that do not reach
    zero training error in ``sgd_max_steps`` (or ``time_limit``) are not interpolators; they stay in the ensemble
    (``interpolates_`` marks them) and a ``ConvergenceWarning`` counts them.

    Multi-class y raises ``ValueError``: one-vs-rest ensembles would not be typical interpolators of
    the multi-class problem. Wrap the classifier in ``sklearn.multiclass.OneVsRestClassifier`` to
    use it anyway.

    scikit-learn's estimator checks: the sgd configuration passes every check that applies to a
    binary classifier. With gc or smc, the checks that fit the checks' own data (10-300 examples
    with random labels or overlapping blobs) fail with ``RuntimeError``: networks of the prior that
    interpolate such data are too rare for G&C's budget, and SMC's particles die out. The other
    checks pass; tests/test_estimator.py lists every expected failure with its reason.
    """

    # Types and ranges, checked by scikit-learn at the start of fit (InvalidParameterError, a
    # ValueError); fit checks what they cannot say: the widths' and input shape's entries, the
    # arch_options keys, the prior's spec and the device.
    _parameter_constraints: dict = {
        "arch": [StrOptions(set(ARCH_NAMES))],
        "widths": [Interval(numbers.Integral, 1, None, closed="left"), tuple, list],
        "activation": [StrOptions(set(ACTIVATIONS))],
        "bias": ["boolean"],
        "input_shape": [None, Interval(numbers.Integral, 1, None, closed="left"), tuple, list],
        "arch_options": [None, dict],
        "prior": [str, Prior],
        "sampler": [StrOptions(set(SAMPLERS))],
        "n_networks": [Interval(numbers.Integral, 1, None, closed="left")],
        "max_draws": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "time_limit": [Interval(numbers.Real, 0, None, closed="neither"), None],
        "engine": [StrOptions(set(ENGINES))],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "particles": [Interval(numbers.Integral, 2, None, closed="left"), None],
        "sgd_init": [StrOptions({"prior", "standard"})],
        "sgd_loss": [StrOptions({"logistic", "hinge"})],
        "sgd_lr": [Interval(numbers.Real, 0, None, closed="neither"), None],
        "sgd_batch_size": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "sgd_max_steps": [Interval(numbers.Integral, 1, None, closed="left")],
        "device": [str],
        "verbose": ["boolean"],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        arch="fcn",
        widths=(16,),
        activation="relu",
        bias=True,
        input_shape=None,
        arch_options=None,
        prior="quantized:3",
        sampler="gc",
        n_networks=1,
        max_draws=DEFAULT_MAX_DRAWS,
        time_limit=None,
        engine="fast",
        batch_size=DEFAULT_BATCH,
        particles=None,
        sgd_init="prior",
        sgd_loss="logistic",
        sgd_lr=None,
        sgd_batch_size=None,
        sgd_max_steps=DEFAULT_MAX_STEPS,
        device="cpu",
        verbose=False,
        random_state=None,
    ):
        self.arch = arch
        self.widths = widths
        self.activation = activation
        self.bias = bias
        self.input_shape = input_shape
        self.arch_options = arch_options
        self.prior = prior
        self.sampler = sampler
        self.n_networks = n_networks
        self.max_draws = max_draws
        self.time_limit = time_limit
        self.engine = engine
        self.batch_size = batch_size
        self.particles = particles
        self.sgd_init = sgd_init
        self.sgd_loss = sgd_loss
        self.sgd_lr = sgd_lr
        self.sgd_batch_size = sgd_batch_size
        self.sgd_max_steps = sgd_max_steps
        self.device = device
        self.verbose = verbose
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags

    def fit(self, X, y):
        """Sample the ensemble: ``n_networks`` networks with zero training error on (X, y)."""
        self._validate_params()
        X, y = validate_data(self, X, y)
        check_classification_targets(y)
        target_type = type_of_target(y, input_name="y")
        classes = np.unique(y)
        if target_type != "binary":
            raise ValueError(
                f"Only binary classification is supported. The type of the target is {target_type} "
                f"({len(classes)} classes); wrap the classifier in sklearn.multiclass.OneVsRestClassifier "
                "for multi-class data"
            )
        if len(classes) < 2:
            raise ValueError(f"y has only one class ({classes[0]!r}); a classifier needs examples of two classes")
        count, sampler, time_limit = int(self.n_networks), self.sampler, self.time_limit
        max_draws = None if self.max_draws is None else int(self.max_draws)
        device = torch.device(check_device(self.device))
        train = Dataset.from_arrays(self._inputs(X), np.where(y == classes[1], 1, -1), source="X, y")
        arch = self._build_arch(train.input_shape)
        prior = self.prior if isinstance(self.prior, Prior) else parse_prior(self.prior)
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        rng = torch.Generator(device=device).manual_seed(seed)
        spec = self._method_spec(device)
        if sampler == "sgd":
            result = run_method(spec, arch, prior, train, rng, count, time_limit=time_limit, progress=self.verbose).raw
            interpolates = result.converged.cpu().numpy()
            if not interpolates.all():
                warnings.warn(
                    f"{count - int(interpolates.sum())} of {count} SGD networks did not reach zero training error in "
                    f"{result.step_count} steps ({result.stop_reason.replace('_', ' ')} reached); they stay in the "
                    "ensemble (see interpolates_). Raise sgd_max_steps or time_limit, or widen the network",
                    ConvergenceWarning,
                    stacklevel=2,
                )
        else:
            result = self._sample(spec, arch, prior, train, count, max_draws, time_limit, rng)
            interpolates = np.ones(result.count, dtype=bool)
        # Fitted attributes are set only now, so a fit that fails leaves no mix of old and new ones.
        self.classes_, self.arch_, self.prior_ = classes, arch, prior
        # A clone owns just its members' storage, not the sampler's whole batch of particles or draws.
        self.population_ = Population(arch, prior, {name: p.clone() for name, p in result.population.params.items()})
        self.interpolates_ = interpolates
        self.sampling_result_ = result
        return self

    def decision_function(self, X):
        """Mean vote of the networks in [-1, 1]; > 0 predicts ``classes_[1]``."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False)
        x = torch.from_numpy(self._inputs(X))
        votes = torch.cat(
            [
                self.population_.predict(x[start : start + DEFAULT_CHUNK]).sum(0, dtype=torch.float64)
                for start in range(0, len(x), DEFAULT_CHUNK)
            ]
        )
        return (votes / len(self.population_)).cpu().numpy()

    def predict_proba(self, X):
        """Vote shares of ``classes_[0]`` and ``classes_[1]`` (an abstaining network counts half to each)."""
        positive = (1.0 + self.decision_function(X)) / 2.0
        return np.column_stack([1.0 - positive, positive])

    def predict(self, X):
        """Majority vote; a tie goes to ``classes_[0]``."""
        positive = self.decision_function(X) > 0
        return self.classes_[positive.astype(int)]

    def _inputs(self, X) -> np.ndarray:
        """Rows of X as float32 network inputs (a copy, so read-only arrays are safe for torch)."""
        check_inputs(X, len(X), "X", may_be_empty=True)  # before the cast, which would turn 1e39 into inf
        if self.input_shape is None:
            return X.astype(np.float32)
        shape = self._input_shape()
        if math.prod(shape) != X.shape[1]:
            raise TypicalnetsError(
                f"input_shape {shape} holds {math.prod(shape)} values but X has {X.shape[1]} features per row; "
                "give a shape whose product is the number of features"
            )
        return X.astype(np.float32).reshape(len(X), *shape)

    def _input_shape(self) -> tuple[int, ...]:
        shape = self.input_shape
        if isinstance(shape, numbers.Integral) and not isinstance(shape, bool):
            shape = (shape,)
        if (
            not isinstance(shape, (tuple, list))
            or not shape
            or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in shape)
        ):
            raise TypicalnetsError(
                f"input_shape must be None or a tuple of positive integers like (1, 8, 8), "
                f"got {self.input_shape!r}; pass e.g. input_shape=(1, 8, 8)"
            )
        return tuple(int(v) for v in shape)

    def _build_arch(self, input_shape: tuple[int, ...]) -> Architecture:
        if self.arch in IMAGE_ARCHS and self.input_shape is None:
            raise TypicalnetsError(
                f"arch={self.arch!r} needs input_shape, e.g. input_shape=(1, 8, 8), to reshape "
                "each row of X into an image; set input_shape"
            )
        widths = (self.widths,) if isinstance(self.widths, numbers.Integral) else self.widths
        if not isinstance(widths, (tuple, list)) or not all(
            isinstance(w, numbers.Integral) and not isinstance(w, bool) and w >= 1 for w in widths
        ):
            raise TypicalnetsError(
                f"widths must be a positive integer or a tuple of them like (16,) or (8, 8), "
                f"got {self.widths!r}; pass e.g. widths=(16,)"
            )
        options = {} if self.arch_options is None else self.arch_options
        if not isinstance(options, dict) or set(options) - set(ARCH_OPTIONS):
            raise TypicalnetsError(
                f"arch_options must be None or a dict with keys among {', '.join(ARCH_OPTIONS)}; "
                f"got {self.arch_options!r}"
            )
        return build_arch(
            self.arch,
            input_shape,
            tuple(int(w) for w in widths),
            self.activation,
            bool(self.bias),
            **options,
        )

    def _method_spec(self, device: torch.device) -> MethodSpec:
        """The hyperparameters as ``run_method`` takes them (SMC: one run, no interval needed)."""
        return build_model(
            MethodSpec,
            {
                "sampler": self.sampler,
                "device": str(device),
                "engine": self.engine,
                "batch_size": int(self.batch_size),
                "particles": None if self.particles is None else int(self.particles),
                "repeats": 1,
                "sgd_init": self.sgd_init,
                "sgd_loss": self.sgd_loss,
                "sgd_lr": self.sgd_lr,
                "sgd_batch_size": None if self.sgd_batch_size is None else int(self.sgd_batch_size),
                "sgd_max_steps": int(self.sgd_max_steps),
            },
        )

    def _sample(
        self,
        spec: MethodSpec,
        arch: Architecture,
        prior: Prior,
        train: Dataset,
        count: int,
        max_draws: int | None,
        time_limit: float | None,
        rng: torch.Generator,
    ):
        budget = "raise max_draws or time_limit (None for no limit)"
        if self.sampler == "gc":
            result = run_method(spec, arch, prior, train, rng, count, max_draws, time_limit, self.verbose).raw
            stopped = f"in {result.draws:,} draws ({result.stop_reason.replace('_', ' ')} reached)"
            if result.count == 0:
                raise RuntimeError(
                    f"Guess & Check found no interpolator of the {train.n} training examples {stopped}; {budget}, "
                    "use fewer examples, or use sampler='smc' or 'sgd'"
                )
            if result.count < count:
                warnings.warn(
                    f"Guess & Check found {result.count} of the {count} interpolators asked for {stopped}; the "
                    f"ensemble keeps those {result.count}. To get all {count}, {budget} or use sampler='smc'",
                    ConvergenceWarning,
                    stacklevel=3,
                )
            return result
        particles, _ = spec.smc_layout(count)
        if count > particles:
            raise TypicalnetsError(
                f"n_networks={count} exceeds particles={particles}; SMC returns at most one "
                "network per particle, so raise particles"
            )
        result = run_method(spec, arch, prior, train, rng, count, max_draws, time_limit, self.verbose).raw
        if result.stop_reason == "degenerate":
            raise RuntimeError(
                f"SMC lost every particle on the {train.n} training examples; raise particles, "
                "widen the network or use sampler='sgd'"
            )
        if result.stop_reason != "count":
            raise RuntimeError(
                f"SMC stopped when {result.stop_reason.replace('_', ' ')} was reached, before the "
                f"last training example ({result.draws:,} network evaluations); {budget}"
            )
        return result
