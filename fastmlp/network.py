"""The Network class: validates input once, owns the parameters, composes the kernels."""

from __future__ import annotations

import math
import numbers
import os
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike

from . import _checks as check
from . import _layout as layout
from . import layers as layer_specs
from . import reference
from ._compiled import physical_memory
from .history import History
from .layers import (AvgPool2D, BatchNorm, Conv2D, Dropout,  # noqa: F401  (re-exported)
                     MaxPool2D)

ACTIVATIONS = tuple(reference.ACTIVATIONS)
COSTS = reference.COSTS
BACKENDS = check.BACKENDS
OPTIMIZERS = check.OPTIMIZERS
SCHEDULES = ("constant", "cosine", "step")
# fit stops (FloatingPointError, parameters of the epoch before kept) when an epoch's loss
# exceeds this multiple of the starting network's: no run that is learning gets there.
DIVERGED = 1000.0


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


class BatchNormParams:
    """One BatchNorm layer's numbers, ``(C,)`` each: ``gamma`` and ``beta`` (trained) and
    ``running_mean``, ``running_var`` (what prediction normalises with). Live views into the
    network's parameters: writing into them, or assigning an attribute (copied in, shape
    checked), takes effect."""

    FIELDS = ("gamma", "beta", "running_mean", "running_var")

    def __init__(self, flat, start, channels):
        views = {name: flat[start + k * channels:start + (k + 1) * channels]
                 for k, name in enumerate(self.FIELDS)}
        object.__setattr__(self, "_views", views)

    def __getattr__(self, name):
        try:
            return self.__dict__["_views"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        if name not in self.FIELDS:
            raise AttributeError(f"BatchNorm parameters are {', '.join(self.FIELDS)}, not "
                                 f"{name!r}")
        target = self._views[name]
        value = np.asarray(value)
        if value.shape != target.shape:
            raise ValueError(f"{name}: expected shape {target.shape}, got {value.shape}")
        if value.dtype.kind not in "biuf" or not np.isfinite(value).all():
            raise ValueError(f"{name} must be finite real numbers")
        if name == "running_var" and not (np.all(value >= 0)):
            raise ValueError("running_var must be >= 0")
        target[...] = value

    def __repr__(self):
        return f"BatchNormParams(channels={self.gamma.size})"


class Network:
    """A feed-forward network: dense layers ``z = W a + b``, and convolution, pooling, batch
    normalisation and dropout layers, composed from one layer table.

    Parameters
    ----------
    layer_sizes : sequence
        The input first, then the layers: ``[784, 128, 10]`` for a dense network, or
        ``[(1, 28, 28), Conv2D(16, 5, padding=2), MaxPool2D(2), 128, 10]`` for a
        convolutional one. The input is an int (features) or a ``(channels, height, width)``
        shape; ints after it are dense widths; :class:`~fastmlp.layers.Conv2D`,
        :class:`~fastmlp.layers.MaxPool2D` and :class:`~fastmlp.layers.AvgPool2D` work on
        images (PyTorch's conventions); :class:`~fastmlp.layers.BatchNorm` normalises the
        layer before it (its activation comes after the BatchNorm) and
        :class:`~fastmlp.layers.Dropout` drops inputs while training. The flatten before the
        first dense layer is implicit, in ``(C, H, W)`` order.
    activations : sequence of str, optional
        One per layer with weights (dense and conv) from ``relu, sigmoid, tanh, softmax,
        identity, exp``. Default: ReLU hidden layers and the cost's output activation
        (softmax for cross-entropy, identity for MSE).
    cost : {"cross_entropy", "mse", "binary_cross_entropy", "poisson"}
        Cross-entropy needs a softmax output layer.
    backend : {"numba", "numpy"}
        ``"numba"`` runs the compiled kernels; ``"numpy"`` runs :mod:`fastmlp.reference`.
    dtype : {"float32", "float64"}
    seed : int, optional
        Seeds initialization and shuffling: same seed, same result on both backends.

    ``X`` is ``(n, features)``; for an image input also ``(n, C, H, W)`` or, with one
    channel, ``(n, H, W)``. ``weights[k]`` of a dense layer is ``(n_out, n_in)``, of a conv
    layer ``(filters, in_channels, kh, kw)``; ``biases[k]`` is ``(n_out,)`` / ``(filters,)``.
    Other layers have no entry there; ``batch_norms[k]`` holds the k-th BatchNorm's γ, β and
    running statistics.
    """

    def __init__(self, layer_sizes: Sequence, activations: Sequence[str] | None = None,
                 cost: str = "cross_entropy", backend: str = "numba", dtype: str = "float32",
                 seed: int | None = None) -> None:
        if not isinstance(layer_sizes, (str, bytes)):
            try:
                layer_sizes = list(layer_sizes)  # (a generator is read once)
            except TypeError:
                pass  # not a sequence: plan() says so
        self._layers = layer_specs.plan(layer_sizes)
        specs = list(layer_sizes)
        self.layers = [layer_specs.normalize_input(specs[0])] + [
            s if isinstance(s, layer_specs.SPECS) else int(s) for s in specs[1:]]
        self.layer_sizes = [self._layers[0].n_in] + [layer.n_out for layer in self._layers]
        self.cost = check.choice("cost", cost, COSTS)
        self.backend = check.choice("backend", backend, BACKENDS)
        if not isinstance(dtype, str) and dtype in (np.float32, np.float64):
            dtype = np.dtype(dtype).name  # np.float32 as well as "float32"
        self.dtype = np.dtype(check.DTYPES[check.choice("dtype", dtype, tuple(check.DTYPES))])
        n_weighted = sum(layer.has_weights for layer in self._layers)
        if activations is None:
            output = reference.OUTPUT_FOR_COST.get(cost, "identity")
            activations = ["relu"] * (n_weighted - 1) + [output]
        elif not isinstance(activations, str):
            try:
                activations = list(activations)
            except TypeError:
                pass  # not a sequence: reported just below
        if not isinstance(activations, list) or len(activations) != n_weighted:
            raise ValueError(f"activations must list one name per layer with weights "
                             f"(dense and conv: {n_weighted}), got {activations!r}")
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
        self._backend = _backend(self)
        # Dropout masks hash (key, update step, layer, row, unit); drawn once per network so
        # that the same seed gives the same masks on both backends and across fit calls.
        self._dropout_key = int(self._rng.integers(2**62))

    # --- parameters -----------------------------------------------------------------------

    def _allocate(self):
        self._table, n_params = layer_specs.table(self._layers, self.activations)
        need = n_params * self.dtype.itemsize
        if need > physical_memory():
            raise ValueError(f"this network has {n_params:,} parameters, "
                             f"{need / 2**30:,.1f} GiB in {self.dtype.name}: more than this "
                             "machine's memory")
        self._params = np.zeros(n_params, dtype=self.dtype)
        weights, biases = self._param_views(self._params)
        self._weights, self._biases = _ParamList(weights), _ParamList(biases)
        self._batch_norms = [
            BatchNormParams(self._params, start, layer.out_shape[0])
            for layer, start in zip(self._layers, self._table[:, layout.PARAM])
            if layer.kind == "batchnorm"]

    def _param_views(self, flat):
        """``(weights, biases)``: views of a flat vector in the parameter layout (the
        parameters themselves, or a gradient) in the public shapes."""
        weights, biases = [], []
        for layer, start in zip(self._layers, self._table[:, layout.PARAM]):
            if not layer.has_weights:
                continue
            n_w = int(np.prod(layer.weight_shape))
            block = flat[start:start + n_w]
            if layer.kind == "dense":
                # The kernels' Wt (n_in, n_out); the public W is its transpose, a view.
                weights.append(block.reshape(layer.n_in, layer.n_out).T)
            else:
                weights.append(block.reshape(layer.weight_shape))
            biases.append(flat[start + n_w:start + n_w + layer.out_shape[0]])
        return weights, biases

    def _trainable_views(self, flat):
        """A pair of views of a flat vector (parameters, or a gradient) for every layer with
        trainable parameters, in layer order: ``(W, b)`` in the public shapes, a BatchNorm's
        ``(γ, β)`` (:meth:`gradients`' order)."""
        weights, biases = self._param_views(flat)
        weighted = iter(zip(weights, biases))
        pairs = []
        for layer, start in zip(self._layers, self._table[:, layout.PARAM]):
            if layer.has_weights:
                pairs.append(next(weighted))
            elif layer.kind == "batchnorm":
                c = layer.out_shape[0]
                pairs.append((flat[start:start + c], flat[start + c:start + 2 * c]))
        return pairs

    def _initialize(self):
        """He-normal for ReLU layers, Glorot-uniform otherwise; zero biases. BatchNorm: γ 1,
        β 0, running mean 0, running variance 1 (PyTorch's)."""
        for bn in self._batch_norms:
            bn.gamma[...] = bn.running_var[...] = 1
        weighted = [layer for layer in self._layers if layer.has_weights]
        for W, name, layer in zip(self._weights, self.activations, weighted):
            fan_in = layer.fan_in
            fan_out = W.shape[0] * (fan_in // W.shape[1] if layer.kind == "conv" else 1)
            if name == "relu":
                W[...] = self._rng.normal(0.0, math.sqrt(2.0 / fan_in), size=W.shape)
            else:
                limit = math.sqrt(6.0 / (fan_in + fan_out))
                W[...] = self._rng.uniform(-limit, limit, size=W.shape)

    @property
    def weights(self) -> list[np.ndarray]:
        """Weight arrays of the layers with parameters: dense ``(n_out, n_in)``, conv
        ``(filters, in_channels, kh, kw)``. Live views: writing into them takes effect."""
        return self._weights

    @weights.setter
    def weights(self, values):
        self._set_all(self._weights, values, "weights")

    @property
    def biases(self) -> list[np.ndarray]:
        """Bias vectors, ``(n_out,)`` / ``(filters,)``, of the layers with parameters."""
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
    def batch_norms(self) -> list[BatchNormParams]:
        """One entry per BatchNorm layer: its ``gamma``, ``beta``, ``running_mean`` and
        ``running_var``, live views (see :class:`BatchNormParams`)."""
        return self._batch_norms

    @property
    def n_inputs(self) -> int:
        return self.layer_sizes[0]

    @property
    def n_outputs(self) -> int:
        return self.layer_sizes[-1]

    @property
    def input_shape(self) -> tuple[int, int, int] | None:
        """``(C, H, W)`` for an image input, else None."""
        first = self.layers[0]
        return first if isinstance(first, tuple) else None

    @property
    def is_mlp(self) -> bool:
        """True for the plain ``[int, int, ...]`` form (saved as plain layer sizes)."""
        return layer_specs.is_plain_mlp(self.layers)

    def summary(self) -> str:
        """A table of the layers: kind (and the activation applied to its output), output
        shape, parameter count; and the total. A BatchNorm's count reads ``γ,β + running``:
        its trained scale and shift, and the running mean and variance it keeps."""
        rows = [("layer", "output shape", "parameters")]
        first = self.layers[0]
        rows.append(("input", str(first if isinstance(first, tuple) else (first,)), "0"))
        names = layer_specs.row_activations(self._layers, self.activations)
        flat = not isinstance(first, tuple)  # past the first dense layer, shapes are widths
        for layer, act in zip(self._layers, names):
            flat = flat or layer.kind == "dense"
            name = f"Dense({layer.n_out})" if layer.kind == "dense" else repr(layer.spec)
            shape = (layer.n_out,) if flat else layer.out_shape
            count = f"{layer.n_trainable:,}"
            if layer.kind == "batchnorm":
                count += f" + {layer.n_params - layer.n_trainable:,} running"
            rows.append((name + ("" if act is None else f" {act}"), str(shape), count))
        width = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = [f"{a:<{width[0]}}  {b:<{width[1]}}  {c:>{width[2]}}" for a, b, c in rows]
        trained = sum(layer.n_trainable for layer in self._layers)
        running = self._params.size - trained
        lines.append(f"total: {trained:,} parameters"
                     + (f" + {running:,} running statistics" if running else "")
                     + f" ({self.dtype.name}, {self._params.nbytes / 2**20:.2f} MiB)")
        if running:
            lines.append("BatchNorm: γ and β trained, running mean and variance kept (one of "
                         "each per channel; net.batch_norms)")
        return "\n".join(lines)

    def __getstate__(self):
        # Pickling (joblib, dask, deepcopy) carries the flat parameters; the weight and bias
        # views are rebuilt over them on unpickling (pickled views would come back as
        # detached copies), and the per-thread predict cache is not carried at all.
        state = self.__dict__.copy()
        for key in ("_backend", "_weights", "_biases", "_batch_norms", "_table"):
            state.pop(key, None)
        return state

    def __setstate__(self, state):
        params = state.pop("_params")
        self.__dict__.update(state)
        self._allocate()
        self._params[...] = params
        self._backend = _backend(self)

    def __repr__(self):
        return (f"Network({self.layers}, activations={self.activations}, "
                f"cost={self.cost!r}, backend={self.backend!r}, dtype={self.dtype.name!r})")

    # --- inference -------------------------------------------------------------------------

    def _check_X(self, X):
        sparse_ok = self._layers[0].kind == "dense"  # the numpy backend densifies it
        return check.features(X, self.n_inputs, self.dtype, shape=self.input_shape,
                              sparse=sparse_ok)

    def _check_XY(self, X, Y):
        X = self._check_X(X)
        Y, _ = check.targets(Y, X.shape[0], self.n_outputs, self.dtype)
        return X, Y

    def forward(self, X: ArrayLike, training: bool = False) -> list[np.ndarray]:
        """Every layer's output for X: ``[a¹, ..., aᴸ]`` (the last is ``predict_proba``),
        each ``(n, width)`` with images flattened in ``(C, H, W)`` order.

        ``training=True`` is the pass training makes, less its randomness: BatchNorm layers
        normalise with X's own statistics (their running ones are not changed), and no
        dropout is applied."""
        X = self._check_X(X)
        if isinstance(X, check.CSR):
            X = X.toarray()
        return self._backend.forward(X, _flag("training", training))

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """The network's output ŷ for every row of X, shape ``(n, n_outputs)``."""
        return self._backend.predict(self._check_X(X))[1]

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Class labels for every row of X: the argmax of the output or, for independent
        sigmoid outputs (``binary_cross_entropy``), each output thresholded at 0.5 — shape
        ``(n,)`` for one output, ``(n, n_outputs)`` otherwise."""
        out = self.predict_proba(X)
        if self.cost == "binary_cross_entropy":
            labels = (out > 0.5).astype(np.int64)
            return labels[:, 0] if self.n_outputs == 1 else labels
        return out.argmax(axis=1)

    def loss(self, X: ArrayLike, Y: ArrayLike, l2: float = 0.0,
             sample_weight: ArrayLike | None = None, training: bool = False) -> float:
        """Mean cost over the samples (weighted by ``sample_weight``) plus ``l2/2 Σ‖W‖²``.
        ``training=True``: the training-mode cost that :meth:`gradients` differentiates
        (BatchNorm normalises with X's own statistics; see :meth:`forward`)."""
        l2 = check.real("l2", l2, low=0)
        training = _flag("training", training)
        X, Y = self._check_XY(X, Y)
        sample_weight = check.sample_weights(sample_weight, X.shape[0], self.dtype)
        return self._cost_and_output(X, Y, sample_weight, training)[0] + reference.l2_penalty(
            self._weights, l2)

    def _cost_and_output(self, X, Y, sample_weight=None, training=False):
        """``(mean data cost, ŷ)`` from one forward pass over checked X and target rows Y."""
        total, out = self._backend.predict(X, Y, sample_weight, training)
        return total / _weight_sum(X.shape[0], sample_weight), out

    def gradients(self, X: ArrayLike, Y: ArrayLike, l2: float = 0.0,
                  sample_weight: ArrayLike | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """``[(∂C/∂W, ∂C/∂b), ...]`` of ``loss(X, Y, l2, sample_weight, training=True)``,
        shaped like the parameters: a pair for every layer with trainable parameters, in
        layer order — ``(∂C/∂γ, ∂C/∂β)`` for a BatchNorm (its statistics span all of X; for a
        network without BatchNorm the training-mode loss is :meth:`loss`)."""
        l2 = check.real("l2", l2, low=0)
        X, Y = self._check_XY(X, Y)
        sample_weight = check.sample_weights(sample_weight, X.shape[0], self.dtype)
        flat = self._backend.gradient(X, Y, l2, sample_weight)
        return [(np.ascontiguousarray(dW), db.copy())
                for dW, db in self._trainable_views(flat)]

    def evaluate(self, X: ArrayLike, y: ArrayLike) -> dict[str, float]:
        """``{"loss": mean cost, "accuracy": fraction classified right}`` on (X, y): argmax
        matches, or for ``binary_cross_entropy`` every output on its target's side of 0.5."""
        X, Y = self._check_XY(X, y)
        cost, out = self._cost_and_output(X, Y)  # one forward pass for both numbers
        accuracy = float(np.mean(reference.classified_right(self.cost, out, Y)))
        return {"loss": float(cost), "accuracy": accuracy}

    def training_state(self) -> dict:
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

    def set_training_state(self, state: dict) -> None:
        """Restore what :meth:`training_state` returned (e.g. from a checkpoint); a damaged
        state raises ValueError and changes nothing."""
        self._backend.check_training_state(state)
        try:
            name = state["optimizer"]
            if name is not None:
                check.choice("optimizer", name, OPTIMIZERS)
                # (shapes: checked by the backend above, which knows its state's form)
                values = {k: (np.array(v, dtype=self.dtype) if isinstance(v, np.ndarray)
                              else v) for k, v in dict(state["state"]).items()}
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

    def reset_optimizer(self) -> None:
        """Forget momentum velocities / Adam moments: the next ``fit`` starts them at zero."""
        self._optimizer_state = None

    def _optimizer_state_for(self, optimizer, make):
        if self._optimizer_state is None or self._optimizer_state[0] != optimizer:
            self._optimizer_state = (optimizer, make())
        return self._optimizer_state[1]

    # --- files -----------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write the network (and its History) to ``path`` (.npz), atomically."""
        from .io import save_network

        return save_network(self, path)

    def to_onnx(self, path: str | os.PathLike, dtype: str | None = None) -> None:
        """Write this network as an ONNX file (``pip install 'fastmlp[onnx]'``); see
        :func:`fastmlp.export.to_onnx`."""
        from .export import to_onnx

        return to_onnx(self, path, dtype)

    @classmethod
    def load(cls, path: str | os.PathLike, backend: str = "numba") -> Network:
        """Read a network saved by :meth:`save`: a missing file raises FileNotFoundError, a bad
        or foreign one ValueError."""
        from .io import load_network

        return load_network(cls, path, backend=backend)

    # --- training --------------------------------------------------------------------------

    def fit(self, X: ArrayLike, y: ArrayLike, epochs: int = 10, batch_size: int = 64,
            learning_rate: float = 0.1, optimizer: str = "sgd", l2: float = 0.0,
            dropout: float | Sequence[float] = 0.0, validation_data: tuple | None = None, shuffle: bool = True,
            verbose: bool = True, *, momentum: float = 0.9, nesterov: bool = False,
            beta1: float = 0.9, beta2: float = 0.999, epsilon: float = 1e-8,
            schedule: str | Callable = "constant", validation_split: float = 0.0,
            early_stopping: int = 0, callback: Callable | None = None, initial_epoch: int = 0,
            sample_weight: ArrayLike | None = None, augment: int | dict | None = None,
            _l2_per_weight: bool = False,
            _stop_when_exploding: bool = True) -> History:
        """Train with mini-batch gradient descent; returns (and extends) ``self.history``.

        ``y`` is integer labels ``(n,)`` or targets ``(n, n_outputs)``. ``optimizer`` is
        ``sgd``, ``momentum`` (``momentum``, ``nesterov``) or ``adam`` (``beta1``, ``beta2``,
        ``epsilon``). ``dropout`` is the probability of zeroing each hidden unit during
        training (inverted dropout: kept units are scaled by 1/(1-p)): a shorthand for a
        :class:`~fastmlp.layers.Dropout` after every hidden layer with weights (after its
        BatchNorm), beside any Dropout layers of the network's own; a list gives one rate per
        hidden layer with weights.
        ``schedule`` is ``constant``, ``cosine`` (to zero over the epochs) or
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

        ``sample_weight`` (one non-negative number per sample) makes every batch's cost the
        weighted mean ``Σ wᵢ Cᵢ / Σ w`` over its samples. (``_l2_per_weight``, for the
        scikit-learn drop-ins: each batch's L2 term is divided by its weight sum, as
        scikit-learn's ``alpha``; ``_stop_when_exploding=False`` stops only on non-finite
        values, as scikit-learn does.)

        ``augment`` (off by default) moves every training image at random as its batch is
        gathered, for a network with an image input ``(C, H, W)`` (an MLP too:
        ``Network([(1, 28, 28), 512, 10])``) and dense X: an int ``s`` shifts each image
        by a whole number of pixels in ``-s .. s`` on each axis (pixels are moved, not
        blurred); a dict ``{"shift": s, "rotate": degrees, "scale": fraction}`` (each key
        optional) also rotates it by up to ``±degrees`` (at most 180) and scales it by a
        factor in ``1 ± fraction`` (below 1) about its centre, sampled bilinearly. Pixels
        from outside the image are 0; every channel gets the same move. The moves come from
        the network's seed, the update step and the sample's place in its batch: the same
        seed gives the same batches on both backends and at any thread count. Validation
        and prediction see the images as they are.

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
        dropout = self._check_dropout(dropout)
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
        if callback is not None and not callable(callback):
            raise ValueError(f"callback must be callable as callback(epoch, history), got "
                             f"{callback!r}")
        _warn_if_unscaled(X)
        X, Y = self._check_XY(X, y)
        augment = check.augmentation(augment, self.input_shape, X)
        sample_weight, weight_scale = check.sample_weights(sample_weight, X.shape[0], self.dtype,
                                                           return_scale=True)
        # scikit-learn's alpha (_l2_per_weight) is divided by each batch's weight sum, which
        # the scaling of the weights changed by weight_scale: the kernels get it undone.
        l2_batch = l2 / weight_scale if _l2_per_weight else l2
        X, Y, sample_weight, validation_data = self._validation_set(
            X, Y, sample_weight, validation_data, validation_split)
        if early_stopping and validation_data is None:
            raise ValueError("early_stopping needs validation_data or validation_split")
        n = X.shape[0]
        batch_size = min(batch_size, n)
        settings = dict(optimizer=optimizer, lr=learning_rate, momentum=momentum,
                        nesterov=bool(nesterov), beta1=beta1, beta2=beta2, eps=epsilon,
                        l2=l2_batch,
                        l2_per_weight=bool(_l2_per_weight), dropout=dropout,
                        key=self._dropout_key, augment=augment)
        trainer = self._backend.trainer(X, Y, batch_size, optimizer, settings, sample_weight)
        history = self.history
        trainer.prepare(verbose)
        # The cost of the network as it starts, on a sample: the yardstick for divergence
        # (one extra forward pass per fit, skipped where only non-finite values stop it).
        start_loss = None
        if _stop_when_exploding:
            sample = np.arange(min(n, 1024))
            start_loss = self._cost_and_output(X[sample], Y[sample])[0] + \
                reference.l2_penalty(self._weights, l2 / batch_size if _l2_per_weight else l2)
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
                epoch_start = self._params.copy()
                started = time.perf_counter()
                cost, accuracy = trainer.epoch(order, lr, bar)
                seconds = time.perf_counter() - started
                # (with _l2_per_weight each batch's L2 term is divided by its weight sum:
                # the epoch's figure divides by a full batch's size)
                history.loss.append(cost + reference.l2_penalty(
                    self._weights, l2 / batch_size if _l2_per_weight else l2))
                history.accuracy.append(accuracy)
                history.seconds.append(seconds)
                history.learning_rate.append(lr)
                line = (f"epoch {len(history.loss):3d}  loss {history.loss[-1]:.4f}  "
                        f"accuracy {accuracy:.4f}")
                if validation_data is not None:
                    scores = self.evaluate(*validation_data)
                    history.val_loss.append(scores["loss"])
                    history.val_accuracy.append(scores["accuracy"])
                    line += (f"  val_loss {scores['loss']:.4f}  "
                             f"val_accuracy {scores['accuracy']:.4f}")
                self._stop_if_diverged(epoch, start_loss, epoch_start)
                if verbose:
                    bar.write(line + f"  {seconds:.2f}s")
                if best is not None:
                    self._track_best(best)
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

    def _check_dropout(self, dropout):
        """fit's ``dropout``: a rate in [0, 1), or a list of one per hidden layer with
        weights."""
        n_hidden = sum(layer.has_weights for layer in self._layers) - 1
        if isinstance(dropout, (list, tuple, np.ndarray)):
            rates = list(np.asarray(dropout, dtype=object).ravel())
            if len(rates) != n_hidden:
                raise ValueError(f"dropout must be a rate or one rate per hidden layer with "
                                 f"weights ({n_hidden}), got {len(rates)} rates")
            return [check.real("dropout", r, low=0, high=1, high_open=True) for r in rates]
        return check.real("dropout", dropout, low=0, high=1, high_open=True)

    def _validation_set(self, X, Y, sample_weight, validation_data, validation_split):
        """``(X, Y, sample_weight, validation)`` for fit: checked ``validation_data``, or a
        random ``validation_split`` held out of the training rows (None without either)."""
        if validation_data is not None and validation_split:
            raise ValueError("give validation_data or validation_split, not both")
        if validation_data is not None:
            try:
                X_val, y_val = validation_data
            except (TypeError, ValueError):
                raise ValueError("validation_data must be a pair (X_val, y_val)") from None
            return (X, Y, sample_weight, self._check_XY(X_val, y_val))
        if not validation_split:
            return X, Y, sample_weight, None
        n_val = int(round(validation_split * X.shape[0]))
        if not 1 <= n_val < X.shape[0]:
            raise ValueError(f"validation_split={validation_split} of {X.shape[0]} samples "
                             "leaves no validation or no training samples")
        held_out = self._rng.permutation(X.shape[0])
        validation = (X[held_out[:n_val]], Y[held_out[:n_val]])
        kept = np.sort(held_out[n_val:])
        if sample_weight is not None:
            sample_weight = sample_weight[kept]
        return X[kept], Y[kept], sample_weight, validation

    def _stop_if_diverged(self, epoch, start_loss, epoch_start):
        """FloatingPointError, with the parameters from before ``epoch`` restored, when the
        epoch's loss or the parameters are not finite, or the loss exceeds ``DIVERGED``
        times the starting network's. (The epoch's loss is measured before each update, so
        the last update can break the weights while the loss still looks fine: both are
        checked; a loss far above the start is divergence too, before it overflows.)"""
        loss = self.history.loss[-1]
        exploding = start_loss is not None and loss > DIVERGED * (start_loss + 1)
        if exploding or not (math.isfinite(loss) and np.isfinite(self._params).all()):
            self._params[...] = epoch_start
            raise FloatingPointError(
                f"training diverged at epoch {epoch + 1} (loss {loss:.4g}"
                + ("" if start_loss is None else f", {start_loss:.4g} at the start")
                + f"); lower the learning rate. The parameters from before epoch "
                f"{epoch + 1} were kept")

    def _track_best(self, best):
        """Early stopping's bookkeeping after an epoch: a better validation loss keeps the
        parameters (``history.best_epoch``), another epoch without one counts."""
        history = self.history
        if history.val_loss[-1] < best["best_loss"]:
            best["best_loss"], best["since_best"] = history.val_loss[-1], 0
            best["best_params"] = self._params.copy()
            history.best_epoch = len(history.loss)
        else:
            best["since_best"] += 1


def _backend(net):
    """The object that computes for ``net``: the kernels, or the numpy reference."""
    if net.backend == "numpy":
        return reference.ReferenceBackend(net)
    from ._compiled import CompiledBackend

    return CompiledBackend(net)


def _flag(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _weight_sum(n, sample_weight):
    """What a mean cost divides by: the sample count, or the weights' sum (in float64)."""
    return n if sample_weight is None else float(np.sum(sample_weight, dtype=np.float64))


def _warn_if_unscaled(X):
    """Integer inputs above 1 are raw pixel values (MNIST's uint8 0..255): they train very
    poorly unless scaled, so say so instead of training silently to ~10 %."""
    if isinstance(X, np.ndarray) and X.dtype.kind in "iu" and X.size and X.max() > 1:
        import warnings

        warnings.warn(f"X holds integers up to {X.max()}: inputs this large train poorly; "
                      "scale them first (e.g. X / 255 for pixels)", UserWarning, stacklevel=3)


def _scheduled(schedule, lr, epoch, epochs, history):
    if callable(schedule):
        return check.real("the learning rate from schedule", schedule(epoch, lr, history),
                          low=0, low_open=True)
    if schedule == "cosine":
        return lr * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
    if schedule == "step":
        return lr * 0.5 ** (epoch // max(1, math.ceil(epochs / 3)))
    return lr


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
