"""The compiled backend: the Network's arrays handed to the kernels in :mod:`fastmlp.kernels`.

It has the same few methods as :class:`fastmlp.reference.ReferenceBackend` — ``forward``,
``predict``, ``gradient`` and ``trainer`` — so :class:`fastmlp.network.Network` validates
once and delegates without asking which backend it holds. Each mode is its own compiled
entry point (:func:`kernels.training.train`, :func:`kernels.training.gradient`,
:func:`kernels.inference.infer`): a process that only predicts compiles only the forward
pass. Workspaces are allocated once and reused by later calls; threads are the kernels'
business (:mod:`fastmlp.kernels.threads`).
"""

from __future__ import annotations

import sys
import threading
import time

import numpy as np

from . import _checks as check
from . import _layout as layout
from ._threads import kernel_call_guard, num_threads
from .layers import IMAGE_LAYERS, dropout_rates

# Samples per compiled call while training: the progress bar and Ctrl-C get a look-in this
# often, at a cost of one Python round trip per chunk.
CHUNK_SAMPLES = 8192
# Inference works through its rows in blocks of at most this many: big enough for each
# product to be split between threads, small enough for a block's activations to stay in
# cache.
PREDICT_BLOCK = 256
# The full-data gradient (Network.gradients, L-BFGS) works through its rows in chunks of
# this many; their gradients are added in order.
GRADIENT_CHUNK = 4096
# A workspace is refused past this share of physical memory (a huge model asking for one
# would otherwise die with a MemoryError, or take the machine down); prediction shrinks its
# blocks to stay under WORKSPACE_BUDGET instead.
WORKSPACE_SHARE = 0.5
WORKSPACE_BUDGET = 256 * 2**20
# A dense first layer reads a batch (or a block of predicted rows) through a CSR block when
# fewer than this fraction of its inputs are non-zero: MNIST's pixels are ~80 % zeros, and
# skipping them beats the denser product's better vectorization in training and for a few
# rows. Predicting many rows, the dense product wins (784-128-10, 10,000 MNIST rows, AMD
# EPYC: 19.4 ms dense vs 24.7 ms through CSR at 1 thread, 12.3 vs 20.2 ms at 2).
SPARSE_BELOW = 0.5
SPARSE_PREDICT_ROWS = 64  # predictions of fewer rows than this go through CSR when sparse

_NO_INDPTR = np.zeros(1, np.int64)
_NO_INDICES = np.zeros(0, np.int32)
_NO_WEIGHTS = {name: np.zeros(0, dtype) for name, dtype in check.DTYPES.items()}
_NO_TARGETS = {name: np.zeros((0, 1), dtype) for name, dtype in check.DTYPES.items()}


def kernels():
    """The kernel modules, imported on first use so that `import fastmlp` and the numpy
    backend never load numba: ``(training, inference, optimizers)``."""
    from .kernels import inference, optimizers, training

    return training, inference, optimizers


def physical_memory():
    """Bytes of physical memory (a generous bound where the OS does not say): the one probe
    behind every "more than this machine's memory" refusal (Network, workspaces, the CLI)."""
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 2**50


class Workspace:
    """Every buffer a compiled call needs for up to ``rows`` samples at a time, allocated once
    and reused by every batch (and by later calls); ``training`` adds the gradient vector."""

    def __init__(self, net, rows, training=False):
        self.rows, self.training, self.params = rows, training, net._params
        sizes = workspace_sizes(net, rows, training)
        dtype = net.dtype

        def buffer(name, kind=dtype):
            return np.empty(max(1, sizes[name]), dtype=kind)

        threads = num_threads()
        # (convolution and pooling: the code a network without them does not compile)
        images = any(isinstance(layer.spec, IMAGE_LAYERS) for layer in net._layers)
        self.work = layout.Work(
            acts=buffer("acts"), xbuf=buffer("xbuf"), scratch=buffer("scratch"),
            csr_indptr=buffer("csr_indptr", np.int64),
            csr_indices=buffer("csr_indices", np.int32), csr_data=buffer("csr_data"),
            sp_indptr=buffer("sp_indptr", np.int64), sp_indices=buffer("sp_indices", np.int32),
            sp_data=buffer("sp_data"), delta_a=buffer("delta"), delta_b=buffer("delta"),
            # None for a network without image layers (convolution, pooling): the kernels
            # then compile without their code (fastmlp.kernels.backprop, "compile what is
            # used"). Both or neither: one compiled variant for every image network.
            argmax=buffer("argmax", np.int32) if images else None,
            # one convolution workspace per thread (the split gives each thread its images
            # or filters)
            conv=np.empty((threads, max(1, sizes["conv"])), dtype=dtype) if images else None,
            ident=np.arange(max(rows, sizes["n_in"]), dtype=np.int64),
            grads=buffer("grads"), targets=buffer("targets"), weights=buffer("weights"),
            # None without BatchNorm layers (their code is then not compiled either)
            norm=buffer("norm", np.float64) if sizes["norm"] else None)
        self._index = np.arange(0)

    def index(self, n):
        """``arange(n)``, kept: the row numbers of a prediction."""
        if self._index.size < n:
            self._index = np.arange(n, dtype=np.int64)
        return self._index[:n]


def workspace_sizes(net, rows, training):
    """Elements of each workspace buffer for ``rows`` samples at a time (``"n_in"``: the
    input width; ``"conv"``: per thread)."""
    from .kernels.conv import conv_work_size

    layers = net._layers
    widths = [layer.n_out for layer in layers]
    first = layers[0]
    dense = [layer for layer in layers if layer.kind == "dense"]
    sparse = first.n_in if first.kind == "dense" else 0
    return {
        "n_in": first.n_in,
        "acts": sum(widths) * rows,
        "xbuf": rows * first.n_in,  # a gathered dense batch
        # One dense layer's transposes at a time: its input batch and δ, or its weights.
        "scratch": max(max(d.n_in * rows + d.n_out * rows, d.n_in * d.n_out) for d in dense),
        "csr_indptr": rows + 1, "csr_indices": rows * sparse, "csr_data": rows * sparse,
        "sp_indptr": sparse + 1, "sp_indices": rows * sparse, "sp_data": rows * sparse,
        "delta": max(widths) * rows,
        "argmax": sum(layer.n_out for layer in layers if layer.kind == "pool") * rows,
        "norm": sum(2 * layer.out_shape[0] for layer in layers if layer.kind == "batchnorm"),
        "conv": max([int(conv_work_size(row, rows)) for row, layer in zip(net._table, layers)
                     if layer.kind == "conv"], default=0),
        "grads": net._params.size if training else 0,
        "targets": rows * net.n_outputs if training else 0,
        "weights": rows if training else 0,
    }


def workspace_bytes(net, rows, training):
    sizes = workspace_sizes(net, rows, training)
    per_thread = sizes.pop("conv") * num_threads()
    sizes.pop("n_in")
    norm = sizes.pop("norm") * 8  # (float64)
    return (sum(sizes.values()) + sizes["delta"] + per_thread) * net.dtype.itemsize + norm


def check_workspace(net, rows, training, what):
    """Refuse (ValueError, with the memory it would need) a workspace that cannot fit;
    ``what`` names the work, e.g. ``"predicting"``."""
    need = workspace_bytes(net, rows, training)
    memory = physical_memory()
    if need > WORKSPACE_SHARE * memory:
        unit = "sample" if rows == 1 else "samples"
        raise ValueError(f"{what} {rows:,} {unit} at a time needs {need / 2**30:,.1f} GiB of "
                         f"workspace for this network, more than half of this machine's "
                         f"{memory / 2**30:,.1f} GiB: use a smaller "
                         f"{'batch_size' if training else 'network'}")


def _mode(training):
    """The kernels' forward mode for a pass that is not a training step."""
    return layout.BATCH_STATS if training else layout.PREDICT


def _has_batchnorm(net):
    return any(layer.kind == "batchnorm" for layer in net._layers)


class CompiledBackend:
    """The numba kernels over one Network's flat parameters and layer table."""

    def __init__(self, net):
        self.net = net
        self._local = threading.local()  # one inference workspace per Python thread
        self._most_rows = None  # rows per inference block (see _block)

    def _input(self, X, predicting=False, augment=None):
        """The first layer's input (a ``layout.Input``): checked dense rows, or a checked
        CSR matrix (scipy sparse input) read without densifying it. ``augment`` (training
        only: a ``layout.Augment``, dense rows) transforms every gathered batch."""
        net = self.net
        if isinstance(X, check.CSR):
            return layout.Input(np.empty((0, net.n_inputs), net.dtype), X.indptr, X.indices,
                                X.data, True, 0.0, None)
        dense = predicting and X.shape[0] >= SPARSE_PREDICT_ROWS
        return layout.Input(X, _NO_INDPTR, _NO_INDICES, _NO_WEIGHTS[net.dtype.name], False,
                            0.0 if dense else float(SPARSE_BELOW), augment)

    def _cost_code(self):
        return layout.COST_CODES[self.net.cost]

    def _block(self, n):
        """Rows per inference block: PREDICT_BLOCK, fewer for a network whose activations
        would not fit WORKSPACE_BUDGET (a huge-but-valid model predicts in small blocks);
        a network that cannot take even one row is refused. (Worked out once: a one-row
        prediction is microseconds.)"""
        if self._most_rows is None:
            check_workspace(self.net, 1, False, "predicting")
            per_row = max(1, workspace_bytes(self.net, 1, False))
            self._most_rows = max(1, min(PREDICT_BLOCK, WORKSPACE_BUDGET // per_row))
        return max(1, min(self._most_rows, n))

    def _workspace(self, rows):
        """The calling thread's inference workspace, grown (never shrunk: calls alternate)
        to ``rows``."""
        ws = getattr(self._local, "ws", None)
        if ws is None or ws.params is not self.net._params or ws.rows < rows:
            ws = self._local.ws = Workspace(self.net, max(rows, ws.rows if ws else 0))
        return ws

    def predict(self, X, Y=None, sample_weight=None, training=False):
        """``(summed data cost or 0, ŷ)`` of checked X (and targets Y); ``training``:
        BatchNorm normalises with X's own statistics (all rows in one block)."""
        net = self.net
        n = X.shape[0]
        if training:
            check_workspace(net, n, False, "a training-mode pass over")
            block = max(1, n)
            ws = Workspace(net, block)
        else:
            block = self._block(n)
            ws = self._workspace(block)
        out = np.empty((n, net.n_outputs), dtype=net.dtype)
        name = net.dtype.name
        with kernel_call_guard():
            cost = kernels()[1].infer(
                net._params, net._table, self._cost_code(), self._input(X, predicting=True),
                _NO_TARGETS[name] if Y is None else Y,
                _NO_WEIGHTS[name] if sample_weight is None else sample_weight,
                ws.index(n), out, ws.work, block, _mode(training), num_threads())
        return cost, out

    def forward(self, X, training=False):
        """Every layer's output for checked dense X: one block of all rows leaves them all in
        the workspace (the last one activated); copied out."""
        net = self.net
        n = X.shape[0]
        check_workspace(net, n, False, "forward() on")
        ws = Workspace(net, n)
        out = np.empty((n, net.n_outputs), dtype=net.dtype)
        name = net.dtype.name
        with kernel_call_guard():
            kernels()[1].infer(net._params, net._table, self._cost_code(), self._input(X),
                               _NO_TARGETS[name], _NO_WEIGHTS[name], ws.index(n), out,
                               ws.work, max(1, n), _mode(training), num_threads())
        outputs, start = [], 0
        for layer in net._layers:
            outputs.append(ws.work.acts[start:start + n * layer.n_out].reshape(
                n, layer.n_out).copy())
            start += n * layer.n_out
        return outputs

    def gradient(self, X, Y, l2, sample_weight=None):
        """The gradient of the mean (weighted) cost plus ``l2/2 Σ‖W‖²`` over all of X, in the
        flat parameter layout."""
        net = self.net
        n = X.shape[0]
        # (BatchNorm's statistics span the batch: all of X is one chunk then)
        chunk = max(1, n if _has_batchnorm(net) else min(n, GRADIENT_CHUNK))
        check_workspace(net, chunk, True, "a gradient over")
        ws = Workspace(net, chunk, training=True)
        out = np.empty_like(net._params)
        weights = _NO_WEIGHTS[net.dtype.name] if sample_weight is None else sample_weight
        with kernel_call_guard():
            kernels()[0].gradient(net._params, net._table, self._cost_code(), self._input(X),
                                  Y, weights, np.arange(n), chunk, float(l2), ws.work, out,
                                  num_threads())
        return out

    def trainer(self, X, Y, batch_size, optimizer, settings, sample_weight):
        return CompiledTrainer(self, X, Y, batch_size, optimizer, settings, sample_weight)

    def check_training_state(self, state):
        """ValueError unless ``state`` is a training state for these kernels' flat arrays."""
        from .io import check_training_state

        check_training_state(state, self.net._params.size, self.net.dtype)


class CompiledTrainer:
    """One fit's workspace (kept on the backend, and reused by the next fit when it is big
    enough) and optimizer state; each call trains a chunk of batches."""

    def __init__(self, backend, X, Y, batch_size, optimizer, settings, sample_weight):
        training, _, optimizers = kernels()
        net = backend.net
        self.backend, self.net, self.X, self.Y, self.batch_size = backend, net, X, Y, batch_size
        self.train = training.train
        # fit's dropout shorthand and the Dropout layers as one rate per layer
        rates = np.array(dropout_rates(net._layers, settings["dropout"]), dtype=np.float64)
        self.settings = {k: v for k, v in settings.items() if k not in ("dropout", "augment")}
        self.settings.update(optimizer=optimizers.CODES[optimizer], rates=rates)
        self.augment = settings.get("augment")
        self.sample_weight = (_NO_WEIGHTS[net.dtype.name] if sample_weight is None
                              else sample_weight)
        ws = getattr(backend, "_train_ws", None)
        if ws is None or ws.params is not net._params or ws.rows < batch_size:
            check_workspace(net, batch_size, True, "training on")
            ws = backend._train_ws = Workspace(net, batch_size, training=True)
        self.ws = ws
        # state1: velocity or Adam's first moment; state2: Adam's second; step: updates made.
        self.state = net._optimizer_state_for(optimizer, lambda: {
            "state1": np.zeros_like(net._params), "state2": np.zeros_like(net._params),
            "step": 0})

    def _call(self, order, first, stop, lr):
        net, state = self.net, self.state
        cfg = layout.Settings(**dict(self.settings, lr=lr))
        with kernel_call_guard():
            return self.train(net._params, net._table, self.backend._cost_code(),
                              self.backend._input(self.X, augment=self.augment), self.Y,
                              self.sample_weight, order, self.batch_size, first, stop, cfg,
                              state["step"], state["state1"], state["state2"], self.ws.work,
                              num_threads())

    def prepare(self, verbose):
        """Compile the training loop for this network's dtype (or load it from numba's
        cache) before the progress bar starts; the first run in a fresh environment compiles
        for a while, and says so with the time elapsed instead of showing a frozen bar.
        Returns the seconds it took."""
        started = time.perf_counter()
        ready = bool(self.train.signatures)
        # (short enough for one 80-column line: the count rewrites it in place)
        ticker = None if ready or not verbose else Ticker(
            "fastmlp: preparing kernels (compiled on first run, then cached)")
        try:
            self._call(np.arange(0), 0, 0, 0.0)  # zero batches: compiles or loads, trains nothing
        finally:
            if ticker is not None:
                ticker.stop()
        return time.perf_counter() - started

    def epoch(self, order, lr, bar):
        n_batches = -(-order.size // self.batch_size)
        per_call = max(1, CHUNK_SAMPLES // self.batch_size)
        total, correct = 0.0, 0
        for first in range(0, n_batches, per_call):
            stop = min(n_batches, first + per_call)
            cost, right = self._call(order, first, stop, lr)
            self.state["step"] += stop - first
            total += cost
            correct += right
            bar.update(min(order.size, stop * self.batch_size) - first * self.batch_size)
        weight_total = order.size if self.sample_weight.size == 0 else float(
            np.sum(self.sample_weight[order], dtype=np.float64))
        return total / weight_total, correct / order.size


class Ticker:
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
