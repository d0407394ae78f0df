"""The Network class: validates input once, owns the parameters, composes the kernels."""

from __future__ import annotations

import math
import numbers
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike

from . import _checks as check
from . import layers as layer_specs
from . import reference
from .history import History
from .layers import Conv2D, MaxPool2D  # noqa: F401  (re-exported: fastmlp.Conv2D)

ACTIVATIONS = tuple(reference.ACTIVATIONS)
COSTS = reference.COSTS
BACKENDS = check.BACKENDS
OPTIMIZERS = check.OPTIMIZERS
SCHEDULES = ("constant", "cosine", "step")
# Samples per compiled call while training: the progress bar and Ctrl-C get a look-in this
# often, at a cost of one Python round trip per chunk.
CHUNK_SAMPLES = 8192
MIN_PART_ROWS = 16  # training splits a batch across threads in parts of at least this size
# Inference works through its rows in blocks of at most this many per thread: big enough
# for the products to run at speed, small enough for a block's activations to stay in cache.
PREDICT_BLOCK = 256
MIN_PREDICT_PART = 64  # ...and uses another thread only for at least this many more rows
# fit stops (FloatingPointError, parameters of the epoch before kept) when an epoch's loss
# exceeds this multiple of the starting network's: no run that is learning gets there.
DIVERGED = 1000.0
# A dense first layer reads a part (a batch's share, or a block of predicted rows) through
# a CSR block when fewer than this fraction of its inputs are non-zero: MNIST's pixels are
# ~80 % zeros, and skipping them beats the denser product's better vectorization.
SPARSE_BELOW = 0.5


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
    global _KERNELS
    if _KERNELS is None:
        from .kernels import activations, backprop, costs, dense, inference, training

        _KERNELS = activations, backprop, costs, dense, training, inference
    return _KERNELS


_KERNELS = None


def _layout():
    from . import _layout as layout  # plain Python: no numba

    return layout


# The activation and cost codes of the kernels (fastmlp.kernels.activations.CODES and
# costs.CODES, which tests/test_cnn.py holds these to), without importing numba: the layer
# table carries them on both backends.
_ACTIVATION_CODES = {"relu": 0, "sigmoid": 1, "tanh": 2, "identity": 3, "softmax": 4, "exp": 5}
_COST_CODES = {"cross_entropy": 0, "mse": 1, "binary_cross_entropy": 2, "poisson": 3}
_NO_INDPTR = np.zeros(1, np.int64)
_NO_INDICES = np.zeros(0, np.int32)
_NO_WEIGHTS = {name: np.zeros(0, dtype) for name, dtype in check.DTYPES.items()}
_NO_TARGETS = {name: np.zeros((0, 1), dtype) for name, dtype in check.DTYPES.items()}
_NO_GRADS = {name: np.zeros((1, 1), dtype) for name, dtype in check.DTYPES.items()}


def _infer_settings():
    """``layout.Settings`` for training.run's INFER mode (only the code matters)."""
    return _layout().Settings(optimizer=-2, lr=0.0, momentum=0.0, nesterov=False, beta1=0.0,
                              beta2=0.0, eps=0.0, l2=0.0, l2_per_weight=False, dropout=0.0,
                              key=0)
# The parallel kernels run one call at a time: numba's workqueue threading layer (see
# fastmlp._threads) must not be entered from two Python threads at once.
_kernel_lock = threading.RLock()


def _memory_limit():
    """Bytes of physical memory (a generous bound where the OS does not say)."""
    try:
        import os

        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 2**50


def _dense(X):
    """A checked input as a dense array (the numpy backend reads sparse input densified)."""
    return X.toarray() if isinstance(X, check.CSR) else X


class Network:
    """A feed-forward network: dense layers ``z = W a + b``, and convolution and max-pooling
    layers for images, composed from one layer table.

    Parameters
    ----------
    layer_sizes : sequence
        The input first, then the layers: ``[784, 128, 10]`` for a dense network, or
        ``[(1, 28, 28), Conv2D(16, 5, padding=2), MaxPool2D(2), 128, 10]`` for a
        convolutional one. The input is an int (features) or a ``(channels, height, width)``
        shape; ints after it are dense widths; :class:`~fastmlp.layers.Conv2D` and
        :class:`~fastmlp.layers.MaxPool2D` work on images (PyTorch's conventions). The
        flatten before the first dense layer is implicit, in ``(C, H, W)`` order.
    activations : sequence of str, optional
        One per layer with parameters (dense and conv) from ``relu, sigmoid, tanh, softmax,
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
    Pooling layers have no entry.
    """

    def __init__(self, layer_sizes: Sequence, activations: Sequence[str] | None = None,
                 cost: str = "cross_entropy", backend: str = "numba", dtype: str = "float32",
                 seed: int | None = None) -> None:
        self._layers = layer_specs.plan(layer_sizes)
        specs = list(layer_sizes)
        self.layers = [layer_specs.normalize_input(specs[0])] + [
            s if isinstance(s, (Conv2D, MaxPool2D)) else int(s) for s in specs[1:]]
        self.layer_sizes = [self._layers[0].n_in] + [layer.n_out for layer in self._layers]
        self.cost = check.choice("cost", cost, COSTS)
        self.backend = check.choice("backend", backend, BACKENDS)
        if not isinstance(dtype, str) and dtype in (np.float32, np.float64):
            dtype = np.dtype(dtype).name  # np.float32 as well as "float32"
        self.dtype = np.dtype(check.DTYPES[check.choice("dtype", dtype, tuple(check.DTYPES))])
        n_weighted = sum(layer.has_params for layer in self._layers)
        if activations is None:
            output = reference.OUTPUT_FOR_COST.get(cost, "identity")
            activations = ["relu"] * (n_weighted - 1) + [output]
        elif not isinstance(activations, str):
            try:
                activations = list(activations)
            except TypeError:
                pass  # not a sequence: reported just below
        if not isinstance(activations, list) or len(activations) != n_weighted:
            raise ValueError(f"activations must list one name per layer with parameters "
                             f"({n_weighted}), got {activations!r}")
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
        # The layer table's activation column holds each layer's code; the numpy backend
        # never reads it, so the names' codes come from a table that needs no numba.
        codes = [_ACTIVATION_CODES[a] for a in self.activations]
        self._table, n_params = layer_specs.table(self._layers, codes)
        need = n_params * self.dtype.itemsize
        if need > _memory_limit():
            raise ValueError(f"this network has {n_params:,} parameters, "
                             f"{need / 2**30:,.1f} GiB in {self.dtype.name}: more than this "
                             "machine's memory")
        self._params = np.zeros(n_params, dtype=self.dtype)
        weights, biases = self._param_views(self._params)
        self._weights, self._biases = _ParamList(weights), _ParamList(biases)

    def _param_views(self, flat):
        """``(weights, biases)``: views of a flat vector in the parameter layout (the
        parameters themselves, or a gradient) in the public shapes."""
        weights, biases = [], []
        for layer, start in zip(self._layers, self._table[:, _layout().PARAM]):
            if not layer.has_params:
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

    def _initialize(self):
        """He-normal for ReLU layers, Glorot-uniform otherwise; zero biases."""
        weighted = [layer for layer in self._layers if layer.has_params]
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
        """A table of the layers: kind, output shape, parameter count; and the total."""
        rows = [("layer", "output shape", "parameters")]
        first = self.layers[0]
        rows.append(("input", str(first if isinstance(first, tuple) else (first,)), "0"))
        acts = iter(self.activations)
        for layer in self._layers:
            if layer.kind == "dense":
                name, shape = f"Dense({layer.n_out}) {next(acts)}", (layer.n_out,)
            else:
                name = repr(layer.spec) + (f" {next(acts)}" if layer.has_params else "")
                shape = layer.out_shape
            rows.append((name, str(shape), f"{layer.n_params:,}"))
        width = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = [f"{a:<{width[0]}}  {b:<{width[1]}}  {c:>{width[2]}}" for a, b, c in rows]
        lines.append(f"total: {self._params.size:,} parameters ({self.dtype.name}, "
                     f"{self._params.nbytes / 2**20:.2f} MiB)")
        return "\n".join(lines)

    def __getstate__(self):
        # Pickling (joblib, dask, deepcopy) carries the flat parameters; the weight and bias
        # views are rebuilt over them on unpickling (pickled views would come back as
        # detached copies), and the per-thread predict cache is not carried at all.
        state = self.__dict__.copy()
        for key in ("_ws_cache", "_weights", "_biases", "_act_codes", "_table"):
            state.pop(key, None)
        return state

    def __setstate__(self, state):
        params = state.pop("_params")
        self.__dict__.update(state)
        self._allocate()
        self._params[...] = params

    def __repr__(self):
        return (f"Network({self.layers}, activations={self.activations}, "
                f"cost={self.cost!r}, backend={self.backend!r}, dtype={self.dtype.name!r})")

    # --- compiled-path plumbing ------------------------------------------------------------

    def _cost_code(self):
        return _COST_CODES[self.cost]

    def _workspace(self, rows, parts=1):
        """A workspace kept between calls (one per Python thread, so predicting from several
        threads at once stays safe) that holds ``parts`` parts of ``rows`` samples:
        one-sample latency and short ``fit`` calls are mostly set-up otherwise."""
        cache = self.__dict__.setdefault("_ws_cache", threading.local())
        ws = getattr(cache, "ws", None)
        if ws is None or ws.params is not self._params:
            ws = cache.ws = _Workspace(self, rows, parts)
        elif ws.rows < rows or ws.parts < parts:  # grow, never shrink: calls alternate
            ws = cache.ws = _Workspace(self, max(rows, ws.rows), max(parts, ws.parts))
        return ws

    def _input(self, X):
        """The first layer's input (a ``layout.Input``): checked dense rows, or a checked
        CSR matrix (scipy sparse input) read without densifying it."""
        if isinstance(X, check.CSR):
            return _layout().Input(np.empty((0, self.n_inputs), self.dtype), X.indptr,
                                   X.indices, X.data, True, 0.0)
        return _layout().Input(X, _NO_INDPTR, _NO_INDICES, _NO_WEIGHTS[self.dtype.name], False,
                               float(SPARSE_BELOW))

    # --- inference -------------------------------------------------------------------------

    def _check_X(self, X):
        sparse_ok = self._layers[0].kind == "dense"  # the numpy backend densifies it
        return check.features(X, self.n_inputs, self.dtype, shape=self.input_shape,
                              sparse=sparse_ok)

    def _check_XY(self, X, Y):
        X = self._check_X(X)
        Y, labels_given = check.targets(Y, X.shape[0], self.n_outputs, self.dtype)
        return X, Y, labels_given

    def _reference_kwargs(self):
        return {} if self.is_mlp else {"layers": self._layers}

    def forward(self, X: ArrayLike) -> list[np.ndarray]:
        """Every layer's output for X: ``[a¹, ..., aᴸ]`` (the last is ``predict_proba``),
        each ``(n, width)`` with images flattened in ``(C, H, W)`` order."""
        X = self._check_X(X)
        if isinstance(X, check.CSR):
            X = X.toarray()
        if self.backend == "numpy":
            return reference.forward(self._weights, self._biases, self.activations, X,
                                     layers=self._layers)[1][1:]
        # One block of all n rows through the inference kernel leaves every layer's output
        # in the workspace (the last one activated): copy them out.
        n = X.shape[0]
        ws = _Workspace(self, n)
        out = np.empty((n, self.n_outputs), dtype=self.dtype)
        name = self.dtype.name
        with _kernel_lock:
            _kernels()[5].infer_range(self._params, self._table, self._cost_code(),
                                      self._input(X), _NO_TARGETS[name], _NO_WEIGHTS[name],
                                      np.arange(n), out, ws.work, 0, 0, n, n)
        outputs, start = [], 0
        for layer in self._layers:
            outputs.append(ws.work.acts[0, start:start + n * layer.n_out].reshape(
                n, layer.n_out).copy())
            start += n * layer.n_out
        return outputs

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """The network's output ŷ for every row of X, shape ``(n, n_outputs)``."""
        X = self._check_X(X)
        if self.backend == "numpy":
            return reference.predict_proba(self._weights, self._biases, self.activations,
                                           _dense(X), **self._reference_kwargs())
        return self._infer(X)[1]

    def _infer(self, X, Y=None, sample_weight=None):
        """``(summed data cost or 0, ŷ)`` of checked X (and targets Y) on the kernels: rows
        split between threads, each working through blocks of ``PREDICT_BLOCK``."""
        n = X.shape[0]
        parts = 1 if n < 2 * MIN_PREDICT_PART else max(1, min(_threads_now(),
                                                                n // MIN_PREDICT_PART))
        block = min(PREDICT_BLOCK, -(-n // parts))
        ws = self._workspace(block, parts)
        out = np.empty((n, self.n_outputs), dtype=self.dtype)
        name = self.dtype.name
        Y = _NO_TARGETS[name] if Y is None else Y
        weights = _NO_WEIGHTS[name] if sample_weight is None else sample_weight
        with _kernel_lock:
            if parts == 1:  # no thread pool to wake: a one-sample prediction is microseconds
                cost = _kernels()[5].infer_range(
                    self._params, self._table, self._cost_code(), self._input(X), Y, weights,
                    ws.index(n), out, ws.work, 0, 0, n, block)
            else:
                cost = self._run(X, Y, weights, ws.index(n), 0, 0, 0, _infer_settings(),
                                 parts, ws, out=out, block=block)[0]
        return cost, out

    def _run(self, X, Y, weights, order, batch_size, first, stop, cfg, parts, ws, state=None,
             out=None, block=0, grads=None):
        """``training.run`` with this network's arrays (see there for the three modes)."""
        name = self.dtype.name
        step, state1, state2 = (0, _NO_WEIGHTS[name], _NO_WEIGHTS[name]) if state is None \
            else (state["step"], state["state1"], state["state2"])
        run = _kernels()[4].run
        args = (self._params, self._table, self._cost_code(), self._input(X), Y, weights,
                order, batch_size, first, stop, cfg, step, state1, state2, parts, ws.work,
                ws.Y_parts, ws.w_parts, _NO_GRADS[name] if grads is None else grads,
                _NO_TARGETS[name] if out is None else out, block)
        return run(*args)
        return run(*args)

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
             sample_weight: ArrayLike | None = None) -> float:
        """Mean cost over the samples (weighted by ``sample_weight``) plus ``l2/2 Σ‖W‖²``."""
        l2 = check.real("l2", l2, low=0)
        X, Y, _ = self._check_XY(X, Y)
        sample_weight = check.sample_weights(sample_weight, X.shape[0], self.dtype)
        return self._cost_and_output(X, Y, sample_weight)[0] + reference.l2_penalty(
            self._weights, l2)

    def _cost_and_output(self, X, Y, sample_weight=None):
        """``(mean data cost, ŷ)`` from one forward pass over checked X and target rows Y."""
        if self.backend == "numpy":
            zs, acts = reference.forward(self._weights, self._biases, self.activations,
                                         _dense(X), **self._reference_kwargs())
            return reference.batch_loss(self.cost, zs[-1], acts[-1], Y, sample_weight), acts[-1]
        total, out = self._infer(X, Y, sample_weight)
        return total / (X.shape[0] if sample_weight is None else float(np.sum(sample_weight))), out

    def gradients(self, X: ArrayLike, Y: ArrayLike, l2: float = 0.0,
                  sample_weight: ArrayLike | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """``[(∂C/∂W, ∂C/∂b), ...]`` of ``loss(X, Y, l2, sample_weight)``, shaped like the
        parameters."""
        l2 = check.real("l2", l2, low=0)
        X, Y, _ = self._check_XY(X, Y)
        sample_weight = check.sample_weights(sample_weight, X.shape[0], self.dtype)
        if self.backend == "numpy":
            return reference.gradients(self._weights, self._biases, self.activations,
                                       self.cost, _dense(X), Y, l2,
                                       sample_weight=sample_weight,
                                       **self._reference_kwargs())
        grads = self._flat_gradients(X, Y, l2, sample_weight)
        return [(np.ascontiguousarray(dW), db.copy()) for dW, db in zip(*self._param_views(grads))]

    def _flat_gradients(self, X, Y, l2, sample_weight=None):
        """The gradient of the mean (weighted) cost plus ``l2/2 Σ‖W‖²`` over all of X in the
        flat parameter layout (what an optimizer such as L-BFGS wants), from one compiled
        pass split between threads."""
        n = X.shape[0]
        parts = max(1, min(_threads_now(), n // MIN_PART_ROWS))
        ws = self._workspace(-(-n // parts), parts)
        weights = _NO_WEIGHTS[self.dtype.name] if sample_weight is None else sample_weight
        cfg = _layout().Settings(**dict(_infer_settings()._asdict(),
                                        optimizer=_kernels()[4].GRADIENT, l2=float(l2)))
        with _kernel_lock:
            self._run(X, Y, weights, ws.index(n), n, 0, 1, cfg, parts, ws, grads=ws.grads)
            return ws.grads[0].copy()

    def evaluate(self, X: ArrayLike, y: ArrayLike) -> dict[str, float]:
        """``{"loss": mean cost, "accuracy": fraction classified right}`` on (X, y): argmax
        matches, or for ``binary_cross_entropy`` every output on its target's side of 0.5."""
        X, Y, _ = self._check_XY(X, y)
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
        if self.backend == "numba":
            from .io import check_training_state

            check_training_state(state, self._params.size, self.dtype)
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

    @classmethod
    def load(cls, path: str | os.PathLike, backend: str = "numba") -> Network:
        """Read a network saved by :meth:`save`: a missing file raises FileNotFoundError, a bad
        or foreign one ValueError."""
        from .io import load_network

        return load_network(cls, path, backend=backend)

    # --- training --------------------------------------------------------------------------

    def fit(self, X: ArrayLike, y: ArrayLike, epochs: int = 10, batch_size: int = 64,
            learning_rate: float = 0.1, optimizer: str = "sgd", l2: float = 0.0,
            dropout: float = 0.0, validation_data: tuple | None = None, shuffle: bool = True,
            verbose: bool = True, *, momentum: float = 0.9, nesterov: bool = False,
            beta1: float = 0.9, beta2: float = 0.999, epsilon: float = 1e-8,
            schedule: str | Callable = "constant", validation_split: float = 0.0,
            early_stopping: int = 0, callback: Callable | None = None, initial_epoch: int = 0,
            sample_weight: ArrayLike | None = None, _l2_per_weight: bool = False,
            _stop_when_exploding: bool = True) -> History:
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

        ``sample_weight`` (one non-negative number per sample) makes every batch's cost the
        weighted mean ``Σ wᵢ Cᵢ / Σ w`` over its samples. (``_l2_per_weight``, for the
        scikit-learn drop-ins: each batch's L2 term is divided by its weight sum, as
        scikit-learn's ``alpha``; ``_stop_when_exploding=False`` stops only on non-finite
        values, as scikit-learn does.)

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
        if callback is not None and not callable(callback):
            raise ValueError(f"callback must be callable as callback(epoch, history), got "
                             f"{callback!r}")
        _warn_if_unscaled(X)
        X, Y, labels_given = self._check_XY(X, y)
        sample_weight = check.sample_weights(sample_weight, X.shape[0], self.dtype)
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
            kept = np.sort(held_out[n_val:])
            X, Y = X[kept], Y[kept]
            if sample_weight is not None:
                sample_weight = sample_weight[kept]
            validation_data = (X_val, Y_val)
        if early_stopping and validation_data is None:
            raise ValueError("early_stopping needs validation_data or validation_split")
        n = X.shape[0]
        batch_size = min(batch_size, n)
        settings = dict(optimizer=optimizer, lr=learning_rate, momentum=momentum,
                        nesterov=bool(nesterov), beta1=beta1, beta2=beta2, eps=epsilon, l2=l2,
                        l2_per_weight=bool(_l2_per_weight), dropout=dropout,
                        key=self._dropout_key)
        trainer = (_ReferenceTrainer if self.backend == "numpy" else _CompiledTrainer)(
            self, X, Y, batch_size, optimizer, settings, sample_weight)
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
                    scores = self.evaluate(X_val, Y_val)
                    history.val_loss.append(scores["loss"])
                    history.val_accuracy.append(scores["accuracy"])
                    line += (f"  val_loss {scores['loss']:.4f}  "
                             f"val_accuracy {scores['accuracy']:.4f}")
                # The epoch's loss is measured before each update, so the last update can
                # break the weights while the loss still looks fine: check both. A loss
                # far above the starting network's is divergence too, before it overflows.
                exploding = start_loss is not None and history.loss[-1] > DIVERGED * (
                    start_loss + 1)
                if exploding or not (math.isfinite(history.loss[-1])
                                     and np.isfinite(self._params).all()):
                    self._params[...] = epoch_start
                    raise FloatingPointError(
                        f"training diverged at epoch {epoch + 1} (loss {history.loss[-1]:.4g}"
                        + ("" if start_loss is None else f", {start_loss:.4g} at the start")
                        + f"); lower the learning rate. The parameters from before epoch "
                        f"{epoch + 1} were kept")
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


def _threads_now():
    import numba

    return numba.get_num_threads()


class _ReferenceTrainer:
    def prepare(self, verbose):
        pass  # nothing to compile

    def __init__(self, net, X, Y, batch_size, optimizer, settings, sample_weight):
        self.net, self.X, self.Y, self.sample_weight = net, _dense(X), Y, sample_weight
        self.batch_size, self.optimizer, self.settings = batch_size, optimizer, settings
        self.state = net._optimizer_state_for(optimizer, dict)

    def epoch(self, order, lr, bar):
        net, s = self.net, self.settings
        cost, accuracy = reference.train_epoch(
            net._weights, net._biases, net.activations, net.cost, self.X, self.Y, order,
            self.batch_size, lr, s["l2"], self.optimizer, self.state, s["dropout"], s["key"],
            layers=None if net.is_mlp else net._layers, sample_weight=self.sample_weight,
            l2_per_weight=s["l2_per_weight"], momentum=s["momentum"],
            nesterov=s["nesterov"], beta1=s["beta1"], beta2=s["beta2"], epsilon=s["eps"])
        bar.update(order.size)
        return cost, accuracy


class _CompiledTrainer:
    """Workspaces for one fit (kept on the network, and reused by the next fit when they
    are big enough); each call trains a chunk of batches."""

    def __init__(self, net, X, Y, batch_size, optimizer, settings, sample_weight):
        self.training = _kernels()[4]
        self.net, self.X, self.Y, self.batch_size = net, X, Y, batch_size
        self.settings = dict(settings, optimizer=self.training.CODES[optimizer])
        self.sample_weight = (_NO_WEIGHTS[net.dtype.name] if sample_weight is None
                              else sample_weight)
        self.weight_total = X.shape[0] if sample_weight is None else None
        # Threads share each batch; a part below MIN_PART_ROWS samples isn't worth a thread.
        self.parts = max(1, min(_threads_now(), batch_size // MIN_PART_ROWS))
        rows = -(-batch_size // self.parts)
        self.ws = net._workspace(rows, self.parts)
        # state1: velocity or Adam's first moment; state2: Adam's second; step: updates made.
        self.state = net._optimizer_state_for(optimizer, lambda: {
            "state1": np.zeros_like(net._params), "state2": np.zeros_like(net._params),
            "step": 0})

    def prepare(self, verbose):
        """Compile the kernels for this network's dtype (or load them from numba's cache)
        before the progress bar starts; the first run in a fresh environment compiles for a
        while, and says so with the time elapsed instead of showing a frozen bar."""
        net = self.net
        ready = bool(self.training.run.signatures)
        # (short enough for one 80-column line: the count rewrites it in place)
        ticker = None if ready or not verbose else _Ticker(
            "fastmlp: preparing kernels (compiled on first run, then cached)")
        try:
            cfg = _layout().Settings(**dict(self.settings, lr=0.0))
            with _kernel_lock:  # zero batches: compiles or loads, trains nothing
                net._run(self.X, self.Y, self.sample_weight, np.arange(0), self.batch_size, 0,
                         0, cfg, self.parts, self.ws, self.state, grads=self.ws.grads)
        finally:
            if ticker is not None:
                ticker.stop()

    def epoch(self, order, lr, bar):
        net, ws = self.net, self.ws
        cfg = _layout().Settings(**dict(self.settings, lr=lr))
        n_batches = -(-order.size // self.batch_size)
        per_call = max(1, CHUNK_SAMPLES // self.batch_size)
        total, correct = 0.0, 0
        for first in range(0, n_batches, per_call):
            stop = min(n_batches, first + per_call)
            with _kernel_lock:
                cost, right = net._run(self.X, self.Y, self.sample_weight, order,
                                       self.batch_size, first, stop, cfg, self.parts, ws,
                                       self.state, grads=ws.grads)
            self.state["step"] += stop - first
            total += cost
            correct += right
            bar.update(min(order.size, stop * self.batch_size) - first * self.batch_size)
        weight_total = order.size if self.sample_weight.size == 0 else float(
            np.sum(self.sample_weight[order]))
        return total / weight_total, correct / order.size


class _Workspace:
    """Every buffer a compiled call needs for up to ``rows`` samples per part, allocated
    once and reused by every batch (and by later calls). Each of ``parts`` threads has its
    own row of every 2-D buffer."""

    def __init__(self, net, rows, parts=1):
        self.rows, self.parts, self.params = rows, parts, net._params
        from .kernels.conv import conv_work_size as conv

        layers, table = net._layers, net._table
        widths = [layer.n_out for layer in layers]
        first = layers[0]
        n_in = first.n_in
        dense = [layer for layer in layers if layer.kind == "dense"]

        def buffer(size, dtype=net.dtype):
            return np.empty((parts, max(1, int(size))), dtype=dtype)

        # The first layer's input batch in CSR form, and transposed (dense first layers only).
        sparse = n_in if first.kind == "dense" else 0
        self.work = _layout().Work(
            acts=buffer(sum(widths) * rows),
            xbuf=buffer(rows * n_in),  # a gathered dense batch
            # One dense layer's transposes at a time: its input batch and δ, or its weights.
            scratch=buffer(max([max(d.n_in * rows + d.n_out * rows, d.n_in * d.n_out)
                                for d in dense])),
            csr_indptr=buffer(rows + 1, np.int64),
            csr_indices=buffer(rows * sparse, np.int32),
            csr_data=buffer(rows * sparse),
            sp_indptr=buffer(sparse + 1, np.int64),
            sp_indices=buffer(rows * sparse, np.int32),
            sp_data=buffer(rows * sparse),
            delta_a=buffer(max(widths) * rows),
            delta_b=buffer(max(widths) * rows),
            argmax=buffer(sum(layer.n_out for layer in layers if layer.kind == "pool") * rows,
                          np.int32),
            conv=buffer(max([conv(row, rows) for row, layer in zip(table, layers)
                             if layer.kind == "conv"], default=0)),
            ident=np.arange(max(rows, n_in), dtype=np.int64))
        self.Y_parts = buffer(rows * net.n_outputs)
        self.w_parts = buffer(rows)
        self._grads = None
        self._index = np.arange(0)

    @property
    def grads(self):
        """One gradient vector per part (allocated on first use: inference needs none)."""
        if self._grads is None:
            self._grads = np.empty((self.parts, self.params.size), self.params.dtype)
        return self._grads

    def index(self, n):
        """``arange(n)``, kept: the row numbers of a prediction."""
        if self._index.size < n:
            self._index = np.arange(n, dtype=np.int64)
        return self._index[:n]


class _Ticker:
    """A line on stderr that counts the seconds until :meth:`stop` (from its own thread:
    numba compiles in LLVM with the GIL released). Silent when stopped within ``quiet``
    seconds (loading compiled kernels from the cache takes about one)."""

    def __init__(self, text, every=1.0, quiet=2.0):
        self.text, self.every, self.quiet = text, every, quiet
        self.started = time.perf_counter()
        self.shown = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        if self._done.wait(self.quiet):
            return
        while True:
            self.shown = True
            print(f"\r{self.text}: {time.perf_counter() - self.started:.0f} s", end="",
                  file=sys.stderr, flush=True)
            if self._done.wait(self.every):
                return

    def stop(self):
        self._done.set()
        self._thread.join()
        if self.shown:
            print(f"\r{self.text}: done in {time.perf_counter() - self.started:.0f} s",
                  file=sys.stderr, flush=True)


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
