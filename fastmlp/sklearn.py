"""scikit-learn drop-ins: :class:`MLPClassifier` and :class:`MLPRegressor`.

Same constructor parameters, defaults, fitted attributes and methods as
``sklearn.neural_network.MLPClassifier`` / ``MLPRegressor``; the training runs on fastmlp's
compiled kernels (:class:`fastmlp.Network`, ``backend="numba"``). Importing this module imports
scikit-learn (1.6 or newer); ``import fastmlp`` alone never does. ::

    from fastmlp.sklearn import MLPClassifier      # instead of sklearn.neural_network
    clf = MLPClassifier(hidden_layer_sizes=(100,), random_state=0).fit(X, y)

How it maps onto scikit-learn, and where it differs:

* **dtype**: as scikit-learn, the network computes in float32 when ``X`` is float32 and in
  float64 otherwise (ints, float64, lists...). Pass float32 data for the fastest fit.
* **solvers**: ``"adam"`` and ``"sgd"`` (momentum and Nesterov, ``learning_rate`` schedules
  ``constant``, ``invscaling``, ``adaptive``) follow scikit-learn's update rules step for
  step. ``"lbfgs"`` is not supported: ``fit`` raises ValueError (``max_fun`` is accepted and
  ignored, as scikit-learn ignores it for the stochastic solvers).
* **alpha**: scikit-learn adds ``alpha / (2 * batch_size) * sum ||W||^2`` to each batch's mean
  loss; fastmlp's ``l2`` is the same term written as ``l2 / 2 * sum ||W||^2``, so
  ``l2 = alpha / batch_size``. (scikit-learn divides the last, shorter batch's term by its own
  size; here every batch uses the full batch size.) With ``shuffle=False`` and a batch size
  that divides the data, the weights after each epoch equal scikit-learn's to rounding error
  (tests/test_sklearn.py checks it); ``loss_`` then differs only in that its alpha term uses
  the weights at the end of the epoch rather than at each batch.
* **regression** (identity output, squared error): scikit-learn's gradient is that of
  ``sum_outputs (y - y_hat)^2 / (2 n)`` while fastmlp's MSE averages over outputs too, so its
  gradient is ``2 / n_outputs`` times scikit-learn's. The wrapper rescales the learning rate
  (sgd), epsilon (adam) and l2 so that the updates are scikit-learn's exactly. ``loss_`` is
  scikit-learn's (half the mean squared error, plus the alpha term). Only
  ``loss="squared_error"`` is supported (not ``"poisson"``).
* **binary and multi-label classification**: logistic outputs trained on scikit-learn's
  binary log-loss (fastmlp's ``binary_cross_entropy`` cost, fused with the sigmoid as in
  scikit-learn), so ``coefs_[-1]`` has scikit-learn's shape ``(n_hidden, n_outputs)`` and
  the updates are scikit-learn's.
* **early stopping** splits off ``validation_fraction`` with ``train_test_split`` exactly as
  scikit-learn does (stratified for binary targets), scores each epoch, and restores the best
  weights. Initialization is scikit-learn's (Glorot-uniform weights *and* biases), drawn from
  the same ``random_state`` stream; shuffling uses fastmlp's own generator, seeded from it.
* **sparse** ``X`` (CSR/CSC) is accepted and densified (fastmlp's first layer then trains
  from its own CSR copy when X is mostly zeros). ``sample_weight`` is not supported.
* ``coefs_[k]`` (``(n_in, n_out)``, scikit-learn's layout) and ``intercepts_[k]`` are views of
  the network's parameters: ``coefs_[k] is`` the transpose of ``network_.weights[k]``.
  Editing them in place, or replacing them, changes the model. ``network_`` is the
  underlying :class:`fastmlp.Network`.
"""

import numbers
import warnings

import numpy as np
import sklearn
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier as _SkMLPClassifier
from sklearn.neural_network import MLPRegressor as _SkMLPRegressor
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state, column_or_1d
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import type_of_target, unique_labels

try:
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError:  # pragma: no cover - scikit-learn < 1.6
    raise ImportError(f"fastmlp.sklearn needs scikit-learn >= 1.6 (found "
                      f"{sklearn.__version__}); pip install -U scikit-learn") from None

from . import reference
from .network import Network

__all__ = ["MLPClassifier", "MLPRegressor"]

# scikit-learn's activation names -> fastmlp's.
_ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}


def _lbfgs_error(solver):
    return ValueError(
        f"solver={solver!r} is not supported by fastmlp.sklearn: fastmlp trains with "
        "mini-batch gradient descent only. Use solver='adam' or solver='sgd' (or "
        "sklearn.neural_network for L-BFGS).")


class _BaseMLP(BaseEstimator):
    """What the classifier and the regressor share: parameters, the training loop, state."""

    def _check_params(self):
        self._validate_params()  # scikit-learn's own constraints, messages and error types
        if self.solver == "lbfgs":
            raise _lbfgs_error(self.solver)
        if self.solver == "sgd" and self.momentum >= 1:
            raise ValueError(f"momentum must be < 1 for fastmlp, got {self.momentum!r}")
        hidden = self.hidden_layer_sizes
        hidden = list(hidden) if hasattr(hidden, "__iter__") else [hidden]
        if any(not isinstance(h, numbers.Integral) or isinstance(h, bool) or h <= 0
               for h in hidden):
            raise ValueError(f"hidden_layer_sizes must be > 0, got {hidden}.")
        return [int(h) for h in hidden]

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
        # scikit-learn's losses: log-loss for softmax outputs, binary log-loss (summed over
        # outputs) for logistic ones, squared error otherwise.
        return {"softmax": "cross_entropy", "sigmoid": "binary_cross_entropy"}.get(
            self._output_kind, "mse")

    def _grad_scale(self):
        """c such that scikit-learn's gradient is c times the network's (before alpha)."""
        if self._net_cost() == "mse":
            return self.n_outputs_ / 2.0
        return 1.0

    def _set_parameters(self, coefs, intercepts):
        """Write scikit-learn-layout parameters into the network."""
        net = self.network_
        for k, (W, b) in enumerate(zip(coefs, intercepts)):
            W = np.asarray(W)
            b = np.asarray(b).ravel()
            net.weights[k] = W.T
            net.biases[k] = b

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
        X = validate_data(self, X, accept_sparse=["csr", "csc"], reset=False)
        if hasattr(X, "toarray"):
            X = X.toarray()
        self._push_public()
        return self.network_.predict_proba(X)

    # --- training -----------------------------------------------------------------------------

    def _initialize(self, layer_units):
        self.n_iter_ = 0
        self.t_ = 0
        self.n_layers_ = len(layer_units)
        self.out_activation_ = self._sk_out_activation
        self._best_params = None
        self.loss_curve_ = []
        self._no_improvement_count = 0
        if self.early_stopping:
            self.validation_scores_ = []
            self.best_validation_score_ = -np.inf
            self.best_loss_ = None
        else:
            self.best_loss_ = np.inf
            self.validation_scores_ = None
            self.best_validation_score_ = None

    def _fit(self, X, y, incremental):
        hidden = self._check_params()
        first_pass = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)
        X, Y = self._validate_input(X, y, incremental, reset=first_pass)
        if hasattr(X, "toarray"):
            X = X.toarray()
        if Y.ndim == 1:
            Y = Y.reshape(-1, 1)
        self.n_outputs_ = Y.shape[1]
        rng = check_random_state(self.random_state)
        if first_pass:
            layer_units = [X.shape[1]] + hidden + [self.n_outputs_]
            self._initialize(layer_units)
            init = self._draw_init(layer_units, rng)
        else:
            if self.early_stopping and self.validation_scores_ is None:
                # early_stopping switched on between warm-started fits
                self.validation_scores_, self.best_validation_score_ = [], -np.inf
            self._push_public()
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")

        early_stopping = self.early_stopping
        if early_stopping:
            stratify = Y if (self._is_classifier and self.n_outputs_ == 1) else None
            X_train, X_val, Y_train, Y_val = train_test_split(
                X, Y, random_state=rng, test_size=self.validation_fraction, stratify=stratify)
            if X_val.shape[0] < 2:
                raise ValueError("The validation set is too small. Increase "
                                 "'validation_fraction' or the size of your dataset.")
            y_val = self._val_targets(Y_val)
        else:
            X_train, Y_train, X_val, y_val = X, Y, None, None
        if first_pass:
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
        n_batches = -(-n_samples // batch_size)
        scale = self._grad_scale()
        l2 = self.alpha / (batch_size * scale)
        net_targets = self._net_targets(Y_train)
        self.n_iter_ = 0
        net = self.network_

        def schedule(epoch, lr, history):
            return self._current_lr * scale if self.solver == "sgd" else self._current_lr

        def end_of_epoch(epoch, history):
            self.n_iter_ += 1
            data_loss = history.loss[-1] - reference.l2_penalty(net.weights, l2)
            self._sync_public()
            self.loss_ = self._sk_loss(data_loss, X_train, Y_train) + self._penalty(
                n_batches / n_samples)
            self.t_ += n_samples
            self.loss_curve_.append(self.loss_)
            if self.verbose:
                print("Iteration %d, loss = %.8f" % (self.n_iter_, self.loss_))
            self._update_no_improvement_count(early_stopping, X_val, y_val)
            if self.solver == "sgd" and self.learning_rate == "invscaling":
                self._current_lr = float(self.learning_rate_init) / (self.t_ + 1) ** self.power_t
            if self._no_improvement_count > self.n_iter_no_change:
                what = "Validation score" if early_stopping else "Training loss"
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

        optimizer = "adam" if self.solver == "adam" else (
            "momentum" if self.momentum > 0 else "sgd")
        try:
            net.fit(X_train, net_targets, epochs=1 if incremental else self.max_iter,
                    batch_size=batch_size, learning_rate=self._current_lr, optimizer=optimizer,
                    l2=l2, shuffle=bool(self.shuffle), verbose=False,
                    momentum=self.momentum if optimizer == "momentum" else 0.9,
                    nesterov=bool(self.nesterovs_momentum), beta1=self.beta_1,
                    beta2=self.beta_2, epsilon=self.epsilon / scale, schedule=schedule,
                    callback=end_of_epoch)
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.")
        except FloatingPointError:
            self._sync_public()
            raise ValueError("Solver produced non-finite parameter weights. The input data "
                             "may contain large values and need to be preprocessed.") from None
        if early_stopping:
            self._restore(self._best_params)
        self._sync_public()
        if not all(np.isfinite(p).all() for p in self.coefs_ + self.intercepts_):
            raise ValueError("Solver produced non-finite parameter weights. The input data "
                             "may contain large values and need to be preprocessed.")
        return self

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

    def _update_no_improvement_count(self, early_stopping, X_val, y_val):
        if early_stopping:
            score = self._score_val(X_val, y_val)
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

    def _score_val(self, X_val, y_val):
        y_pred = self._predict_net(X_val)
        if np.issubdtype(np.asarray(y_pred).dtype, np.floating) and not np.isfinite(y_pred).all():
            return np.nan
        return self._score_function(y_val, y_pred)

    def _snapshot(self):
        net = self.network_
        return [W.copy() for W in net.weights], [b.copy() for b in net.biases]

    def _restore(self, params):
        if params is not None:
            self.network_.weights, self.network_.biases = params

    def _penalty(self, per_sample_batches):
        """scikit-learn's alpha term as it enters loss_: each batch adds
        ``alpha/2 * sum ||W||^2`` (divided by its size, times its size), over n_samples."""
        if not self.alpha:
            return 0.0
        squares = sum(float(np.sum(np.square(W, dtype=np.float64))) for W in self.coefs_)
        return 0.5 * self.alpha * squares * per_sample_batches

    def _sk_loss(self, data_loss, X_train, Y_train):
        return data_loss

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


def _stochastic(estimator):
    return estimator.solver != "lbfgs"


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier: scikit-learn's ``MLPClassifier``, trained by fastmlp.

    Parameters and attributes are scikit-learn's (see the module docstring for the few
    differences: no ``lbfgs``, no ``sample_weight``). Extra fitted attribute: ``network_``,
    the :class:`fastmlp.Network` that ``coefs_`` and ``intercepts_`` view.
    """

    _parameter_constraints = dict(_SkMLPClassifier._parameter_constraints)
    _parameter_constraints.pop("loss", None)
    _is_classifier = True

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000):
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

    # The network's output: softmax (multiclass), a 2-unit softmax standing in for one
    # logistic unit (binary), or sigmoid units (multi-label).
    @property
    def _output_kind(self):
        kind = self._label_binarizer.y_type_
        return "softmax" if kind == "multiclass" else "sigmoid"

    @property
    def _sk_out_activation(self):
        return "softmax" if self._label_binarizer.y_type_ == "multiclass" else "logistic"

    def fit(self, X, y):
        """Fit the model to data matrix X and target(s) y (labels, or a 2-D indicator
        matrix for multi-label classification). Returns self."""
        return self._fit(X, y, incremental=False)

    @available_if(_stochastic)
    def partial_fit(self, X, y, classes=None):
        """One epoch over (X, y), continuing from the current weights and optimizer state.
        ``classes`` (every label that will ever be seen) is required on the first call."""
        self._check_params()
        if self._first_partial_fit_call(classes):
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
        return self._fit(X, y, incremental=True)

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
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
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

    def _sk_loss(self, data_loss, X_train, Y_train):
        return data_loss  # log-loss or binary log-loss: the network's cost is scikit-learn's

    _score_function = staticmethod(accuracy_score)

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

    Squared error with an identity output, one or several targets. ``loss`` accepts only
    ``"squared_error"``. Extra fitted attribute: ``network_``, the :class:`fastmlp.Network`
    that ``coefs_`` and ``intercepts_`` view.
    """

    _parameter_constraints = dict(_SkMLPRegressor._parameter_constraints)
    _is_classifier = False
    _output_kind = "identity"
    _sk_out_activation = "identity"

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, loss="squared_error",
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000):
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

    def _check_params(self):
        hidden = super()._check_params()
        if self.loss != "squared_error":
            raise ValueError(f"loss={self.loss!r} is not supported by fastmlp.sklearn; only "
                             "loss='squared_error'")
        return hidden

    def fit(self, X, y):
        """Fit the model to data matrix X and target(s) y. Returns self."""
        return self._fit(X, y, incremental=False)

    @available_if(_stochastic)
    def partial_fit(self, X, y):
        """One epoch over (X, y), continuing from the current weights and optimizer state."""
        return self._fit(X, y, incremental=True)

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                             y_numeric=True, dtype=(np.float64, np.float32), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        return X, y

    def _net_targets(self, Y):
        return np.asarray(Y, dtype=self.network_.dtype)

    def _val_targets(self, Y_val):
        return Y_val.ravel() if Y_val.shape[1] == 1 else Y_val

    def _sk_loss(self, data_loss, X_train, Y_train):
        return data_loss / 2  # scikit-learn's squared loss is half the mean squared error

    _score_function = staticmethod(r2_score)

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
