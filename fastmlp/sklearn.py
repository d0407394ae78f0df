"""scikit-learn drop-ins: :class:`MLPClassifier` and :class:`MLPRegressor`.

Same constructor parameters, defaults, fitted attributes and methods as
``sklearn.neural_network.MLPClassifier`` / ``MLPRegressor``; the training runs on fastmlp's
compiled kernels (:class:`fastmlp.Network`, ``backend="numba"``). Importing this module imports
scikit-learn (1.6 or newer); ``import fastmlp`` alone never does. ::

    from fastmlp.sklearn import MLPClassifier      # instead of sklearn.neural_network
    clf = MLPClassifier(hidden_layer_sizes=(100,), random_state=0).fit(X, y)

How it maps onto scikit-learn, and where it differs:

* **dtype**: as scikit-learn, the network computes in float32 when ``X`` is float32 and in
  float64 otherwise (ints, float64, lists...). Pass float32 data for the fastest fit. The
  float64 kernels are a second compiled specialization: the first float64 fit on a machine
  compiles them (about 100 s, once; numba caches them), which is logged once per process
  (logger ``fastmlp.sklearn``, level INFO).
* **activation** is read at every forward pass, as scikit-learn does: after
  ``set_params(activation="tanh")`` a fitted model predicts (and trains on) its weights
  through tanh.
* **threads**: fit and predict use no more threads than threadpoolctl reports for the
  process's BLAS and OpenMP pools, so a search in joblib or dask workers (dask sets
  ``OMP_NUM_THREADS=1`` but not ``NUMBA_NUM_THREADS``) or under
  ``threadpoolctl.threadpool_limits(n)`` does not oversubscribe the cores; the thread count
  is restored afterwards.
* **solvers**: ``"adam"`` and ``"sgd"`` (momentum and Nesterov, ``learning_rate`` schedules
  ``constant``, ``invscaling``, ``adaptive``) follow scikit-learn's update rules step for
  step. ``"lbfgs"`` runs ``scipy.optimize.minimize(method="L-BFGS-B")`` on the network's
  full-batch loss and gradient, with scikit-learn's objective, ``max_iter``, ``max_fun``,
  ``tol`` and warnings (scipy is needed: ``pip install "fastmlp[sklearn]"``). Beyond
  scikit-learn, ``loss_curve_`` is also kept for lbfgs (the loss after each iteration).
* **alpha**: scikit-learn adds ``alpha / (2 * sw_sum) * sum ||W||^2`` to each batch's mean
  loss, ``sw_sum`` being the batch's size (or its weight sum with ``sample_weight``), the short
  last batch included; the network gets exactly that (``l2=alpha`` with
  ``_l2_per_weight=True``). Without shuffling the weights after each epoch equal
  scikit-learn's to rounding (tests/test_sklearn.py); ``loss_`` differs only in that its
  alpha term uses the weights at the end of the epoch rather than at each batch.
* **regression**: squared error with an identity output, or ``loss="poisson"`` (half Poisson
  deviance with an exp output, fastmlp's fused ``poisson`` cost; negative targets are
  refused with a ValueError, as scikit-learn's ``PoissonRegressor`` refuses them, where
  scikit-learn's ``MLPRegressor`` reports a ``nan`` loss). For squared error
  scikit-learn's gradient is that of ``sum_outputs (y - y_hat)^2 / (2 n)`` while fastmlp's MSE
  averages over outputs too, so its gradient is ``2 / n_outputs`` times scikit-learn's. The
  wrapper rescales the learning rate (sgd), epsilon (adam) and l2 so that the updates are
  scikit-learn's exactly. ``loss_`` is scikit-learn's (half the mean squared error, plus the
  alpha term).
* **binary and multi-label classification**: logistic outputs trained on scikit-learn's
  binary log-loss (fastmlp's ``binary_cross_entropy`` cost, fused with the sigmoid as in
  scikit-learn), so ``coefs_[-1]`` has scikit-learn's shape ``(n_hidden, n_outputs)`` and
  the updates are scikit-learn's.
* **sample_weight** (``fit`` and ``partial_fit``, scikit-learn's argument order): each batch's
  cost is the weighted mean ``sum w_i C_i / sum_batch w``, as scikit-learn's; early stopping
  splits the weights with the data and scores the validation set with them. Negative weights
  are refused (scikit-learn accepts them, but they make the loss unbounded below). ``loss_``
  is then the epoch's weighted mean cost (scikit-learn's averages the batches' weighted means).
* **early stopping** splits off ``validation_fraction`` with ``train_test_split`` exactly as
  scikit-learn does (stratified for binary targets), scores each epoch, and restores the best
  weights. A run that diverges records what scikit-learn records (``nan`` validation scores
  and losses) until ``max_iter`` and keeps the best weights. Initialization is
  scikit-learn's (Glorot-uniform weights *and* biases), drawn from the same ``random_state``
  stream; shuffling uses fastmlp's own generator, seeded from it.
* **sparse** ``X`` of any scipy sparse format goes to the network as CSR, never densified
  (``lbfgs`` densifies: it is meant for small data).
* **custom initialization**: ``coefs_`` and ``intercepts_`` set by hand before the first
  ``partial_fit`` (or ``fit`` with ``warm_start=True``) are the starting weights; predicting
  before that fit raises ``NotFittedError`` (scikit-learn's raises an AttributeError).
* **warm start across solvers**: after an ``lbfgs`` fit, ``set_params(solver="adam")`` (or
  ``"sgd"``) with ``warm_start=True`` goes on from the lbfgs weights with fresh stopping
  bookkeeping (scikit-learn's raises an AttributeError).
* **dropout** (beyond scikit-learn, stochastic solvers only): ``dropout=p`` zeroes each
  hidden unit with probability ``p`` during training (inverted dropout: kept units are scaled
  by ``1/(1-p)``, so prediction needs no change). A sequence gives one rate per hidden layer.
* ``coefs_[k]`` (``(n_in, n_out)``, scikit-learn's layout) and ``intercepts_[k]`` are views of
  the network's parameters: ``coefs_[k] is`` the transpose of ``network_.weights[k]``.
  Editing them in place, or replacing them, changes the model. ``network_`` is the
  underlying :class:`fastmlp.Network`.
"""

import contextlib
import logging
import numbers
import warnings

import numpy as np
import sklearn
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier as _SkMLPClassifier
from sklearn.neural_network import MLPRegressor as _SkMLPRegressor
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state, column_or_1d
from sklearn.utils._param_validation import Interval
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import type_of_target, unique_labels

try:
    from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data
except ImportError:  # pragma: no cover - scikit-learn < 1.6
    raise ImportError(f"fastmlp.sklearn needs scikit-learn >= 1.6 (found "
                      f"{sklearn.__version__}); pip install -U scikit-learn") from None

from . import reference
from .network import Network

__all__ = ["MLPClassifier", "MLPRegressor"]

# scikit-learn's activation names -> fastmlp's.
_ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}
# The network's output activation -> its cost (scikit-learn's losses, each with its
# canonical output so that δᴸ = (ŷ - y)/n as in scikit-learn's _backprop).
_COST_FOR_OUTPUT = {"softmax": "cross_entropy", "sigmoid": "binary_cross_entropy",
                    "exp": "poisson", "identity": "mse"}
_DIVERGED = ("Solver produced non-finite parameter weights. The input data may contain large "
             "values and need to be preprocessed.")


_log = logging.getLogger(__name__)
_float64_noted = False  # the float64 compile note is logged once per process


def _note_float64(dtype):
    """Log, once per process, that float64 data trains a float64 network, whose kernels are
    a second compiled specialization (scikit-learn's data is float64 by default)."""
    global _float64_noted
    if dtype == np.float64 and not _float64_noted:
        _float64_noted = True
        _log.info("float64 input: the network computes in float64, as scikit-learn does. The "
                  "first float64 fit on a machine compiles the kernels' float64 "
                  "specialization (about 100 s, once; numba caches it). Pass float32 X to "
                  "train in float32, the faster path.")


_controller = None  # threadpoolctl's view of this process's BLAS/OpenMP pools, made once


def _thread_budget():
    """The smallest thread count threadpoolctl reports for this process's BLAS and OpenMP
    thread pools, or None. Inside a joblib or dask worker these are limited (dask's
    workers set OMP_NUM_THREADS=1 but not NUMBA_NUM_THREADS), as they are under
    ``threadpoolctl.threadpool_limits``."""
    global _controller
    try:
        if _controller is None:
            from threadpoolctl import ThreadpoolController

            _controller = ThreadpoolController()
        counts = [lib.num_threads for lib in _controller.lib_controllers]
    except Exception:  # noqa: BLE001 - no threadpoolctl, or a library it cannot query
        return None
    counts = [n for n in counts if isinstance(n, int) and n >= 1]
    return min(counts) if counts else None


@contextlib.contextmanager
def _within_thread_limits():
    """Run the compiled kernels with no more threads than the process's other thread
    pools are allowed (see :func:`_thread_budget`), restoring the count afterwards (numba's
    thread count is per calling thread). GridSearchCV(n_jobs=...) on dask, or a fit under
    ``threadpool_limits(1)``, then does not oversubscribe the cores."""
    budget = _thread_budget()
    if budget is None:
        yield
        return
    from ._threads import get_num_threads, set_num_threads

    before = get_num_threads()
    if budget >= before:
        yield
        return
    set_num_threads(budget)
    try:
        yield
    finally:
        set_num_threads(before)


def _network_input(X):
    """X for the network: any scipy sparse format becomes CSR (the network's first layer
    reads it without densifying), anything else passes as it is."""
    return X.tocsr() if hasattr(X, "tocsr") else X


class _BaseMLP(BaseEstimator):
    """What the classifier and the regressor share: parameters, the training loops, state."""

    def _check_params(self):
        self._validate_params()  # scikit-learn's own constraints, messages and error types
        if self.solver == "sgd" and self.momentum >= 1:
            raise ValueError(f"momentum must be < 1 for fastmlp, got {self.momentum!r}")
        hidden = self.hidden_layer_sizes
        hidden = list(hidden) if hasattr(hidden, "__iter__") else [hidden]
        if any(not isinstance(h, numbers.Integral) or isinstance(h, bool) or h <= 0
               for h in hidden):
            raise ValueError(f"hidden_layer_sizes must be > 0, got {hidden}.")
        self._dropout_rate(len(hidden))
        return [int(h) for h in hidden]

    def _dropout_rate(self, n_hidden):
        """The network's dropout from ``dropout``: a rate, or a list of one per hidden
        layer."""
        rates = self.dropout
        if isinstance(rates, numbers.Real):
            rate = float(rates)
        else:
            rates = [r for r in np.asarray(rates, dtype=object).ravel()]
            if len(rates) != n_hidden or any(
                    isinstance(r, bool) or not isinstance(r, numbers.Real)
                    or not 0 <= r < 1 for r in rates):
                raise ValueError(f"dropout must be a float in [0, 1) or one such float per "
                                 f"hidden layer ({n_hidden}), got {self.dropout!r}")
            rate = [float(r) for r in rates]
        if any(rate if isinstance(rate, list) else [rate]) and self.solver == "lbfgs":
            raise ValueError(f"dropout={self.dropout!r} needs a stochastic solver "
                             "(solver='adam' or 'sgd'); lbfgs minimizes the deterministic loss")
        return rate

    # --- the network and the public views of it ---------------------------------------------

    def _draw_init(self, layer_units, rng):
        """scikit-learn's initialization, drawn from ``rng`` in scikit-learn's order."""
        factor = 2.0 if self.activation == "logistic" else 6.0
        coefs, intercepts = [], []
        for fan_in, fan_out in zip(layer_units[:-1], layer_units[1:]):
            bound = np.sqrt(factor / (fan_in + fan_out))
            coefs.append(rng.uniform(-bound, bound, (fan_in, fan_out)))
            intercepts.append(rng.uniform(-bound, bound, fan_out))
        return coefs, intercepts

    def _user_init(self, layer_units):
        """``coefs_``/``intercepts_`` set by hand before the first fit, checked against the
        layer sizes the data and ``hidden_layer_sizes`` give."""
        coefs, intercepts = list(self.coefs_), list(getattr(self, "intercepts_", []))
        expected = [(i, o) for i, o in zip(layer_units[:-1], layer_units[1:])]
        shapes = [np.shape(W) for W in coefs]
        if shapes != expected or [np.shape(b) for b in intercepts] != [(o,) for _, o in
                                                                       expected]:
            raise ValueError(f"coefs_ set before fitting have shapes {shapes} (intercepts_ "
                             f"{[np.shape(b) for b in intercepts]}); this data and "
                             f"hidden_layer_sizes need coefs_ {expected} and intercepts_ "
                             f"{[(o,) for _, o in expected]}")
        return coefs, intercepts

    def _build(self, layer_units, dtype, init, seed):
        """The network, holding the initial parameters ``init``; ``seed`` drives shuffling."""
        units = list(layer_units)
        activations = [_ACTIVATIONS[self.activation]] * (len(units) - 2)
        activations.append(self._output_kind)
        self.network_ = Network(units, activations=activations, cost=self._net_cost(),
                                backend="numba", dtype=np.dtype(dtype).name, seed=seed)
        self._set_parameters(*init)
        self._sync_public()

    def _net_cost(self):
        return _COST_FOR_OUTPUT[self._output_kind]

    def _grad_scale(self):
        """c such that scikit-learn's gradient is c times the network's (before alpha)."""
        if self._net_cost() == "mse":
            return self.n_outputs_ / 2.0
        return 1.0

    def _set_parameters(self, coefs, intercepts):
        """Write scikit-learn-layout parameters into the network."""
        net = self.network_
        for k, (W, b) in enumerate(zip(coefs, intercepts)):
            net.weights[k] = np.asarray(W).T
            net.biases[k] = np.asarray(b).ravel()

    def _sync_public(self):
        """Point coefs_/intercepts_ at the network's parameters (scikit-learn's layout)."""
        net = self.network_
        self.coefs_ = [W.T for W in net.weights]  # views: the kernels keep (n_in, n_out)
        self.intercepts_ = list(net.biases)
        self._public = (list(self.coefs_), list(self.intercepts_))

    def _push_public(self):
        """If the user replaced coefs_ or intercepts_ (rather than editing the views in
        place), copy them into the network."""
        coefs, intercepts = self._public
        changed = any(a is not b for a, b in zip(self.coefs_, coefs))
        changed |= any(a is not b for a, b in zip(self.intercepts_, intercepts))
        changed |= len(self.coefs_) != len(coefs)
        if changed:
            self._set_parameters(self.coefs_, self.intercepts_)
            self._sync_public()

    def __getstate__(self):
        if "network_" in self.__dict__:
            self._push_public()
        state = dict(super().__getstate__())  # a copy: object.__getstate__ is __dict__ itself
        if "network_" in state:
            # The Network pickles its parameters, optimizer state and generator itself;
            # coefs_/intercepts_ are views of it, rebuilt after unpickling.
            for key in ("coefs_", "intercepts_", "_public"):
                state.pop(key, None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        if "network_" in self.__dict__:
            self._sync_public()

    # --- prediction ---------------------------------------------------------------------------

    def _forward(self, X):
        """The network's output for X, after scikit-learn's input validation."""
        check_is_fitted(self)
        if "network_" not in self.__dict__:
            # coefs_ set by hand make check_is_fitted pass, but nothing was fitted: no
            # classes_, no output activation, no network.
            raise NotFittedError(
                f"This {type(self).__name__} has coefs_ set by hand but was never fitted: "
                "coefs_ and intercepts_ set before fitting are the starting weights of the "
                "first partial_fit (or fit with warm_start=True); call one of them before "
                "predicting.")
        X = validate_data(self, X, accept_sparse="csr", reset=False)
        self._push_public()
        self._follow_activation()
        with _within_thread_limits():
            return self.network_.predict_proba(_network_input(X))

    def _follow_activation(self):
        """scikit-learn applies ``activation`` at every forward pass, so after
        ``set_params(activation=...)`` the fitted weights go through the new function. The
        network's hidden activations follow: a new Network over the same parameters,
        optimizer state, generator and History."""
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got "
                             f"{self.activation!r}")
        net = self.network_
        wanted = _ACTIVATIONS[self.activation]
        if all(a == wanted for a in net.activations[:-1]):
            return
        state = net.training_state()
        new = Network(net.layers, activations=[wanted] * (len(net.activations) - 1)
                      + [net.activations[-1]], cost=net.cost, backend=net.backend,
                      dtype=net.dtype.name, seed=net.seed)
        new._params[...] = net._params  # the same layer table: the same flat layout
        new.set_training_state(state)
        new.history = net.history
        self.network_ = new
        self._sync_public()

    # --- training -----------------------------------------------------------------------------

    def _initialize(self, layer_units):
        self.n_iter_ = 0
        self.t_ = 0
        self.n_layers_ = len(layer_units)
        self.out_activation_ = self._sk_out_activation
        self._best_params = None
        self.loss_curve_ = []
        if self.solver == "lbfgs":
            return  # scikit-learn keeps no stopping bookkeeping for lbfgs
        self._initialize_stopping()

    def _initialize_stopping(self):
        """The stochastic solvers' stopping bookkeeping, as scikit-learn starts it."""
        self._no_improvement_count = 0
        if self.early_stopping:
            self.validation_scores_ = []
            self.best_validation_score_ = -np.inf
            self.best_loss_ = None
        else:
            self.best_loss_ = np.inf
            self.validation_scores_ = None
            self.best_validation_score_ = None

    def _fit(self, X, y, sample_weight, incremental):
        with _within_thread_limits():
            return self._fit_within_limits(X, y, sample_weight, incremental)

    def _fit_within_limits(self, X, y, sample_weight, incremental):
        hidden = self._check_params()
        fitted = "network_" in self.__dict__
        first_pass = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)
        user_init = not first_pass and not fitted  # coefs_ set by hand, nothing fitted yet
        X, Y = self._validate_input(X, y, incremental, reset=first_pass or user_init)
        _note_float64(X.dtype)
        if sample_weight is not None:
            # scikit-learn's checks and messages (length, NaN, inf, all zero); negative
            # weights too, which the network refuses.
            sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64,
                                                 ensure_non_negative=True)
        if Y.ndim == 1:
            Y = Y.reshape(-1, 1)
        self.n_outputs_ = Y.shape[1]
        rng = check_random_state(self.random_state)
        if first_pass or user_init:
            layer_units = [X.shape[1]] + hidden + [self.n_outputs_]
            init = self._draw_init(layer_units, rng) if first_pass else self._user_init(
                layer_units)
            self._initialize(layer_units)
        else:
            if self.solver != "lbfgs" and not hasattr(self, "_no_improvement_count"):
                # warm start from lbfgs (set_params(solver="adam")): scikit-learn raises an
                # AttributeError here; warm_start's promise is to go on from the weights,
                # so the stochastic solver starts its bookkeeping afresh.
                self._initialize_stopping()
            elif self.solver != "lbfgs" and self.early_stopping and \
                    getattr(self, "validation_scores_", None) is None:
                # early_stopping switched on between warm-started fits
                self.validation_scores_, self.best_validation_score_ = [], -np.inf
            self._push_public()
            self._follow_activation()
        if self.solver == "lbfgs":
            if first_pass or user_init:
                self._build(layer_units, X.dtype, init, 0)
            self._fit_lbfgs(X, Y, sample_weight)
        else:
            self._fit_stochastic(X, Y, sample_weight, incremental, rng,
                                 layer_units if (first_pass or user_init) else None,
                                 init if (first_pass or user_init) else None, len(hidden))
        self._sync_public()
        if not all(np.isfinite(p).all() for p in self.coefs_ + self.intercepts_):
            raise ValueError(_DIVERGED)
        return self

    # --- lbfgs ----------------------------------------------------------------------------------

    def _fit_lbfgs(self, X, Y, sample_weight):
        """scikit-learn's ``_fit_lbfgs`` on the network's full-batch loss and gradient."""
        import scipy.optimize

        try:
            from sklearn.utils.fixes import _get_additional_lbfgs_options_dict
            extra = _get_additional_lbfgs_options_dict(
                "iprint", 1 if self.verbose is True or self.verbose >= 1 else -1)
        except ImportError:  # pragma: no cover - older scikit-learn
            extra = {}
        from sklearn.utils.optimize import _check_optimize_result

        net = self.network_
        if hasattr(X, "toarray"):
            X = X.toarray()  # lbfgs is for small data; the full-batch gradient reads it dense
        objective = _Objective(self, X, self._net_targets(Y), sample_weight)
        losses = self.loss_curve_

        def record(intermediate_result):
            losses.append(float(intermediate_result.fun))

        result = scipy.optimize.minimize(
            objective, net._params.astype(np.float64), method="L-BFGS-B", jac=True,
            callback=record,
            options={"maxfun": self.max_fun, "maxiter": self.max_iter, "gtol": self.tol,
                     **extra})
        self.n_iter_ = _check_optimize_result("lbfgs", result, self.max_iter)
        self.loss_ = result.fun
        net._params[...] = result.x

    # --- adam, sgd ------------------------------------------------------------------------------

    def _fit_stochastic(self, X, Y, sample_weight, incremental, rng, layer_units, init,
                        n_hidden):
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        early_stopping = self.early_stopping
        sw_train = sw_val = None
        if early_stopping:
            stratify = Y if (self._is_classifier and self.n_outputs_ == 1) else None
            if sample_weight is None:
                X_train, X_val, Y_train, Y_val = train_test_split(
                    X, Y, random_state=rng, test_size=self.validation_fraction,
                    stratify=stratify)
            else:
                X_train, X_val, Y_train, Y_val, sw_train, sw_val = train_test_split(
                    X, Y, sample_weight, random_state=rng, test_size=self.validation_fraction,
                    stratify=stratify)
            if X_val.shape[0] < 2:
                raise ValueError("The validation set is too small. Increase "
                                 "'validation_fraction' or the size of your dataset.")
            y_val = self._val_targets(Y_val)
            X_val = _network_input(X_val)
        else:
            X_train, Y_train, sw_train, X_val, y_val = X, Y, sample_weight, None, None
        X_train = _network_input(X_train)
        if layer_units is not None:
            # fastmlp's shuffling is seeded from random_state after the draws scikit-learn
            # makes (initialization, validation split), so those match scikit-learn's.
            self._build(layer_units, X.dtype, init, int(rng.randint(np.iinfo(np.int32).max)))
        if early_stopping and self._best_params is None:
            self._best_params = self._snapshot()
        if not incremental or not hasattr(self, "_current_lr"):
            # scikit-learn makes a new optimizer for every fit(); partial_fit keeps it.
            self.network_.reset_optimizer()
            self._current_lr = float(self.learning_rate_init)

        n_samples = X_train.shape[0]
        if self.batch_size == "auto":
            batch_size = min(200, n_samples)
        else:
            if self.batch_size > n_samples:
                warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is "
                              "going to be clipped")
            batch_size = int(np.clip(self.batch_size, 1, n_samples))
        net = self.network_
        scale = self._grad_scale()
        # scikit-learn's alpha term: l2/2 ||W||^2 / (the batch's size or weight sum).
        l2 = self.alpha / scale
        # scikit-learn trains on through huge losses and stops only at non-finite values.
        fit_args = {"_l2_per_weight": True, "_stop_when_exploding": False}
        if sample_weight is not None:
            fit_args["sample_weight"] = sw_train
        # loss_'s alpha term: scikit-learn adds each batch's alpha/2 ||W||^2 / sw_sum times
        # the batch's size, over n_samples (with weights: over the unshuffled batches).
        starts = range(0, n_samples, batch_size)
        if sw_train is None:
            penalty_factor = len(starts) / n_samples
        else:
            penalty_factor = sum(min(batch_size, n_samples - s) / sw_train[s:s + batch_size].sum()
                                 for s in starts) / n_samples
        net_targets = self._net_targets(Y_train)
        self.n_iter_ = 0
        # the L2 term the network's History adds to an epoch's loss (per-batch L2: that of
        # a full batch without weights)
        l2_in_history = l2 / batch_size  # what Network.fit adds to its history (per-weight L2)

        def schedule(epoch, lr, history):
            return self._current_lr * scale if self.solver == "sgd" else self._current_lr

        def end_of_epoch(epoch, history):
            data_loss = history.loss[-1] - reference.l2_penalty(net.weights, l2_in_history)
            return self._end_of_epoch(data_loss, penalty_factor, n_samples, X_val, y_val,
                                      sw_val, incremental)

        optimizer = "adam" if self.solver == "adam" else (
            "momentum" if self.momentum > 0 else "sgd")
        epochs = 1 if incremental else self.max_iter
        try:
            net.fit(X_train, net_targets, epochs=epochs, batch_size=batch_size,
                    learning_rate=self._current_lr, optimizer=optimizer, l2=l2,
                    dropout=self._dropout_rate(n_hidden), shuffle=bool(self.shuffle),
                    verbose=False, momentum=self.momentum if optimizer == "momentum" else 0.9,
                    nesterov=bool(self.nesterovs_momentum), beta1=self.beta_1,
                    beta2=self.beta_2, epsilon=self.epsilon / scale, schedule=schedule,
                    callback=end_of_epoch, **fit_args)
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.")
        except FloatingPointError:
            # the diverged epoch's own bookkeeping first (the network stopped before it)
            stop = end_of_epoch(self.n_iter_, net.history)
            self._diverged(stop, epochs, penalty_factor, n_samples, X_val, y_val, sw_val,
                           incremental)
        if early_stopping:
            self._restore(self._best_params)

    def _end_of_epoch(self, data_loss, penalty_factor, n_samples, X_val, y_val, sw_val,
                      incremental):
        """scikit-learn's bookkeeping after an epoch; True stops training."""
        self.n_iter_ += 1
        self._sync_public()
        self.loss_ = np.float64(self._sk_loss(data_loss) + self._penalty(penalty_factor))
        self.t_ += n_samples
        self.loss_curve_.append(self.loss_)
        if self.verbose:
            print("Iteration %d, loss = %.8f" % (self.n_iter_, self.loss_))
        self._update_no_improvement_count(X_val, y_val, sw_val)
        if self.solver == "sgd" and self.learning_rate == "invscaling":
            self._current_lr = float(self.learning_rate_init) / (self.t_ + 1) ** self.power_t
        if self._no_improvement_count > self.n_iter_no_change:
            what = "Validation score" if self.early_stopping else "Training loss"
            msg = (f"{what} did not improve more than tol={self.tol:f} for "
                   f"{self.n_iter_no_change} consecutive epochs.")
            if self._trigger_stopping(msg):
                return True
            self._no_improvement_count = 0
        if incremental:
            return True
        if self.n_iter_ == self.max_iter:
            warnings.warn("Stochastic Optimizer: Maximum iterations (%d) reached and the "
                          "optimization hasn't converged yet." % self.max_iter,
                          ConvergenceWarning)
        return False

    def _diverged(self, stop, epochs, penalty_factor, n_samples, X_val, y_val, sw_val,
                  incremental):
        """The network stopped on a non-finite loss or weights. scikit-learn trains on:
        its weights stay non-finite, every later epoch records nan (loss, validation score)
        and, nan never counting as 'no improvement', it runs to max_iter. Record the same,
        without the pointless training; early stopping then keeps the best weights."""
        # fastmlp.Network keeps the last finite parameters; scikit-learn's are non-finite
        # from here on (its validation scores are nan, its predictions too).
        self.network_._params[...] = np.nan
        while not stop and self.n_iter_ < epochs:
            stop = self._end_of_epoch(np.nan, penalty_factor, n_samples, X_val, y_val, sw_val,
                                      incremental)

    def _trigger_stopping(self, msg):
        if self.solver != "sgd" or self.learning_rate != "adaptive":
            if self.verbose:
                print(msg + " Stopping.")
            return True
        if self._current_lr <= 1e-6:
            if self.verbose:
                print(msg + " Learning rate too small. Stopping.")
            return True
        self._current_lr /= 5.0
        if self.verbose:
            print(msg + " Setting learning rate to %f" % self._current_lr)
        return False

    def _update_no_improvement_count(self, X_val, y_val, sw_val):
        if self.early_stopping:
            score = self._score_val(X_val, y_val, sw_val)
            self.validation_scores_.append(score)
            if self.verbose:
                print("Validation score: %f" % score)
            if score < self.best_validation_score_ + self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                self._best_params = self._snapshot()
        else:
            if self.loss_curve_[-1] > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if self.loss_curve_[-1] < self.best_loss_:
                self.best_loss_ = self.loss_curve_[-1]

    def _score_val(self, X_val, y_val, sw_val):
        y_pred = self._predict_net(X_val)
        if np.issubdtype(np.asarray(y_pred).dtype, np.floating) and not np.isfinite(y_pred).all():
            return np.nan
        return self._score_function(y_val, y_pred, sample_weight=sw_val)

    def _snapshot(self):
        return self.network_._params.copy()

    def _restore(self, params):
        if params is not None:
            self.network_._params[...] = params

    def _penalty(self, per_sample_batches):
        """scikit-learn's alpha term as it enters loss_: each batch adds
        ``alpha/2 * sum ||W||^2 / sw_sum`` times its size, over n_samples."""
        if not self.alpha:
            return 0.0
        squares = sum(float(np.sum(np.square(W, dtype=np.float64))) for W in self.coefs_)
        return 0.5 * self.alpha * squares * per_sample_batches

    def _sk_loss(self, data_loss):
        """scikit-learn's loss from the network's mean data cost."""
        return data_loss  # log-loss, binary log-loss, poisson: the same numbers

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


class _Objective:
    """scikit-learn's lbfgs objective ``theta -> (loss, gradient)`` on the network:
    ``loss = weighted mean cost + alpha/(2 sw_sum) ||W||^2``, gradient
    ``(sum_i w_i dC_i + alpha W) / sw_sum``, sw_sum the weight sum (n without weights).
    ``theta`` is the network's flat parameter vector, in whatever layout it keeps.

    The data loss is scikit-learn's own function of the network's output (its log-losses
    clip probabilities at machine epsilon, which changes where the line search goes when a
    trial step is extreme); the gradient is the network's."""

    def __init__(self, est, X, targets, sample_weight):
        from sklearn.neural_network._base import LOSS_FUNCTIONS

        self.net, self.X, self.targets, self.weights = est.network_, X, targets, sample_weight
        self.sw_sum = X.shape[0] if sample_weight is None else float(sample_weight.sum())
        self.scale = est._grad_scale()
        self.alpha = est.alpha
        self.sk_loss = LOSS_FUNCTIONS[est._sk_loss_name]
        net = self.net
        # where each public weight and bias entry sits in the flat vector
        self.where = [(_flat_index(net._params, W), _flat_index(net._params, b))
                      for W, b in zip(net.weights, net.biases)]
        self.is_weight = np.zeros(net._params.size, dtype=bool)
        for w_idx, _ in self.where:
            self.is_weight[w_idx] = True
        self.extra = {} if sample_weight is None else {"sample_weight": sample_weight}

    def __call__(self, theta):
        net, X, Y = self.net, self.X, self.targets
        net._params[...] = theta
        out = net.predict_proba(X)
        grad = np.empty(theta.size)
        for (dW, db), (w_idx, b_idx) in zip(net.gradients(X, Y, **self.extra), self.where):
            grad[w_idx] = dW
            grad[b_idx] = db
        grad *= self.scale
        W = theta[self.is_weight]
        grad[self.is_weight] += self.alpha / self.sw_sum * W
        loss = self.sk_loss(Y, out, self.weights) + 0.5 * self.alpha * float(W @ W) / self.sw_sum
        return float(loss), grad


def _flat_index(flat, view):
    """The indices into ``flat`` of every element of ``view`` (a view of it), shaped like
    ``view``: ``flat[_flat_index(flat, view)]`` equals ``view``."""
    item = flat.itemsize
    start = (view.__array_interface__["data"][0] - flat.__array_interface__["data"][0]) // item
    positions = np.arange(flat.size, dtype=np.int64)
    return np.lib.stride_tricks.as_strided(
        positions[start:], shape=view.shape,
        strides=tuple(s // item * positions.itemsize for s in view.strides)).copy()


def _stochastic(estimator):
    return estimator.solver != "lbfgs"


# Beyond scikit-learn: dropout, a float in [0, 1) or one per hidden layer.
_DROPOUT_CONSTRAINT = {"dropout": [Interval(numbers.Real, 0, 1, closed="left"), "array-like"]}


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier: scikit-learn's ``MLPClassifier``, trained by fastmlp.

    Parameters and attributes are scikit-learn's (see the module docstring for the few
    differences), plus ``dropout``. Extra fitted attribute: ``network_``, the
    :class:`fastmlp.Network` that ``coefs_`` and ``intercepts_`` view.
    """

    _parameter_constraints = {**_SkMLPClassifier._parameter_constraints, **_DROPOUT_CONSTRAINT}
    _parameter_constraints.pop("loss", None)
    _is_classifier = True

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 dropout=0.0):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.dropout = dropout

    # The network's output: softmax (multiclass), or sigmoid units (binary, multi-label).
    @property
    def _output_kind(self):
        kind = self._label_binarizer.y_type_
        return "softmax" if kind == "multiclass" else "sigmoid"

    @property
    def _sk_out_activation(self):
        return "softmax" if self._label_binarizer.y_type_ == "multiclass" else "logistic"

    def fit(self, X, y, sample_weight=None):
        """Fit the model to data matrix X and target(s) y (labels, or a 2-D indicator
        matrix for multi-label classification), optionally weighting the samples.
        Returns self."""
        return self._fit(X, y, sample_weight, incremental=False)

    @available_if(_stochastic)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over (X, y), continuing from the current weights and optimizer state.
        ``classes`` (every label that will ever be seen) is required on the first call."""
        self._check_params()
        if self._first_partial_fit_call(classes):
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
        return self._fit(X, y, sample_weight, incremental=True)

    def _first_partial_fit_call(self, classes):
        known = getattr(self, "classes_", None)
        if known is None and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit.")
        if classes is not None:
            if known is not None:
                if not np.array_equal(known, unique_labels(classes)):
                    raise ValueError(f"`classes={classes!r}` is not the same as on last call "
                                     f"to partial_fit, was: {known!r}")
            else:
                self.classes_ = unique_labels(classes)
                return True
        return False

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(self, X, y, accept_sparse="csr", multi_output=True,
                             dtype=(np.float64, np.float32), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError(
                        "warm_start can only be used where `y` has the same classes as in the "
                        f"previous call to fit. Previously got {self.classes_}, `y` has "
                        f"{classes}")
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError("`y` has classes not in `self.classes_`. `self.classes_` has "
                                 f"{self.classes_}. 'y' has {classes}.")
        return X, self._label_binarizer.transform(y).astype(bool)

    def _net_targets(self, Y):
        """Network target rows for binarized labels Y (n, n_outputs_)."""
        return Y.astype(self.network_.dtype)

    def _val_targets(self, Y_val):
        return self._label_binarizer.inverse_transform(Y_val)

    _score_function = staticmethod(accuracy_score)

    @property
    def _sk_loss_name(self):
        return "log_loss" if self._output_kind == "softmax" else "binary_log_loss"

    def _raw(self, out):
        if self.n_outputs_ == 1:
            return out.ravel()
        return out

    def _predict_net(self, X):
        return self._label_binarizer.inverse_transform(self._raw(self.network_.predict_proba(X)))

    def predict(self, X):
        """Predicted class labels (an indicator matrix for multi-label problems)."""
        out = self._raw(self._forward(X))
        return self._label_binarizer.inverse_transform(out)

    def predict_proba(self, X):
        """Class probabilities, columns in the order of ``classes_``."""
        y_pred = self._raw(self._forward(X))
        if y_pred.ndim == 1:
            return np.vstack([1 - y_pred, y_pred]).T
        return y_pred

    def predict_log_proba(self, X):
        """``log(predict_proba(X))``."""
        y_prob = self.predict_proba(X)
        return np.log(y_prob, out=y_prob)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor: scikit-learn's ``MLPRegressor``, trained by fastmlp.

    ``loss="squared_error"`` (identity output, one or several targets) or ``"poisson"``
    (exp output, half Poisson deviance), plus ``dropout``. Extra fitted attribute:
    ``network_``, the :class:`fastmlp.Network` that ``coefs_`` and ``intercepts_`` view.
    """

    _parameter_constraints = {**_SkMLPRegressor._parameter_constraints, **_DROPOUT_CONSTRAINT}
    _is_classifier = False

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, loss="squared_error",
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 dropout=0.0):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.loss = loss
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.dropout = dropout

    @property
    def _output_kind(self):
        return "exp" if self.loss == "poisson" else "identity"

    @property
    def _sk_out_activation(self):
        return "exp" if self.loss == "poisson" else "identity"

    def fit(self, X, y, sample_weight=None):
        """Fit the model to data matrix X and target(s) y, optionally weighting the samples.
        Returns self."""
        return self._fit(X, y, sample_weight, incremental=False)

    @available_if(_stochastic)
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y), continuing from the current weights and optimizer state."""
        return self._fit(X, y, sample_weight, incremental=True)

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(self, X, y, accept_sparse="csr", multi_output=True,
                             y_numeric=True, dtype=(np.float64, np.float32), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if self.loss == "poisson" and np.any(y < 0):
            # the half Poisson deviance is defined for counts only (scikit-learn's
            # PoissonRegressor refuses them too); a negative target would train on nonsense
            raise ValueError(f"loss='poisson' needs non-negative targets (counts); y holds "
                             f"negative values (its minimum is {np.min(y):g})")
        return X, y

    def _net_targets(self, Y):
        return np.asarray(Y, dtype=self.network_.dtype)

    def _val_targets(self, Y_val):
        return Y_val.ravel() if Y_val.shape[1] == 1 else Y_val

    def _sk_loss(self, data_loss):
        if self.loss == "poisson":
            return data_loss  # the network's poisson cost is scikit-learn's half deviance
        return data_loss / 2  # scikit-learn's squared loss is half the mean squared error

    _score_function = staticmethod(r2_score)

    @property
    def _sk_loss_name(self):
        return self.loss

    def _predict_net(self, X):
        out = self.network_.predict_proba(X)
        return out.ravel() if out.shape[1] == 1 else out

    def predict(self, X):
        """Predicted values, shape ``(n_samples,)`` or ``(n_samples, n_outputs)``."""
        out = self._forward(X)
        return out.ravel() if out.shape[1] == 1 else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
