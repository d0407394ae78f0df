"""The worker side of ``fastmlp bench``: one contender at one thread count, alone in a process.

``fastmlp bench`` (the parent, :mod:`fastmlp.bench`) starts one ``python -m
fastmlp._bench_worker`` per (contender, thread count) and drives them over pipes, one JSON
object per line. This module imports only the standard library, numpy and
:mod:`fastmlp.layers` (numpy only, no numba) at the top: a worker imports its own
contender's library and nothing of the others' (a torch, scikit-learn or onnxruntime worker
never loads numba or fastmlp's kernels, a fastmlp worker never loads torch or onnxruntime),
and it changes no environment variable — the parent gives each worker its environment.

Contenders: ``numba`` and ``numpy`` (fastmlp's two backends), ``torch``, ``sklearn`` and
``onnxruntime``, which is inference only (:class:`OnnxModel`: the fastmlp network exported
to ONNX; it has no training).

Protocol (stdin -> stdout, one line each way): the first line is the set-up
``{"contender", "threads", "data", "lr", "seed"}``; the worker imports its library, sets its
threads, loads the data and answers ``{"ok": true, "pid", "threads", "versions"}``. Then
operations, each answered by one line:

* ``{"op": "prepare", "config", "sizes", "batch_size"}``: build the model, train one warm-up
  epoch on up to WARMUP_SAMPLES samples (numba compiles or loads its cache here; untimed;
  an inference-only contender instead checks its probabilities against fastmlp's on
  CHECK_ROWS test rows), then predict once. ``sizes`` is a list of dense widths (an MLP,
  ``[784, 128, 10]``) or, for a CNN, a list that also holds layer tokens in the CLI's
  ``--layers`` syntax, ``[784, "conv16k5p2", "pool2", "conv32k5p2", "pool2", 128, 10]``:
  the 784 inputs are then one ``(1, 28, 28)`` image (:data:`IMAGE`), reshaped inside every
  timed call.
* ``{"op": "epoch", "config"}`` -> ``{"seconds"}``: the wall time of the whole user call that
  trains one epoch on all the data (an error for an inference-only contender).
* ``{"op": "predict", "config", "rows", "calls"}`` -> ``{"seconds": [...]}``: the wall time of
  each whole ``predict_proba`` call on the first ``rows`` test rows.
* ``{"op": "proba", "config", "rows"}`` -> ``{"proba": [[...], ...]}``: the probabilities
  themselves, on the first ``rows`` test rows (for tests).
* ``{"op": "sgemm"}`` -> ``{"gflops"}``; ``{"op": "info"}`` -> loaded modules, thread state;
  ``{"op": "sklearn_fit", "params"}`` -> ``{"seconds", "accuracy"}``; ``{"op": "quit"}``.

Errors are answered as ``{"error": text}`` and the worker goes on.
"""

import json
import math
import os
import sys
import time
import traceback
import warnings

import numpy as np

from fastmlp import layers

WARMUP_SAMPLES = 8192  # the untimed warm-up epoch runs on at most this many samples
N_CLASSES = 10
# Modules whose presence in a worker is reported, to show that contenders stay apart.
WATCHED_MODULES = ("numba", "fastmlp.network", "torch", "sklearn", "onnxruntime")
IMAGE = (1, 28, 28)  # the shape of a CNN's 784 inputs (MNIST)
CHECK_ROWS = 64  # test rows on which an inference-only contender is checked against fastmlp


# --- architectures ------------------------------------------------------------------------------
# A CNN arrives as tokens of fastmlp's --layers syntax; fastmlp.layers reads them (parse) and
# works out every layer's shapes (plan). fastmlp.layers imports numpy and fastmlp._layout
# only, never numba, so every worker may use it (tests/test_bench.py checks that).


def is_cnn(sizes):
    """True when ``sizes`` holds a layer token (a string) besides dense widths."""
    return any(isinstance(s, str) for s in sizes)


def network_specs(sizes, image=IMAGE):
    """``sizes`` as the list ``fastmlp.Network`` takes: an MLP's ints unchanged; a CNN's
    784 inputs as one ``image`` shape, then its tokens parsed by ``fastmlp.layers.parse``
    (``[(1, 28, 28), Conv2D(16, 5, padding=2), MaxPool2D(2), ..., 128, 10]``). Raises
    ValueError for a malformed token or a CNN whose input is not ``prod(image)``."""
    sizes = list(sizes)
    if len(sizes) < 2:
        raise ValueError(f"need an input and at least one layer, got {sizes!r}")
    first = sizes[0]
    if isinstance(first, (str, bool)):
        raise ValueError(f"the first entry is the input size, got {first!r}")
    if not is_cnn(sizes):
        return sizes
    if first != math.prod(image):
        raise ValueError(f"a CNN's input is one {'x'.join(map(str, image))} image: "
                         f"{math.prod(image)} inputs, got {first}")
    return [tuple(image)] + layers.parse(",".join(map(str, sizes[1:])))


def architecture(sizes, image=IMAGE):
    """The :class:`fastmlp.layers.Layer` records of ``sizes`` (``kind``, ``in_shape``,
    ``out_shape``, ``spec``), every geometry checked by ``fastmlp.layers.plan``: the shapes
    fastmlp, PyTorch and onnxruntime all run, and the FLOP count uses."""
    return layers.plan(network_specs(sizes, image))


# --- the contenders: each method is the whole call a user makes -------------------------------


class FastmlpModel:
    """``Network(sizes, backend).fit(X, y, epochs=1, ...)`` and ``predict_proba``: input
    checks, the CSR copy of X and the workspaces are part of every call, as for a user."""

    trains = True

    def __init__(self, backend, sizes, batch_size, lr, seed):
        from fastmlp.network import Network

        # [(1, 28, 28), Conv2D(...), MaxPool2D(...), ..., 128, 10] for a CNN; X stays
        # (n, 784): fit and predict_proba take flat rows in (C, H, W) order.
        self.net = Network(network_specs(sizes), backend=backend, seed=seed)
        self.batch_size, self.lr = batch_size, lr

    def train_epoch(self, X, y):
        self.net.fit(X, y, epochs=1, batch_size=self.batch_size, learning_rate=self.lr,
                     verbose=False)

    def predict_proba(self, X):
        return self.net.predict_proba(X)


class TorchModel:
    """nn.Sequential(Linear, ReLU, ..., Linear), CrossEntropyLoss (mean), SGD(momentum=0).
    ``train_epoch`` takes the numpy arrays, as ``fit`` does: from_numpy, a ``randperm`` order,
    batches by indexing (no DataLoader), forward, backward, step.

    A CNN is the exact equivalent of fastmlp's: ``Conv2d(C, F, k, stride, padding), ReLU``
    per conv (``Conv2d, BatchNorm2d, ReLU`` when a BatchNorm follows it: fastmlp's BatchNorm
    takes the activation of the layer it normalises), ``MaxPool2d`` / ``AvgPool2d(size,
    stride)`` per pool, ``Dropout(rate)`` per dropout, ``Flatten`` before the first dense
    layer, then ``Linear, ReLU, ..., Linear`` (``Linear, BatchNorm1d, ReLU`` likewise); the
    (n, 784) rows are viewed as (n, 1, 28, 28) inside every timed call (a view: no copy).
    The layers and their shapes are ``fastmlp.layers.plan``'s (:func:`architecture`)."""

    trains = True

    def __init__(self, sizes, batch_size, lr, seed):
        import torch
        from torch import nn

        torch.manual_seed(seed)
        modules, plan = [], architecture(sizes)
        n_weighted = sum(layer.has_weights for layer in plan)
        # fastmlp's default activations (ReLU, a softmax output that CrossEntropyLoss holds),
        # each on the row that applies it: a layer that a BatchNorm follows hands it over
        acts = layers.row_activations(plan, ["relu"] * (n_weighted - 1) + ["softmax"])
        flat = not is_cnn(sizes)
        for k, (layer, act) in enumerate(zip(plan, acts)):
            spec = layer.spec
            if layer.kind == "conv":
                modules.append(nn.Conv2d(layer.in_shape[0], layer.out_shape[0],
                                         spec.kernel_size, stride=spec.stride,
                                         padding=spec.padding))
            elif layer.kind in ("pool", "avgpool"):
                pool = nn.MaxPool2d if layer.kind == "pool" else nn.AvgPool2d
                modules.append(pool(spec.size, stride=spec.stride))
            elif layer.kind == "dropout":
                modules.append(nn.Dropout(spec.rate))
            elif layer.kind == "batchnorm":
                norm = nn.BatchNorm2d if plan[k - 1].kind == "conv" else nn.BatchNorm1d
                modules.append(norm(layer.out_shape[0], eps=spec.eps, momentum=spec.momentum))
            else:
                if not flat:
                    modules.append(nn.Flatten())  # (C, H, W) order, as fastmlp's
                    flat = True
                modules.append(nn.Linear(layer.n_in, layer.n_out))
            if act == "relu":
                modules.append(nn.ReLU())
        self.image = IMAGE if is_cnn(sizes) else None
        self.torch = torch
        self.model = nn.Sequential(*modules)
        self.loss = nn.CrossEntropyLoss()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=0.0)
        self.batch_size = batch_size

    def train_epoch(self, X, y):
        torch, model, loss, opt, b = self.torch, self.model, self.loss, self.opt, self.batch_size
        Xt = self._tensor(X)
        yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
        model.train()
        order = torch.randperm(Xt.shape[0])
        for start in range(0, Xt.shape[0], b):
            idx = order[start:start + b]
            opt.zero_grad(set_to_none=True)
            loss(model(Xt[idx]), yt[idx]).backward()
            opt.step()

    def _tensor(self, X):
        Xt = self.torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
        return Xt if self.image is None else Xt.view(-1, *self.image)

    def predict_proba(self, X):
        torch = self.torch
        self.model.eval()
        with torch.no_grad():
            return torch.softmax(self.model(self._tensor(X)), dim=1).numpy()


class SklearnModel:
    """MLPClassifier(solver="sgd", momentum=0, alpha=0, tol=0, shuffle=True); one epoch is one
    ``partial_fit`` (its input validation included; the optimizer state carries over)."""

    trains = True

    def __init__(self, sizes, batch_size, lr, seed):
        from sklearn.neural_network import MLPClassifier

        if is_cnn(sizes):
            raise ValueError("scikit-learn has no convolutional network")
        self.model = MLPClassifier(
            hidden_layer_sizes=tuple(sizes[1:-1]), activation="relu", solver="sgd",
            alpha=0.0, batch_size=batch_size, learning_rate="constant",
            learning_rate_init=lr, momentum=0.0, nesterovs_momentum=False, max_iter=1,
            tol=0.0, shuffle=True, random_state=seed, early_stopping=False)
        self.classes = np.arange(sizes[-1])

    def train_epoch(self, X, y):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model.partial_fit(X, y, classes=self.classes)

    def predict_proba(self, X):
        return self.model.predict_proba(X)


class OnnxModel:
    """onnxruntime running the fastmlp network: inference only.

    The network is ``Network(sizes, backend="numpy", seed=seed)`` — the same seed and
    architecture, hence the same initial weights, as the fastmlp contenders' (the numpy
    backend never loads numba) — exported in memory by ``fastmlp.export.onnx_model`` and
    loaded with ``onnxruntime.InferenceSession(bytes, options, providers=[...])`` on the
    ``CPUExecutionProvider``, ``options`` carrying the worker's thread count
    (:func:`session_options`, made by :func:`set_threads`).
    ``predict_proba`` is the whole call a user makes: ``session.run(None, {input: X})`` on the
    float32 array, the probabilities out (a CNN's (n, 784) rows viewed as (n, 1, 28, 28)
    first, as PyTorch's are: no copy). :meth:`check` compares it with the network's own
    ``predict_proba``."""

    trains = False
    TOLERANCE = 1e-5  # largest difference allowed from fastmlp's probabilities

    def __init__(self, sizes, seed, options=None):
        import onnxruntime

        from fastmlp.export import onnx_model
        from fastmlp.network import Network

        self.net = Network(network_specs(sizes), backend="numpy", seed=seed)
        model = onnx_model(self.net, "float32").SerializeToString()
        self.session = onnxruntime.InferenceSession(
            model, options if options is not None else session_options(1),
            providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.image = self.net.input_shape

    def train_epoch(self, X, y):
        raise ValueError("onnxruntime is an inference-only contender: it does not train")

    def predict_proba(self, X):
        if self.image is not None:
            X = X.reshape(-1, *self.image)
        return self.session.run(None, {self.input_name: X})[0]

    def check(self, X):
        """Raise ValueError unless onnxruntime's probabilities on ``X`` equal the fastmlp
        network's (its numpy backend) to :data:`TOLERANCE`; returns the largest difference."""
        ours = self.net.predict_proba(X)
        theirs = self.predict_proba(np.ascontiguousarray(X, dtype=np.float32))
        diff = float(np.max(np.abs(ours - theirs))) if ours.size else 0.0
        if not diff <= self.TOLERANCE:
            raise ValueError(f"onnxruntime's probabilities differ from fastmlp's by {diff:.3g}")
        return diff


def session_options(threads):
    """onnxruntime's SessionOptions with ``threads`` intra- and inter-op threads (the rest as
    onnxruntime's defaults: full graph optimization, sequential execution)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = threads
    return options


def make_model(contender, sizes, batch_size, lr, seed=0, threads=1):
    if contender in ("numba", "numpy"):
        return FastmlpModel(contender, sizes, batch_size, lr, seed)
    if contender == "torch":
        return TorchModel(sizes, batch_size, lr, seed)
    if contender == "sklearn":
        return SklearnModel(sizes, batch_size, lr, seed)
    if contender == "onnxruntime":  # the options set_threads made (and thread_state reads)
        options = getattr(set_threads, "onnxruntime", None) or session_options(threads)
        return OnnxModel(sizes, seed, options)
    raise ValueError(f"unknown contender {contender!r}")


# --- threads ------------------------------------------------------------------------------------


def set_threads(contender, n):
    """Give this process's libraries ``n`` threads; returns what was set, for the report.

    Called after the contender's library is imported, so that threadpoolctl sees the BLAS /
    OpenMP libraries it loaded."""
    applied = {}
    if contender == "numba":
        import fastmlp

        fastmlp.set_num_threads(n)
    elif contender == "torch":
        import torch

        torch.set_num_threads(n)
    elif contender == "onnxruntime":  # every session this worker makes gets these options
        set_threads.onnxruntime = session_options(n)
        applied["onnxruntime"] = "SessionOptions.intra_op_num_threads = inter_op_num_threads"
    try:
        from threadpoolctl import threadpool_limits

        # Kept for the life of the process: the limit holds until it is restored.
        set_threads.limits = threadpool_limits(limits=n)
        applied["blas"] = "threadpoolctl"
    except ImportError:
        applied["blas"] = "not limited (threadpoolctl not installed)"
    return applied


def thread_state(contender):
    """The thread counts in force now, read back from each library."""
    state = {}
    if contender == "numba":
        import fastmlp

        state["numba"] = fastmlp.get_num_threads()
        import numba

        state["numba_threading_layer"] = numba.threading_layer()
    if contender == "torch":
        import torch

        state["torch"] = torch.get_num_threads()
    if contender == "onnxruntime":
        options = getattr(set_threads, "onnxruntime", None)
        if options is not None:
            state["onnxruntime"] = options.intra_op_num_threads
            state["onnxruntime_inter_op"] = options.inter_op_num_threads
    try:
        from threadpoolctl import threadpool_info

        info = threadpool_info()
        state["blas"] = sorted({lib["num_threads"] for lib in info})
        # the kernels OpenBLAS chose (or was told to use: OPENBLAS_CORETYPE)
        state["blas_arch"] = sorted({str(lib.get("architecture")) for lib in info
                                     if lib.get("internal_api") == "openblas"})
    except ImportError:
        pass
    return state


def versions(contender):
    v = {"python": ".".join(map(str, sys.version_info[:3])), "numpy": np.__version__}
    if contender in ("numba", "numpy"):
        import fastmlp

        v["fastmlp"] = fastmlp.__version__
    if contender == "numba":
        import numba

        v["numba"] = numba.__version__
    if contender == "torch":
        import torch

        v["torch"] = torch.__version__
    if contender == "sklearn":
        import sklearn

        v["sklearn"] = sklearn.__version__
    if contender == "onnxruntime":
        import onnx
        import onnxruntime

        import fastmlp

        v.update(fastmlp=fastmlp.__version__, onnxruntime=onnxruntime.__version__,
                 onnx=onnx.__version__)
    return v


# --- measurements -------------------------------------------------------------------------------


def sgemm_gflops(n=2048, repeats=5):
    """GFLOP/s of numpy's float32 ``n x n`` matmul, best of ``repeats`` after one warm-up."""
    rng = np.random.default_rng(0)
    A = rng.random((n, n), dtype=np.float32)
    B = rng.random((n, n), dtype=np.float32)
    C = np.empty((n, n), dtype=np.float32)
    np.matmul(A, B, out=C)
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        np.matmul(A, B, out=C)
        best = min(best, time.perf_counter() - started)
    return 2.0 * n ** 3 / best / 1e9


def sklearn_fit(contender, params, X, y, X_test, y_test):
    """``MLPClassifier(**params).fit(X, y)``: fastmlp.sklearn's (numba) or scikit-learn's."""
    from sklearn.exceptions import ConvergenceWarning

    if contender == "numba":
        from fastmlp.sklearn import MLPClassifier
    else:
        from sklearn.neural_network import MLPClassifier
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if contender == "numba":  # numba compiles or loads its cache here, untimed
            MLPClassifier(**{**params, "max_iter": 1}).fit(X[:2000], y[:2000])
        started = time.perf_counter()
        model = MLPClassifier(**params).fit(X, y)
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "accuracy": float(model.score(X_test, y_test))}


class Worker:
    """The state of one worker process: its data and one model per configuration."""

    def __init__(self, setup):
        self.contender, self.threads = setup["contender"], setup["threads"]
        self.lr, self.seed = setup["lr"], setup.get("seed", 0)
        # Import the contender's library first, then set its threads, then load the data.
        if self.contender in ("numba", "numpy"):
            import fastmlp.network  # noqa: F401
        elif self.contender == "torch":
            import torch  # noqa: F401
        elif self.contender == "sklearn":
            import sklearn.neural_network  # noqa: F401
        elif self.contender == "onnxruntime":  # and what builds the graph; no numba
            import onnxruntime  # noqa: F401

            import fastmlp.export  # noqa: F401
            import fastmlp.network  # noqa: F401
        else:
            raise ValueError(f"unknown contender {self.contender!r}")
        self.applied = set_threads(self.contender, setup["threads"])
        with np.load(setup["data"]) as d:
            self.X, self.y = d["X"], d["y"]
            self.X_test, self.y_test = d["X_test"], d["y_test"]
        self.models = {}

    def hello(self):
        return {"ok": True, "pid": os.getpid(), "contender": self.contender,
                "threads": thread_state(self.contender), "applied": self.applied,
                "versions": versions(self.contender)}

    def handle(self, msg):
        op = msg.get("op")
        if op == "prepare":
            if msg["config"] not in self.models:
                model = make_model(self.contender, msg["sizes"], msg["batch_size"], self.lr,
                                   self.seed, self.threads)
                warm = min(self.X.shape[0], WARMUP_SAMPLES)
                if model.trains:
                    model.train_epoch(self.X[:warm], self.y[:warm])
                else:  # the same function as fastmlp's, checked on every run
                    model.check(self.X_test[:CHECK_ROWS])
                model.predict_proba(self.X_test[:1])
                model.predict_proba(self.X_test[:warm])
                self.models[msg["config"]] = model
            return {"ok": True}
        if op == "epoch":
            model = self.models[msg["config"]]
            X, y = self.X, self.y
            started = time.perf_counter()
            model.train_epoch(X, y)
            return {"seconds": time.perf_counter() - started}
        if op == "predict":
            model = self.models[msg["config"]]
            X = np.ascontiguousarray(self.X_test[:msg["rows"]])
            seconds = []
            for _ in range(msg.get("calls", 1)):
                started = time.perf_counter()
                model.predict_proba(X)
                seconds.append(time.perf_counter() - started)
            return {"seconds": seconds}
        if op == "proba":
            model = self.models[msg["config"]]
            X = np.ascontiguousarray(self.X_test[:msg["rows"]])
            return {"proba": np.asarray(model.predict_proba(X), dtype=np.float64).tolist()}
        if op == "sgemm":
            return {"gflops": sgemm_gflops(**msg.get("kwargs", {}))}
        if op == "info":
            return {"pid": os.getpid(), "threads": thread_state(self.contender),
                    "modules": [m for m in WATCHED_MODULES if m in sys.modules],
                    "env": {k: v for k, v in os.environ.items()
                            if k.startswith(("OMP_", "GOMP_", "KMP_", "MKL_", "OPENBLAS_",
                                             "NUMBA_NUM_THREADS", "NUMBA_THREADING"))}}
        if op == "sklearn_fit":
            return sklearn_fit(self.contender, msg["params"], self.X, self.y, self.X_test,
                               self.y_test)
        raise ValueError(f"unknown op {op!r}")


def main():
    # The protocol owns the real stdout; anything a library prints goes to stderr instead.
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def reply(obj):
        channel.write(json.dumps(obj) + "\n")

    line = sys.stdin.readline()
    try:
        worker = Worker(json.loads(line))
        reply(worker.hello())
    except Exception as e:  # noqa: BLE001 - reported to the parent, which stops
        traceback.print_exc()
        reply({"error": f"{type(e).__name__}: {e}"})
        return 1
    for line in sys.stdin:
        msg = json.loads(line)
        if msg.get("op") == "quit":
            reply({"ok": True})
            return 0
        try:
            reply(worker.handle(msg))
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            reply({"error": f"{type(e).__name__}: {e}"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
