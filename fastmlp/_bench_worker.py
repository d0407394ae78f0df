"""The worker side of ``fastmlp bench``: one contender at one thread count, alone in a process.

``fastmlp bench`` (the parent, :mod:`fastmlp.bench`) starts one ``python -m
fastmlp._bench_worker`` per (contender, thread count) and drives them over pipes, one JSON
object per line. This module imports only the standard library and numpy at the top: a
worker imports its own contender's library and nothing of the others' (a torch worker never
loads numba or fastmlp's kernels, a fastmlp worker never loads torch), and it changes no
environment variable — the parent gives each worker its environment.

Protocol (stdin -> stdout, one line each way): the first line is the set-up
``{"contender", "threads", "data", "lr", "seed"}``; the worker imports its library, sets its
threads, loads the data and answers ``{"ok": true, "pid", "threads", "versions"}``. Then
operations, each answered by one line:

* ``{"op": "prepare", "config", "sizes", "batch_size"}``: build the model, train one warm-up
  epoch on up to WARMUP_SAMPLES samples (numba compiles or loads its cache here; untimed).
  ``sizes`` is a list of dense widths (an MLP, ``[784, 128, 10]``) or, for a CNN, a list
  that also holds layer tokens in the CLI's ``--layers`` syntax,
  ``[784, "conv16k5p2", "pool2", "conv32k5p2", "pool2", 128, 10]``: the 784 inputs are
  then one ``(1, 28, 28)`` image (:data:`IMAGE`), reshaped inside every timed call.
* ``{"op": "epoch", "config"}`` -> ``{"seconds"}``: the wall time of the whole user call that
  trains one epoch on all the data.
* ``{"op": "predict", "config", "rows", "calls"}`` -> ``{"seconds": [...]}``: the wall time of
  each whole ``predict_proba`` call on the first ``rows`` test rows.
* ``{"op": "sgemm"}`` -> ``{"gflops"}``; ``{"op": "info"}`` -> loaded modules, thread state;
  ``{"op": "sklearn_fit", "params"}`` -> ``{"seconds", "accuracy"}``; ``{"op": "quit"}``.

Errors are answered as ``{"error": text}`` and the worker goes on.
"""

import json
import math
import os
import re
import sys
import time
import traceback
import warnings

import numpy as np

WARMUP_SAMPLES = 8192  # the untimed warm-up epoch runs on at most this many samples
N_CLASSES = 10
# Modules whose presence in a worker is reported, to show that contenders stay apart.
WATCHED_MODULES = ("numba", "fastmlp.network", "torch", "sklearn")
IMAGE = (1, 28, 28)  # the shape of a CNN's 784 inputs (MNIST)


# --- architectures ------------------------------------------------------------------------------
# A CNN arrives as tokens of fastmlp's --layers syntax (fastmlp.layers.parse). This module
# reads them itself: the PyTorch worker must not import fastmlp.layers (it loads numba).
_CONV = re.compile(r"conv(\d+)k(\d+)(?:s(\d+))?(?:p(\d+))?")
_POOL = re.compile(r"pool(\d+)(?:s(\d+))?")


def is_cnn(sizes):
    """True when ``sizes`` holds a layer token (a string) besides dense widths."""
    return any(isinstance(s, str) for s in sizes)


def architecture(sizes, image=IMAGE):
    """The layers of ``sizes`` with their shapes, PyTorch's arithmetic (floored sizes)::

        ("dense", n_in, n_out)
        ("conv", (C, H, W), (F, OH, OW), (kernel, stride, padding))
        ("pool", (C, H, W), (C, OH, OW), (size, stride))

    A list of ints is an MLP; with tokens (``"conv16k5p2"``, ``"pool2"``; see the module
    docstring) the first entry must be ``prod(image)`` and is read as one ``image``. Raises
    ValueError naming the token that is malformed or does not fit."""
    if not sizes or len(sizes) < 2:
        raise ValueError(f"need an input and at least one layer, got {sizes!r}")
    cnn = is_cnn(sizes)
    first = sizes[0]
    if isinstance(first, str) or isinstance(first, bool):
        raise ValueError(f"the first entry is the input size, got {first!r}")
    if cnn and first != math.prod(image):
        raise ValueError(f"a CNN's input is one {'x'.join(map(str, image))} image: "
                         f"{math.prod(image)} inputs, got {first}")
    shape = tuple(image) if cnn else (int(first), 1, 1)
    spatial, out = cnn, []
    for token in sizes[1:]:
        if isinstance(token, str) and (_CONV.fullmatch(token) or _POOL.fullmatch(token)):
            if not spatial:
                raise ValueError(f"{token!r} comes after a dense layer: convolutions and "
                                 "pooling must come first")
            c, h, w = shape
            m = _CONV.fullmatch(token)
            if m:
                f, k, st, p = (int(v) if v else d for v, d in zip(m.groups(), (0, 0, 1, 0)))
                if min(f, k, st) < 1 or k > h + 2 * p or k > w + 2 * p:
                    raise ValueError(f"{token!r} does not fit its {c}x{h}x{w} input")
                new = (f, (h + 2 * p - k) // st + 1, (w + 2 * p - k) // st + 1)
                out.append(("conv", shape, new, (k, st, p)))
            else:
                k, st = _POOL.fullmatch(token).groups()
                k = int(k)
                st = k if st is None else int(st)
                if min(k, st) < 1 or k > h or k > w:
                    raise ValueError(f"{token!r} does not fit its {c}x{h}x{w} input")
                new = (c, (h - k) // st + 1, (w - k) // st + 1)
                out.append(("pool", shape, new, (k, st)))
            shape = new
            continue
        if isinstance(token, str) and token.isdigit():
            token = int(token)
        if isinstance(token, bool) or not isinstance(token, int) or token < 1:
            raise ValueError(f"bad layer {token!r}: use convFkK[sS][pP] (e.g. conv16k5p2), "
                             "poolK[sS] (e.g. pool2) or a positive dense width")
        out.append(("dense", math.prod(shape), token))
        shape, spatial = (token, 1, 1), False
    if out[-1][0] != "dense":
        raise ValueError(f"the last layer must be a dense width, got {sizes[-1]!r}")
    return out


# --- the contenders: each method is the whole call a user makes -------------------------------


class FastmlpModel:
    """``Network(sizes, backend).fit(X, y, epochs=1, ...)`` and ``predict_proba``: input
    checks, the CSR copy of X and the workspaces are part of every call, as for a user."""

    def __init__(self, backend, sizes, batch_size, lr, seed):
        from fastmlp.network import Network

        if is_cnn(sizes):  # [(1, 28, 28), Conv2D(...), MaxPool2D(...), ..., 128, 10]
            from fastmlp.layers import parse

            sizes = [IMAGE] + parse(",".join(map(str, sizes[1:])))
        # X stays (n, 784): fit and predict_proba take flat rows in (C, H, W) order.
        self.net = Network(sizes, backend=backend, seed=seed)
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
    per conv, ``MaxPool2d(size, stride)`` per pool, ``Flatten`` before the first dense
    layer, then ``Linear, ReLU, ..., Linear``; the (n, 784) rows are viewed as (n, 1, 28,
    28) inside every timed call (a view: no copy)."""

    def __init__(self, sizes, batch_size, lr, seed):
        import torch
        from torch import nn

        torch.manual_seed(seed)
        layers, arch = [], architecture(sizes)
        for k, (kind, n_in, n_out, *geometry) in enumerate(arch):
            if kind == "conv":
                size, stride, pad = geometry[0]
                layers += [nn.Conv2d(n_in[0], n_out[0], size, stride=stride, padding=pad),
                           nn.ReLU()]
            elif kind == "pool":
                size, stride = geometry[0]
                layers.append(nn.MaxPool2d(size, stride=stride))
            else:
                if k > 0 and arch[k - 1][0] != "dense":
                    layers.append(nn.Flatten())  # (C, H, W) order, as fastmlp's
                layers.append(nn.Linear(n_in, n_out))
                if k < len(arch) - 1:
                    layers.append(nn.ReLU())
        self.image = IMAGE if is_cnn(sizes) else None
        self.torch = torch
        self.model = nn.Sequential(*layers)
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


def make_model(contender, sizes, batch_size, lr, seed=0):
    if contender in ("numba", "numpy"):
        return FastmlpModel(contender, sizes, batch_size, lr, seed)
    if contender == "torch":
        return TorchModel(sizes, batch_size, lr, seed)
    if contender == "sklearn":
        return SklearnModel(sizes, batch_size, lr, seed)
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
    try:
        from threadpoolctl import threadpool_info

        state["blas"] = sorted({lib["num_threads"] for lib in threadpool_info()})
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
        self.contender = setup["contender"]
        self.lr, self.seed = setup["lr"], setup.get("seed", 0)
        # Import the contender's library first, then set its threads, then load the data.
        if self.contender in ("numba", "numpy"):
            import fastmlp.network  # noqa: F401
        elif self.contender == "torch":
            import torch  # noqa: F401
        elif self.contender == "sklearn":
            import sklearn.neural_network  # noqa: F401
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
                                   self.seed)
                warm = min(self.X.shape[0], WARMUP_SAMPLES)
                model.train_epoch(self.X[:warm], self.y[:warm])
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
