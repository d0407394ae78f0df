"""The Network class: validates input once, owns the parameters, composes the kernels."""

import math
import numbers
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from . import _checks as check
from . import reference

ACTIVATIONS = tuple(reference.ACTIVATIONS)
COSTS = reference.COSTS
BACKENDS = ("numba", "numpy")
OPTIMIZERS = ("sgd", "momentum", "adam")
SCHEDULES = ("constant", "cosine", "step")
# Samples per compiled call while training: the progress bar and Ctrl-C get a look-in this
# often, at a cost of one Python round trip per chunk.
CHUNK_SAMPLES = 8192
MIN_PART_ROWS = 16  # training splits a batch across threads in parts of at least this size
PREDICT_ROWS = 4096  # predict() works through large inputs in slices of this many rows
CSR_DENSITY = 0.5  # first-layer input sparser than this trains from a CSR copy of X
CSR_MIN_ROWS = 256  # ...when it has at least this many rows (else the copy isn't worth it)
# The first layer's input arguments when X is used dense: (indptr, indices, data, use_csr).
_NO_CSR = {name: (np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, dtype), False)
           for name, dtype in (("float32", np.float32), ("float64", np.float64))}


@dataclass
class History:
    """Per-epoch training record. Validation lists stay empty without validation data."""

    loss: list = field(default_factory=list)
    accuracy: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    val_accuracy: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    learning_rate: list = field(default_factory=list)
    best_epoch: int | None = None

    @property
    def epochs(self):
        return len(self.loss)

    def to_dict(self):
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, data):
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


class _ParamList(list):
    """The public ``weights``/``biases`` lists: views into the flat parameter vector.

    Item assignment copies into the existing view, so ``net.weights[0] = W`` takes effect in
    the kernels (a plain list would silently drop it)."""

    def __setitem__(self, index, value):
        target = self[index]
        value = np.asarray(value)
        if value.shape != target.shape:
            raise ValueError(f"expected shape {target.shape}, got {value.shape}")
        target[...] = value


def _kernels():
    # Imported on first use so that `import fastmlp` and the numpy backend never load numba.
    from .kernels import activations, backprop, costs, dense, training

    return activations, backprop, costs, dense, training


class Network:
    """A fully connected feed-forward network, ``z = W a + b`` layer by layer.

    Parameters
    ----------
    layer_sizes : sequence of int
        Units per layer, input first: ``[784, 128, 10]``.
    activations : sequence of str, optional
        One per weight layer from ``relu, sigmoid, tanh, softmax, identity``. Default: ReLU
        hidden layers and a softmax output (cross-entropy) or identity output (MSE).
    cost : {"cross_entropy", "mse"}
        Cross-entropy needs a softmax output layer.
    backend : {"numba", "numpy"}
        ``"numba"`` runs the compiled kernels; ``"numpy"`` runs :mod:`fastmlp.reference`.
    dtype : {"float32", "float64"}
    seed : int, optional
        Seeds initialization and shuffling: same seed, same result on both backends.
    """

    def __init__(self, layer_sizes, activations=None, cost="cross_entropy", backend="numba",
                 dtype="float32", seed=None):
        try:
            sizes = list(layer_sizes)
        except TypeError:
            raise ValueError(f"layer_sizes must be a sequence of integers, got "
                             f"{layer_sizes!r}") from None
        if len(sizes) < 2:
            raise ValueError(f"layer_sizes needs at least an input and an output size, got "
                             f"{sizes!r}")
        for s in sizes:
            check.positive_int("every layer size", s)
        self.layer_sizes = [int(s) for s in sizes]
        self.cost = check.choice("cost", cost, COSTS)
        self.backend = check.choice("backend", backend, BACKENDS)
        if not isinstance(dtype, str) and dtype in (np.float32, np.float64):
            dtype = np.dtype(dtype).name  # np.float32 as well as "float32"
        self.dtype = np.dtype(check.DTYPES[check.choice("dtype", dtype, tuple(check.DTYPES))])
        n_layers = len(sizes) - 1
        if activations is None:
            output = reference.OUTPUT_FOR_COST.get(cost, "identity")
            activations = ["relu"] * (n_layers - 1) + [output]
        elif not isinstance(activations, str):
            try:
                activations = list(activations)
            except TypeError:
                pass  # not a sequence: reported just below
        if not isinstance(activations, list) or len(activations) != n_layers:
            raise ValueError(f"activations must list one name per weight layer ({n_layers}), "
                             f"got {activations!r}")
        self.activations = [check.choice("activation", a, ACTIVATIONS) for a in activations]
        if "softmax" in self.activations[:-1]:
            raise ValueError("softmax is only supported as the output activation")
        needed = reference.OUTPUT_FOR_COST.get(cost)
        if needed is not None and self.activations[-1] != needed:
            raise ValueError(f"cost {cost!r} needs a {needed!r} output activation, got "
                             f"{self.activations[-1]!r} (use cost='mse' for other outputs)")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise ValueError(f"seed must be an integer or None, got {seed!r}")
        self.seed = None if seed is None else int(seed)
        self._rng = np.random.default_rng(seed)
        self.history = History()
        self._optimizer_state = None  # (optimizer name, its state), kept between fits
        self._early_stopping = None  # fit's early-stopping bookkeeping, kept for resuming
        self._allocate()
        self._initialize()
        # Dropout masks hash (key, update step, layer, row, unit); drawn once per network so
        # that the same seed gives the same masks on both backends and across fit calls.
        self._dropout_key = int(self._rng.integers(2**62))

    # --- parameters -----------------------------------------------------------------------

    def _allocate(self):
        sizes = self.layer_sizes
        self._sizes = np.array(sizes, dtype=np.int64)
        blocks = [n_in * n_out + n_out for n_in, n_out in zip(sizes[:-1], sizes[1:])]
        self._offsets = np.concatenate([[0], np.cumsum(blocks)]).astype(np.int64)
        self._params = np.zeros(int(self._offsets[-1]), dtype=self.dtype)
        weights, biases = [], []
        for layer, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            start = self._offsets[layer]
            mid = start + n_in * n_out
            # The kernels' Wt (n_in, n_out); the public W is its transpose, a view.
            weights.append(self._params[start:mid].reshape(n_in, n_out).T)
            biases.append(self._params[mid:mid + n_out])
        self._weights, self._biases = _ParamList(weights), _ParamList(biases)
        self._act_codes = None

    def _initialize(self):
        """He-normal for ReLU layers, Glorot-uniform otherwise; zero biases."""
        for W, name in zip(self._weights, self.activations):
            n_out, n_in = W.shape
            if name == "relu":
                W[...] = self._rng.normal(0.0, math.sqrt(2.0 / n_in), size=(n_out, n_in))
            else:
                limit = math.sqrt(6.0 / (n_in + n_out))
                W[...] = self._rng.uniform(-limit, limit, size=(n_out, n_in))

    @property
    def weights(self):
        """Weight matrices, ``weights[k].shape == (layer_sizes[k+1], layer_sizes[k])``."""
        return self._weights

    @weights.setter
    def weights(self, values):
        self._set_all(self._weights, values, "weights")

    @property
    def biases(self):
        """Bias vectors, ``biases[k].shape == (layer_sizes[k+1],)``."""
        return self._biases

    @biases.setter
    def biases(self, values):
        self._set_all(self._biases, values, "biases")

    @staticmethod
    def _set_all(target, values, name):
        values = list(values)
        if len(values) != len(target):
            raise ValueError(f"expected {len(target)} {name}, got {len(values)}")
        for i, v in enumerate(values):
            target[i] = v

    @property
    def n_inputs(self):
        return self.layer_sizes[0]

    @property
    def n_outputs(self):
        return self.layer_sizes[-1]

    def __getstate__(self):
        # Pickling (joblib, dask, deepcopy) carries the flat parameters; the weight and bias
        # views are rebuilt over them on unpickling (pickled views would come back as
        # detached copies), and the per-thread predict cache is not carried at all.
        state = self.__dict__.copy()
        for key in ("_ws_cache", "_weights", "_biases", "_act_codes"):
            state.pop(key, None)
        return state

    def __setstate__(self, state):
        params = state.pop("_params")
        self.__dict__.update(state)
        self._allocate()
        self._params[...] = params

    def __repr__(self):
        return (f"Network({self.layer_sizes}, activations={self.activations}, "
                f"cost={self.cost!r}, backend={self.backend!r}, dtype={self.dtype.name!r})")

    # --- compiled-path plumbing ------------------------------------------------------------

    def _codes(self):
        """``(activation codes, cost code)``: the kernels' names for this network's choices."""
        if self._act_codes is None:
            activations, _, costs, _, _ = _kernels()
            self._act_codes = (np.array([activations.CODES[a] for a in self.activations],
                                        dtype=np.int64), costs.CODES[self.cost])
        return self._act_codes

    def _predict_workspace(self, rows):
        """A workspace kept between predict calls (one per thread, so predicting from
        several threads at once stays safe): single-sample latency is mostly overhead."""
        cache = self.__dict__.setdefault("_ws_cache", threading.local())
        ws = getattr(cache, "ws", None)
        if ws is None or ws.rows < rows or ws.params is not self._params:
            ws = cache.ws = _Workspace(self, rows)
        return ws

    def _input(self, X):
        """The first layer's view of X: a CSR copy when X is big and sparse enough to pay for
        one (decided once per call on the whole of X), else the dense rows themselves."""
        if X.shape[0] >= CSR_MIN_ROWS and np.count_nonzero(X) < CSR_DENSITY * X.size:
            indptr, indices, data = _kernels()[3].to_csr(X)
            return indptr, indices, data, True
        return _NO_CSR[self.dtype.name]

    # --- inference -------------------------------------------------------------------------

    def _check_X(self, X):
        return check.features(X, self.n_inputs, self.dtype)

    def _check_XY(self, X, Y):
        X = self._check_X(X)
        Y, labels_given = check.targets(Y, X.shape[0], self.n_outputs, self.dtype)
        return X, Y, labels_given

    def forward(self, X):
        """Every layer's activation for X: ``[a¹, ..., aᴸ]`` (the last is ``predict_proba``)."""
        X = self._check_X(X)
        if self.backend == "numpy":
            return reference.forward(self._weights, self._biases, self.activations, X)[1][1:]
        _, backprop, _, _, _ = _kernels()
        n = X.shape[0]
        ws = _Workspace(self, n)
        backprop.predict_batch(self._params, self._offsets, self._sizes, self._codes()[0], X,
                               ws.ident[:n], *self._input(X), *ws.forward_buffers())
        return [ws.acts[0, o:o + n * w].reshape(n, w).copy()
                for o, w in zip(ws.act_offsets, self.layer_sizes[1:])]

    def predict_proba(self, X):
        """The network's output ŷ for every row of X, shape ``(n, n_outputs)``."""
        X = self._check_X(X)
        if self.backend == "numpy":
            return reference.predict_proba(self._weights, self._biases, self.activations, X)
        _, backprop, _, _, _ = _kernels()
        n = X.shape[0]
        ws = self._predict_workspace(min(n, PREDICT_ROWS))
        first_layer = self._input(X)
        out = np.empty((n, self.n_outputs), dtype=self.dtype)
        codes = self._codes()[0]
        for start in range(0, n, PREDICT_ROWS):
            rows = np.arange(start, min(n, start + PREDICT_ROWS))
            out[start:start + rows.size] = backprop.predict_batch(
                self._params, self._offsets, self._sizes, codes, X, rows, *first_layer,
                *ws.forward_buffers())
        return out

    def predict(self, X):
        """Class labels for every row of X: the argmax of the output or, for independent
        sigmoid outputs (``binary_cross_entropy``), each output thresholded at 0.5 — shape
        ``(n,)`` for one output, ``(n, n_outputs)`` otherwise."""
        out = self.predict_proba(X)
        if self.cost == "binary_cross_entropy":
            labels = (out > 0.5).astype(np.int64)
            return labels[:, 0] if self.n_outputs == 1 else labels
        return out.argmax(axis=1)

    def loss(self, X, Y, l2=0.0):
        """Mean cost over the samples plus ``l2/2 Σ‖W‖²``."""
        l2 = check.real("l2", l2, low=0)
        X, Y, _ = self._check_XY(X, Y)
        if self.backend == "numpy":
            return reference.loss(self._weights, self._biases, self.activations, self.cost,
                                  X, Y, l2)
        return self._cost_and_output(X, Y)[0] + reference.l2_penalty(self._weights, l2)

    def _cost_and_output(self, X, Y):
        """``(mean data cost, ŷ)`` from one forward pass over checked X and target rows Y."""
        if self.backend == "numpy":
            zs, acts = reference.forward(self._weights, self._biases, self.activations, X)
            return reference.batch_loss(self.cost, zs[-1], acts[-1], Y), acts[-1]
        _, backprop, _, _, _ = _kernels()
        n, width = X.shape[0], self.n_outputs
        ws = self._predict_workspace(min(n, PREDICT_ROWS))
        first_layer = self._input(X)
        out = np.empty((n, width), dtype=self.dtype)
        last = ws.act_offsets[-1]
        total = 0.0
        for start in range(0, n, PREDICT_ROWS):
            rows = np.arange(start, min(n, start + PREDICT_ROWS))
            total += backprop.batch_cost(self._params, self._offsets, self._sizes,
                                         *self._codes(), X, rows, Y[rows],
                                         *first_layer, *ws.forward_buffers(), ws.delta_a[0])
            # batch_cost leaves ŷ in the last layer's part of the workspace
            out[start:start + rows.size] = ws.acts[0, last:last + rows.size * width].reshape(
                rows.size, width)
        return total / n, out

    def gradients(self, X, Y, l2=0.0):
        """``[(∂C/∂W, ∂C/∂b), ...]`` of ``loss(X, Y, l2)``, shaped like the parameters."""
        l2 = check.real("l2", l2, low=0)
        X, Y, _ = self._check_XY(X, Y)
        if self.backend == "numpy":
            return reference.gradients(self._weights, self._biases, self.activations,
                                       self.cost, X, Y, l2)
        grads = self._compiled_gradients(X, Y, l2, self._input(X))
        return [(np.ascontiguousarray(dW), db.copy()) for dW, db in grads]

    def _compiled_gradients(self, X, Y, l2, csr):
        """Gradient views (public layout) from one compiled batch over all of X."""
        _, backprop, _, _, _ = _kernels()
        n = X.shape[0]
        ws = _Workspace(self, n)
        grads = np.empty_like(self._params)
        backprop.batch_gradients(self._params, self._offsets, self._sizes, *self._codes(),
                                 X, ws.ident[:n], Y, *csr, l2,
                                 *ws.forward_buffers(), ws.delta_a[0], ws.delta_b[0], grads,
                                 0.0, 0, 0, n, 0)
        return [(grads[o:o + i * j].reshape(i, j).T, grads[o + i * j:o + i * j + j])
                for o, i, j in zip(self._offsets, self.layer_sizes[:-1], self.layer_sizes[1:])]

    def evaluate(self, X, y):
        """``{"loss": mean cost, "accuracy": fraction classified right}`` on (X, y): argmax
        matches, or for ``binary_cross_entropy`` every output on its target's side of 0.5."""
        X, Y, _ = self._check_XY(X, y)
        cost, out = self._cost_and_output(X, Y)  # one forward pass for both numbers
        accuracy = float(np.mean(reference.classified_right(self.cost, out, Y)))
        return {"loss": float(cost), "accuracy": accuracy}

    def training_state(self):
        """Everything besides parameters and History that the next ``fit`` depends on: the
        optimizer state (arrays and step count), the shuffling generator's state, the
        dropout key and early stopping's best epoch so far. With ``save`` and
        ``set_training_state`` a run resumes bit for bit."""
        name, state = self._optimizer_state or (None, {})
        best = self._early_stopping
        return {"optimizer": name,
                "state": {k: (v.copy() if isinstance(v, np.ndarray) else v)
                          for k, v in state.items() if isinstance(k, str)},
                "rng": self._rng.bit_generator.state,
                "dropout_key": self._dropout_key,
                "early_stopping": None if best is None else {
                    "best_loss": float(best["best_loss"]), "since_best": best["since_best"],
                    "best_params": None if best["best_params"] is None
                    else best["best_params"].copy()}}

    def set_training_state(self, state):
        """Restore what :meth:`training_state` returned (e.g. from a checkpoint)."""
        try:
            name = state["optimizer"]
            if name is not None:
                check.choice("optimizer", name, OPTIMIZERS)
                values = {k: (np.array(v, dtype=self.dtype) if isinstance(v, np.ndarray)
                              else v) for k, v in dict(state["state"]).items()}
                for k, v in values.items():
                    if isinstance(v, np.ndarray) and v.shape != self._params.shape and \
                            self.backend == "numba":
                        raise ValueError(f"optimizer state {k!r} has shape {v.shape}; "
                                         f"expected {self._params.shape}")
                self._optimizer_state = (name, values)
            else:
                self._optimizer_state = None
            self._rng.bit_generator.state = state["rng"]
            self._dropout_key = int(state["dropout_key"])
            best = state.get("early_stopping")
            if best is not None:
                params = best["best_params"]
                if params is not None:
                    params = np.array(params, dtype=self.dtype)
                    if params.shape != self._params.shape:
                        raise ValueError(f"early stopping's best parameters have shape "
                                         f"{params.shape}; expected {self._params.shape}")
                best = {"best_loss": float(best["best_loss"]),
                        "since_best": int(best["since_best"]), "best_params": params}
            self._early_stopping = best
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a training state: {exc!r}") from None

    def reset_optimizer(self):
        """Forget momentum velocities / Adam moments: the next ``fit`` starts them at zero."""
        self._optimizer_state = None

    def _optimizer_state_for(self, optimizer, make):
        if self._optimizer_state is None or self._optimizer_state[0] != optimizer:
            self._optimizer_state = (optimizer, make())
        return self._optimizer_state[1]

    # --- files -----------------------------------------------------------------------------

    def save(self, path):
        """Write the network (and its History) to ``path`` (.npz), atomically."""
        from .io import save_network

        return save_network(self, path)

    @classmethod
    def load(cls, path, backend="numba"):
        """Read a network saved by :meth:`save`; bad or foreign files raise ValueError."""
        from .io import load_network

        return load_network(cls, path, backend=backend)

    # --- training --------------------------------------------------------------------------

    def fit(self, X, y, epochs=10, batch_size=64, learning_rate=0.1, optimizer="sgd", l2=0.0,
            dropout=0.0, validation_data=None, shuffle=True, verbose=True, *, momentum=0.9,
            nesterov=False, beta1=0.9, beta2=0.999, epsilon=1e-8, schedule="constant",
            validation_split=0.0, early_stopping=0, callback=None, initial_epoch=0):
        """Train with mini-batch gradient descent; returns (and extends) ``self.history``.

        ``y`` is integer labels ``(n,)`` or targets ``(n, n_outputs)``. ``optimizer`` is
        ``sgd``, ``momentum`` (``momentum``, ``nesterov``) or ``adam`` (``beta1``, ``beta2``,
        ``epsilon``). ``dropout`` is the probability of zeroing each hidden unit during
        training (inverted dropout: kept units are scaled by 1/(1-p)). ``schedule`` is ``constant``, ``cosine`` (to zero over the epochs) or
        ``step`` (halved every third of the epochs), or a callable
        ``schedule(epoch, learning_rate, history) -> rate for this epoch``.
        ``validation_data=(X_val, y_val)`` adds validation loss/accuracy per epoch;
        ``validation_split=f`` instead holds out a random fraction ``f`` of (X, y).
        ``early_stopping=k`` stops after ``k`` epochs without a better validation loss and
        restores the parameters of the best epoch (``history.best_epoch``).
        ``callback(epoch, history)`` runs after every epoch; returning True stops training.
        ``initial_epoch`` resumes a run: epochs ``initial_epoch .. epochs - 1`` are trained,
        and schedules see the run's epoch numbers (give ``validation_data`` rather than
        ``validation_split`` to resume exactly: a split is drawn anew by every ``fit``).

        Optimizer state (momentum velocities, Adam moments) carries over to the next ``fit``
        with the same optimizer, so training can continue in pieces; ``reset_optimizer()``
        starts it afresh.
        """
        epochs = check.positive_int("epochs", epochs)
        if isinstance(initial_epoch, bool) or not isinstance(initial_epoch, numbers.Integral) \
                or not 0 <= initial_epoch < epochs:
            raise ValueError(f"initial_epoch must be an integer in 0..epochs-1 ({epochs - 1}), "
                             f"got {initial_epoch!r}")
        batch_size = check.positive_int("batch_size", batch_size)
        learning_rate = check.real("learning_rate", learning_rate, low=0, low_open=True)
        optimizer = check.choice("optimizer", optimizer, OPTIMIZERS)
        if not callable(schedule):
            schedule = check.choice("schedule", schedule, SCHEDULES)
        l2 = check.real("l2", l2, low=0)
        dropout = check.real("dropout", dropout, low=0, high=1, high_open=True)
        momentum = check.real("momentum", momentum, low=0, high=1, high_open=True)
        beta1 = check.real("beta1", beta1, low=0, high=1, high_open=True)
        beta2 = check.real("beta2", beta2, low=0, high=1, high_open=True)
        epsilon = check.real("epsilon", epsilon, low=0, low_open=True)
        validation_split = check.real("validation_split", validation_split, low=0, high=1,
                                      high_open=True)
        if isinstance(early_stopping, bool) or not isinstance(early_stopping, numbers.Integral) \
                or early_stopping < 0:
            raise ValueError(f"early_stopping must be a number of epochs >= 0, got "
                             f"{early_stopping!r}")
        X, Y, labels_given = self._check_XY(X, y)
        if validation_data is not None and validation_split:
            raise ValueError("give validation_data or validation_split, not both")
        if validation_data is not None:
            try:
                X_val, y_val = validation_data
            except (TypeError, ValueError):
                raise ValueError("validation_data must be a pair (X_val, y_val)") from None
            X_val, Y_val, _ = self._check_XY(X_val, y_val)
        elif validation_split:
            n_val = int(round(validation_split * X.shape[0]))
            if not 1 <= n_val < X.shape[0]:
                raise ValueError(f"validation_split={validation_split} of {X.shape[0]} samples "
                                 "leaves no validation or no training samples")
            held_out = self._rng.permutation(X.shape[0])
            X_val, Y_val = X[held_out[:n_val]], Y[held_out[:n_val]]
            X, Y = X[np.sort(held_out[n_val:])], Y[np.sort(held_out[n_val:])]
            validation_data = (X_val, Y_val)
        if early_stopping and validation_data is None:
            raise ValueError("early_stopping needs validation_data or validation_split")
        n = X.shape[0]
        batch_size = min(batch_size, n)
        hyper = dict(momentum=momentum, nesterov=bool(nesterov), beta1=beta1, beta2=beta2,
                     epsilon=epsilon)
        trainer = (_ReferenceTrainer if self.backend == "numpy" else _CompiledTrainer)(
            self, X, Y, batch_size, l2, optimizer, hyper, dropout, self._dropout_key)
        history = self.history
        bar = _progress(verbose, epochs - initial_epoch, n)
        if early_stopping and (initial_epoch == 0 or self._early_stopping is None):
            # Best validation loss so far, its parameters, epochs since: part of
            # training_state(), so a resumed run stops where the uninterrupted one would.
            self._early_stopping = {"best_loss": math.inf, "best_params": None,
                                    "since_best": 0}
        best = self._early_stopping if early_stopping else None
        try:
            for epoch in range(initial_epoch, epochs):
                if best is not None and best["since_best"] >= early_stopping:
                    break  # a resumed run that had already stopped
                lr = _scheduled(schedule, learning_rate, epoch, epochs, history)
                order = self._rng.permutation(n) if shuffle else np.arange(n)
                started = time.perf_counter()
                cost, accuracy = trainer.epoch(order, lr, bar)
                seconds = time.perf_counter() - started
                history.loss.append(cost + reference.l2_penalty(self._weights, l2))
                history.accuracy.append(accuracy)
                history.seconds.append(seconds)
                history.learning_rate.append(lr)
                line = (f"epoch {len(history.loss):3d}  loss {history.loss[-1]:.4f}  "
                        f"accuracy {accuracy:.4f}")
                if validation_data is not None:
                    scores = self.evaluate(X_val, Y_val)
                    history.val_loss.append(scores["loss"])
                    history.val_accuracy.append(scores["accuracy"])
                    line += (f"  val_loss {scores['loss']:.4f}  "
                             f"val_accuracy {scores['accuracy']:.4f}")
                # The epoch's loss is measured before each update, so the last update can
                # break the weights while the loss still looks fine: check both.
                if not (math.isfinite(history.loss[-1]) and np.isfinite(self._params).all()):
                    raise FloatingPointError(
                        f"training diverged at epoch {epoch + 1} (loss {history.loss[-1]:.4g}"
                        "); lower the learning rate")
                if verbose:
                    bar.write(line + f"  {seconds:.2f}s")
                if best is not None:
                    if history.val_loss[-1] < best["best_loss"]:
                        best["best_loss"], best["since_best"] = history.val_loss[-1], 0
                        best["best_params"] = self._params.copy()
                        history.best_epoch = len(history.loss)
                    else:
                        best["since_best"] += 1
                if callback is not None and callback(epoch, history):
                    break
                if best is not None and best["since_best"] >= early_stopping:
                    if verbose:
                        bar.write(f"early stopping: no better validation loss for "
                                  f"{early_stopping} epochs; keeping epoch {history.best_epoch}")
                    break
        finally:
            bar.close()
            if best is not None and best["best_params"] is not None:
                self._params[...] = best["best_params"]
        return history


def _scheduled(schedule, lr, epoch, epochs, history):
    if callable(schedule):
        return check.real("the learning rate from schedule", schedule(epoch, lr, history),
                          low=0, low_open=True)
    if schedule == "cosine":
        return lr * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
    if schedule == "step":
        return lr * 0.5 ** (epoch // max(1, math.ceil(epochs / 3)))
    return lr


def _threads_now():
    import numba

    return numba.get_num_threads()


class _ReferenceTrainer:
    def __init__(self, net, X, Y, batch_size, l2, optimizer, hyper, dropout, key):
        self.net, self.X, self.Y = net, X, Y
        self.dropout, self.key = dropout, key
        self.batch_size, self.l2, self.optimizer, self.hyper = batch_size, l2, optimizer, hyper
        self.state = net._optimizer_state_for(optimizer, dict)

    def epoch(self, order, lr, bar):
        net = self.net
        cost, accuracy = reference.train_epoch(
            net._weights, net._biases, net.activations, net.cost, self.X, self.Y, order,
            self.batch_size, lr, self.l2, self.optimizer, self.state, self.dropout, self.key,
            **self.hyper)
        bar.update(order.size)
        return cost, accuracy


class _CompiledTrainer:
    """Workspaces for one fit, allocated once; each call trains a chunk of batches."""

    def __init__(self, net, X, Y, batch_size, l2, optimizer, hyper, dropout, key):
        training = _kernels()[4]
        self.dropout, self.key = dropout, key
        self.net, self.X, self.Y, self.batch_size, self.l2 = net, X, Y, batch_size, l2
        self.optimizer = training.CODES[optimizer]
        self.hyper = hyper
        self.csr = net._input(X)
        # Threads share each batch; a part below MIN_PART_ROWS samples isn't worth a thread.
        self.parts = max(1, min(_threads_now(), batch_size // MIN_PART_ROWS))
        rows = -(-batch_size // self.parts)
        self.ws = _Workspace(net, rows, self.parts)
        self.Y_parts = np.empty((self.parts, rows * net.n_outputs), net.dtype)
        self.grads = np.empty((self.parts, net._params.size), net.dtype)
        # state1: velocity or Adam's first moment; state2: Adam's second; step: updates made.
        self.state = net._optimizer_state_for(optimizer, lambda: {
            "state1": np.zeros_like(net._params), "state2": np.zeros_like(net._params),
            "step": 0})
        self.train_batches = training.train_batches

    def epoch(self, order, lr, bar):
        net, h, ws = self.net, self.hyper, self.ws
        n_batches = -(-order.size // self.batch_size)
        per_call = max(1, CHUNK_SAMPLES // self.batch_size)
        total, correct = 0.0, 0
        for first in range(0, n_batches, per_call):
            stop = min(n_batches, first + per_call)
            cost, right = self.train_batches(
                net._params, net._offsets, net._sizes, *net._codes(), self.X,
                self.Y, *self.csr, order, self.batch_size, first, stop, self.l2,
                self.optimizer, lr, h["momentum"], h["nesterov"], h["beta1"], h["beta2"],
                h["epsilon"], self.state["step"], self.state["state1"], self.state["state2"],
                self.parts, ws.acts, ws.act_offsets, ws.xbuf, ws.scratch, ws.sp_indptr,
                ws.sp_indices, ws.sp_data, ws.ident, ws.delta_a, ws.delta_b, self.Y_parts,
                self.grads, self.dropout, self.key)
            self.state["step"] += stop - first
            total += cost
            correct += right
            bar.update(min(order.size, stop * self.batch_size) - first * self.batch_size)
        return total / order.size, correct / order.size


class _Workspace:
    """Every buffer a compiled call needs for up to ``rows`` samples per part, allocated
    once (per fit, or per predict call) and reused by every batch. Training gives each of
    ``parts`` threads its own row of every buffer."""

    def __init__(self, net, rows, parts=1):
        self.rows, self.parts, self.params = rows, parts, net._params
        sizes = net.layer_sizes
        widths = net._sizes[1:]
        self.act_offsets = np.concatenate([[0], np.cumsum(widths * rows)[:-1]]).astype(np.int64)

        def buffer(size, dtype=net.dtype):
            return np.empty((parts, size), dtype=dtype)

        self.acts = buffer(int(widths.sum()) * rows)
        self.xbuf = buffer(rows * sizes[0])  # a gathered dense batch
        # One layer's transposes at a time: its input batch, weights and δ.
        self.scratch = buffer(max(i * rows + o * i + o * rows
                                  for i, o in zip(sizes[:-1], sizes[1:])))
        # The first layer's input batch, transposed, in CSR form.
        self.sp_indptr = buffer(sizes[0] + 1, np.int64)
        self.sp_indices = buffer(rows * sizes[0], np.int32)
        self.sp_data = buffer(rows * sizes[0])
        self.ident = np.arange(max(rows, max(sizes[:-1])), dtype=np.int64)
        self.delta_a = buffer(int(widths.max()) * rows)
        self.delta_b = buffer(int(widths.max()) * rows)

    def forward_buffers(self):
        """Part 0's buffers, for the single-part (inference, gradients) kernels."""
        return (self.acts[0], self.act_offsets, self.xbuf[0], self.scratch[0],
                self.sp_indptr[0], self.sp_indices[0], self.sp_data[0], self.ident)


class _NoBar:
    def update(self, n):
        pass

    def write(self, line):
        print(line, file=sys.stderr)

    def close(self):
        pass


def _progress(verbose, epochs, n):
    """A tqdm bar over all samples of all epochs when verbose and tqdm is installed."""
    if not verbose:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=epochs * n, unit="sample", unit_scale=True, leave=False,
                dynamic_ncols=True, file=sys.stderr)
