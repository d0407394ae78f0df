"""``fastmlp bench``: one training epoch, fastmlp against PyTorch and scikit-learn, on MNIST.

Everything runs in one process. The contenders take turns: after a warm-up (numba compiles or
loads its cache, torch and BLAS settle), each round runs one epoch of every contender in turn,
so a burst of noise from elsewhere on the machine lands on all of them alike. Every library
gets the same thread count (``--threads``): numba's pool, torch's intra-op pool, and — through
threadpoolctl when installed — numpy's and scikit-learn's BLAS.

Reported per contender and configuration: seconds per epoch (median, min–max over rounds),
samples/s, throughput ratio to PyTorch (> 1: faster than torch), and the achieved dense
GFLOP/s (see :func:`epoch_flops`), beside numpy's float32 matmul rate measured in the same run.
Then prediction latency (one sample) and throughput (10,000 samples), and the start-up time of
a fresh interpreter that imports fastmlp and trains a little (numba cache hot; ``--cold``
also with an empty cache).

``python -m fastmlp.bench --help``; the ``fastmlp bench`` command runs :func:`main`.
"""

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

from .cli import _number, _positive_int

# name -> (layer sizes, batch size); the order of the default run.
CONFIGS = {
    "784-128-10 b64": ([784, 128, 10], 64),
    "784-128-10 b32": ([784, 128, 10], 32),
    "784-128-10 b128": ([784, 128, 10], 128),
    "784-128-10 b256": ([784, 128, 10], 256),
    "784-512-256-10 b128": ([784, 512, 256, 10], 128),
}
QUICK_CONFIGS = ["784-128-10 b64"]
QUICK_SAMPLES = 4096
CONTENDERS = ("numba", "numpy", "torch", "sklearn")
LABELS = {
    "numba": "fastmlp (numba)",
    "numpy": "fastmlp (numpy ref)",
    "torch": "PyTorch CPU",
    "sklearn": "scikit-learn MLP",
}
N_FEATURES, N_CLASSES = 784, 10
WARMUP_SAMPLES = 8192  # the warm-up epoch runs on at most this many samples


# --- configuration parsing ------------------------------------------------------------------


def parse_config(text):
    """``"784-128-10 b64"``, ``"784-128-10:64"`` or ``"784-128-10/64"`` -> (name, sizes, batch).

    The input layer must be 784 wide and the output 10 (MNIST)."""
    s = text.strip().replace(":", " b").replace("/", " b")
    parts = s.split()
    if len(parts) != 2 or not parts[1].lower().startswith("b"):
        raise ValueError(f"bad config {text!r}: expected e.g. '784-128-10 b64' or "
                         "'784-128-10:64'")
    try:
        sizes = [int(p) for p in parts[0].split("-")]
        batch = int(parts[1][1:])
    except ValueError:
        raise ValueError(f"bad config {text!r}: layer sizes and batch size must be "
                         "integers") from None
    if len(sizes) < 2 or min(sizes) < 1 or batch < 1:
        raise ValueError(f"bad config {text!r}: need at least two positive layer sizes and "
                         "a positive batch size")
    if sizes[0] != N_FEATURES or sizes[-1] != N_CLASSES:
        raise ValueError(f"bad config {text!r}: MNIST needs {N_FEATURES} inputs and "
                         f"{N_CLASSES} outputs")
    return f"{'-'.join(map(str, sizes))} b{batch}", sizes, batch


def _split_list(text):
    return [p for p in (q.strip() for q in text.split(",")) if p]


# --- FLOPs ------------------------------------------------------------------------------------


def epoch_flops(sizes, n_samples):
    """Dense floating-point operations of one epoch (forward + backward, matrix products
    only)::

        forward  2·n·Σ_l in_l·out_l            (Z = A Wᵀ)
        dW       2·n·Σ_l in_l·out_l            (δᵀ A)
        dX       2·n·Σ_{l>0} in_l·out_l        (δ W, not needed for the input layer)

    Kernels that skip zero inputs do less actual work; the rate reported is against this
    dense count, i.e. "effective" GFLOP/s.
    """
    pairs = [i * o for i, o in zip(sizes[:-1], sizes[1:])]
    return 2.0 * n_samples * (2 * sum(pairs) + sum(pairs[1:]))


# --- threads ---------------------------------------------------------------------------------


@contextlib.contextmanager
def limit_threads(n, contenders=CONTENDERS):
    """Run the block with ``n`` threads in numba, torch and (via threadpoolctl) BLAS/OpenMP.

    Yields a dict ``{library: how the limit was applied}`` for the report."""
    applied = {}
    with contextlib.ExitStack() as stack:
        try:
            from threadpoolctl import threadpool_limits

            stack.enter_context(threadpool_limits(limits=n))
            applied["blas"] = f"{n} (threadpoolctl)"
        except ImportError:
            applied["blas"] = "not limited (threadpoolctl not installed)"
        if "numba" in contenders:
            from . import _threads

            old = _threads.get_num_threads()
            _threads.set_num_threads(n)
            stack.callback(_threads.set_num_threads, old)
            applied["numba"] = str(n)
        if "torch" in contenders and _have("torch"):
            import torch

            old_torch = torch.get_num_threads()
            torch.set_num_threads(n)
            stack.callback(torch.set_num_threads, old_torch)
            applied["torch"] = str(n)
        yield applied


def _have(module):
    import importlib.util

    return importlib.util.find_spec(module) is not None


def missing_reason(contender):
    """None when the contender can run, else why not (for the report and pytest skips)."""
    if contender == "torch" and not _have("torch"):
        return "not installed (pip install torch==2.13.0, or the [bench] extra)"
    if contender == "sklearn" and not _have("sklearn"):
        return "not installed (pip install scikit-learn, or the [bench] extra)"
    return None


# --- contenders -------------------------------------------------------------------------------


class FastmlpContender:
    """``Network.fit(epochs=1)``; the epoch time is ``History.seconds`` (the training loop
    only: input checks, the CSR copy of X and workspaces are made once per fit, outside it).
    ``fit_seconds`` keeps the whole ``fit`` call's wall time for comparison."""

    def __init__(self, backend, sizes, batch_size, lr, X, y, seed=0):
        from .network import Network

        self.net = Network(sizes, backend=backend, seed=seed)
        self.batch_size, self.lr, self.X, self.y = batch_size, lr, X, y
        self.fit_seconds = []

    def epoch(self, X=None, y=None):
        X = self.X if X is None else X
        y = self.y if y is None else y
        started = time.perf_counter()
        history = self.net.fit(X, y, epochs=1, batch_size=self.batch_size,
                               learning_rate=self.lr, verbose=False)
        self.fit_seconds.append(time.perf_counter() - started)
        return history.seconds[-1]

    def clock(self):
        """Seconds spent in training loops so far (pytest-benchmark's timer for this
        contender: differences are exactly ``History.seconds``)."""
        return math.fsum(self.net.history.seconds)

    def predict_proba(self, X):
        return self.net.predict_proba(X)


class _WallClock:
    clock = staticmethod(time.perf_counter)


class TorchContender(_WallClock):
    """nn.Sequential(Linear, ReLU, ..., Linear), CrossEntropyLoss (mean), plain SGD; batches
    by indexing pre-made tensors with a ``torch.randperm`` order (no DataLoader)."""

    def __init__(self, sizes, batch_size, lr, X, y, seed=0):
        import torch
        from torch import nn

        torch.manual_seed(seed)
        layers = []
        for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(n_in, n_out))
            if k < len(sizes) - 2:
                layers.append(nn.ReLU())
        self.torch = torch
        self.model = nn.Sequential(*layers)
        self.loss = nn.CrossEntropyLoss()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=0.0)
        self.batch_size = batch_size
        self.X, self.y = self._tensors(X, y)

    def _tensors(self, X, y):
        torch = self.torch
        return (torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)),
                torch.from_numpy(np.asarray(y, dtype=np.int64)))

    def epoch(self, X=None, y=None):
        Xt, yt = (self.X, self.y) if X is None else self._tensors(X, y)
        torch, model, loss, opt, b = self.torch, self.model, self.loss, self.opt, self.batch_size
        started = time.perf_counter()
        model.train()
        order = torch.randperm(Xt.shape[0])
        for start in range(0, Xt.shape[0], b):
            idx = order[start:start + b]
            opt.zero_grad(set_to_none=True)
            loss(model(Xt[idx]), yt[idx]).backward()
            opt.step()
        return time.perf_counter() - started

    def predict_proba(self, X):
        torch = self.torch
        with torch.inference_mode():
            return torch.softmax(self.model(torch.from_numpy(X)), dim=1).numpy()


class SklearnContender(_WallClock):
    """MLPClassifier(solver="sgd", momentum=0, alpha=0, tol=0, shuffle=True), one epoch per
    ``partial_fit`` (the optimizer state carries over, as in a multi-epoch fit)."""

    def __init__(self, sizes, batch_size, lr, X, y, seed=0):
        from sklearn.neural_network import MLPClassifier

        self.model = MLPClassifier(
            hidden_layer_sizes=tuple(sizes[1:-1]), activation="relu", solver="sgd",
            alpha=0.0, batch_size=batch_size, learning_rate="constant",
            learning_rate_init=lr, momentum=0.0, nesterovs_momentum=False, max_iter=1,
            tol=0.0, shuffle=True, random_state=seed, early_stopping=False)
        self.X, self.y = X, y
        self.classes = np.arange(sizes[-1])

    def epoch(self, X=None, y=None):
        X = self.X if X is None else X
        y = self.y if y is None else y
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model.partial_fit(X, y, classes=self.classes)
        return time.perf_counter() - started

    def predict_proba(self, X):
        return self.model.predict_proba(X)


def make_contender(name, sizes, batch_size, lr, X, y, seed=0):
    """A fresh model of contender ``name`` (one of CONTENDERS) ready to train on (X, y)."""
    if name in ("numba", "numpy"):
        return FastmlpContender(name, sizes, batch_size, lr, X, y, seed)
    if name == "torch":
        return TorchContender(sizes, batch_size, lr, X, y, seed)
    if name == "sklearn":
        return SklearnContender(sizes, batch_size, lr, X, y, seed)
    raise ValueError(f"unknown contender {name!r}; choose from {', '.join(CONTENDERS)}")


# --- measurements -----------------------------------------------------------------------------


def sgemm_peak(n=2048, repeats=5):
    """GFLOP/s of numpy's float32 ``n x n`` matmul, the best of ``repeats`` (after one
    warm-up), with whatever thread limit is in force."""
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


def time_epochs(configs, contenders, X, y, rounds, lr, seed=0, log=None):
    """Per config: warm up every contender, then ``rounds`` rounds of one epoch each, the
    contenders taking turns (the starting one rotates each round).

    Returns ``[{"config", "sizes", "batch_size", "contender", "seconds": [...],
    "fit_seconds": [...] or None, "missing": reason or None}, ...]``."""
    results = []
    warm = min(X.shape[0], WARMUP_SAMPLES)
    for name, sizes, batch in configs:
        runners, rows = [], {}
        for c in contenders:
            row = {"config": name, "sizes": sizes, "batch_size": batch, "contender": c,
                   "seconds": [], "fit_seconds": None, "missing": missing_reason(c)}
            rows[c] = row
            results.append(row)
            if row["missing"] is None:
                runner = make_contender(c, sizes, batch, lr, X, y, seed)
                runner.epoch(X[:warm], y[:warm])  # compile / cache load / allocator warm-up
                runners.append((c, runner))
        for r in range(rounds):
            k = r % len(runners) if runners else 0
            for c, runner in runners[k:] + runners[:k]:
                seconds = runner.epoch()
                rows[c]["seconds"].append(seconds)
                if log:
                    log(f"  {name:<22} round {r + 1}/{rounds}  {LABELS[c]:<20} "
                        f"{seconds:8.3f} s")
        for c, runner in runners:
            if isinstance(runner, FastmlpContender):
                rows[c]["fit_seconds"] = runner.fit_seconds[1:]  # not the warm-up
    return results


def time_predict(sizes, contenders, X_train, y_train, X_test, calls, lr, seed=0):
    """Single-sample ``predict_proba`` latency (median of ``calls`` calls) and the throughput
    of one call on all of ``X_test``, for models trained one short epoch."""
    out = []
    warm = min(X_train.shape[0], WARMUP_SAMPLES)
    x1 = np.ascontiguousarray(X_test[:1])
    for c in contenders:
        row = {"config": "-".join(map(str, sizes)), "contender": c,
               "missing": missing_reason(c), "latency": None, "batch_seconds": None,
               "batch_rows": int(X_test.shape[0])}
        out.append(row)
        if row["missing"]:
            continue
        model = make_contender(c, sizes, 64, lr, X_train[:warm], y_train[:warm], seed)
        model.epoch()
        model.predict_proba(x1)
        model.predict_proba(X_test)
        lat = []
        for _ in range(calls):
            started = time.perf_counter()
            model.predict_proba(x1)
            lat.append(time.perf_counter() - started)
        row["latency"] = statistics.median(lat)
        full = []
        for _ in range(3):
            started = time.perf_counter()
            model.predict_proba(X_test)
            full.append(time.perf_counter() - started)
        row["batch_seconds"] = statistics.median(full)
    return out


STARTUP_SCRIPT = """\
import time
t0 = time.perf_counter()
import numpy as np
import fastmlp
fastmlp.set_num_threads({threads})
rng = np.random.default_rng(0)
X = rng.random((512, 784), dtype=np.float32)
X[X < 0.8] = 0  # MNIST-like sparsity: the same (CSR) code path as real training
y = rng.integers(0, 10, 512)
t1 = time.perf_counter()
net = fastmlp.Network([784, 32, 10], seed=0)
net.fit(X, y, epochs=1, batch_size=64, verbose=False)
net.predict_proba(X[:1])
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""


def time_startup(threads, cold=False, repeats=3):
    """Wall time of a fresh ``python -c`` that imports fastmlp and trains one small epoch.

    Warm (numba cache hot): one priming run, then the median of ``repeats``. Cold: each run
    gets an empty ``NUMBA_CACHE_DIR``, so every kernel is compiled. Returns
    ``{"total": s, "import": s, "first_fit": s}`` (medians) or ``{"error": text}``."""
    script = STARTUP_SCRIPT.format(threads=threads)
    env = dict(os.environ)
    env["NUMBA_NUM_THREADS"] = env.get("NUMBA_NUM_THREADS", str(max(threads, 1)))

    def once(extra_env):
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              env={**env, **extra_env}, timeout=900)
        total = time.perf_counter() - started
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip()
                               else f"exit status {proc.returncode}")
        imp, fit = (float(v) for v in proc.stdout.split()[-2:])
        return total, imp, fit

    try:
        runs = []
        if cold:
            for _ in range(max(1, repeats)):
                with tempfile.TemporaryDirectory(prefix="fastmlp-numba-cache-") as cache:
                    runs.append(once({"NUMBA_CACHE_DIR": cache}))
        else:
            once({})  # populate the cache
            runs = [once({}) for _ in range(max(1, repeats))]
    except (RuntimeError, subprocess.SubprocessError, OSError, ValueError) as e:
        return {"error": str(e)}
    total, imp, fit = (statistics.median(col) for col in zip(*runs))
    return {"total": total, "import": imp, "first_fit": fit, "runs": len(runs)}


# --- report -----------------------------------------------------------------------------------


def sklearn_fit_params(epochs):
    """The drop-in comparison's parameters, identical for both MLPClassifiers: a plain
    scikit-learn setup, run for exactly ``epochs`` epochs (no early stop)."""
    return dict(hidden_layer_sizes=(100,), activation="relu", solver="adam", alpha=1e-4,
                batch_size=200, learning_rate_init=1e-3, max_iter=epochs, shuffle=True,
                random_state=0, n_iter_no_change=epochs)


def time_sklearn_fit(X, y, X_test, y_test, epochs, rounds):
    """fit() of fastmlp.sklearn.MLPClassifier and of scikit-learn's, taking turns."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier as SkMLPClassifier

    from .sklearn import MLPClassifier

    params = sklearn_fit_params(epochs)
    makers = {"fastmlp.sklearn": MLPClassifier, "scikit-learn": SkMLPClassifier}
    results = {name: {"seconds": [], "accuracy": None} for name in makers}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        MLPClassifier(**{**params, "max_iter": 1}).fit(X[:2000], y[:2000])  # numba cache
        for _ in range(rounds):
            for name, make in makers.items():
                started = time.perf_counter()
                model = make(**params).fit(X, y)
                results[name]["seconds"].append(time.perf_counter() - started)
                results[name]["accuracy"] = float(model.score(X_test, y_test))
    return results


def format_table(headers, rows, align=None):
    """Plain-text table: columns padded to width, ``align`` a string of 'l'/'r' per column."""
    align = align or "l" * len(headers)
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]

    def line(values):
        return "  ".join(v.ljust(w) if a == "l" else v.rjust(w)
                         for v, w, a in zip(values, widths, align)).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out)


def _fmt_seconds(s):
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.3f} s"


def summarize_epochs(results, n_samples, peak=None):
    """Add median/min/max, samples/s, ratio to torch and GFLOP/s to every epoch row."""
    by_config = {}
    for row in results:
        by_config.setdefault(row["config"], {})[row["contender"]] = row
    for row in results:
        if row["missing"] or not row["seconds"]:
            continue
        med = statistics.median(row["seconds"])
        row["median"], row["min"], row["max"] = med, min(row["seconds"]), max(row["seconds"])
        row["samples_per_s"] = n_samples / med
        row["gflops"] = epoch_flops(row["sizes"], n_samples) / med / 1e9
        if peak:
            row["fraction_of_sgemm_peak"] = row["gflops"] / peak
        torch_row = by_config[row["config"]].get("torch")
        if torch_row and not torch_row["missing"] and torch_row["seconds"]:
            row["vs_torch"] = statistics.median(torch_row["seconds"]) / med
    return results


def epoch_table(results):
    rows = []
    for r in results:
        if r["missing"]:
            rows.append([LABELS[r["contender"]], r["config"], r["missing"], "", "", "", ""])
            continue
        if not r["seconds"]:
            continue
        vs = r.get("vs_torch")
        rows.append([LABELS[r["contender"]], r["config"], f"{r['median']:.3f}",
                     f"{r['min']:.3f}–{r['max']:.3f}", f"{r['samples_per_s']:,.0f}",
                     "-" if vs is None else f"{vs:.2f}x", f"{r['gflops']:.1f}"])
    return format_table(["contender", "config", "s/epoch (median)", "min–max", "samples/s",
                         "vs torch", "GFLOP/s"], rows, "llrrrrr")


def predict_table(results):
    rows = []
    for r in results:
        if r["missing"]:
            rows.append([LABELS[r["contender"]], r["config"], r["missing"], "", ""])
            continue
        rows.append([LABELS[r["contender"]], r["config"], _fmt_seconds(r["latency"]),
                     _fmt_seconds(r["batch_seconds"]),
                     f"{r['batch_rows'] / r['batch_seconds']:,.0f}"])
    n = results[0]["batch_rows"] if results else 0
    return format_table(["contender", "net", "1-sample latency (median)",
                         f"{n:,} rows", "samples/s"], rows, "llrrr")


def _versions():
    import numba

    v = {"python": platform.python_version(), "numpy": np.__version__,
         "numba": numba.__version__}
    from . import __version__

    v["fastmlp"] = __version__
    for mod in ("torch", "sklearn"):
        if _have(mod):
            v[mod] = __import__(mod).__version__
    return v


# --- data -------------------------------------------------------------------------------------


def synthetic_mnist(n_train, n_test, seed=0):
    """MNIST-shaped random data (float32 in [0, 1], ~80 % zeros, labels 0..9) for runs
    without the real files. Timings on it are only indicative."""
    rng = np.random.default_rng(seed)

    def make(n):
        X = rng.random((n, N_FEATURES), dtype=np.float32)
        X[X < 0.8] = 0
        return X, rng.integers(0, N_CLASSES, n)

    return (*make(n_train), *make(n_test))


def load_data(args):
    if args.synthetic:
        return synthetic_mnist(args.samples or 60000, 10000)
    from .datasets import load_mnist

    X, y, X_test, y_test = load_mnist(args.data_dir, progress=False)
    if args.samples:
        X, y = X[:args.samples], y[:args.samples]
    return X, y, X_test, y_test


# --- command line -----------------------------------------------------------------------------


# The CLI's argument checks, so that `fastmlp bench` words its errors like every subcommand.
_positive_float = _number(low=0, low_open=True)


def build_parser(prog="fastmlp bench"):
    p = argparse.ArgumentParser(
        prog=prog,
        description="Time one MNIST training epoch: fastmlp (numba and numpy backends) "
                    "against PyTorch CPU and scikit-learn, contenders alternating round by "
                    "round in one process; plus prediction latency/throughput and start-up "
                    "time.")
    p.add_argument("--configs", default=None,
                   help="comma-separated configs 'SIZES bBATCH' (or SIZES:BATCH), e.g. "
                        "'784-128-10 b64,784-512-256-10:128' (default: "
                        + ", ".join(CONFIGS) + ")")
    p.add_argument("--contenders", default=",".join(CONTENDERS),
                   help=f"comma-separated subset of {','.join(CONTENDERS)} (default: all)")
    p.add_argument("--rounds", type=_positive_int, default=None,
                   help="timed epochs per contender and config (default 5; 3 with --quick)")
    p.add_argument("--threads", type=_positive_int, default=2,
                   help="threads for every library (default 2)")
    p.add_argument("--data-dir", default=None,
                   help="folder holding mnist/ (default: $FASTMLP_DATA, else the user cache)")
    p.add_argument("--samples", type=_positive_int, default=None,
                   help="train on the first N samples (default: all 60,000; "
                        f"{QUICK_SAMPLES} with --quick)")
    p.add_argument("--learning-rate", type=_positive_float, default=0.05,
                   help="SGD step size for every contender (default 0.05)")
    p.add_argument("--quick", action="store_true",
                   help=f"a short run: config {QUICK_CONFIGS[0]!r}, {QUICK_SAMPLES} samples, "
                        "3 rounds, fewer prediction calls, no sgemm peak")
    p.add_argument("--synthetic", action="store_true",
                   help="random MNIST-shaped data instead of MNIST (no files needed)")
    p.add_argument("--no-predict", action="store_true", help="skip the prediction timings")
    p.add_argument("--no-startup", action="store_true", help="skip the start-up timings")
    p.add_argument("--sklearn-epochs", type=_positive_int, default=None,
                   help="epochs of the MLPClassifier.fit comparison, fastmlp.sklearn vs "
                        "scikit-learn with identical parameters (default 10; 2 with --quick)")
    p.add_argument("--no-sklearn-fit", action="store_true",
                   help="skip the MLPClassifier.fit comparison")
    p.add_argument("--cold", action="store_true",
                   help="also time a cold start (empty numba cache: compiles every kernel)")
    p.add_argument("--json", metavar="FILE", default=None, help="also write all results here")
    return p


def main(argv=None, prog="fastmlp bench"):
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        names = _split_list(args.configs) if args.configs is not None else (
            QUICK_CONFIGS if args.quick else list(CONFIGS))
        configs = [parse_config(c) for c in names]
    except ValueError as e:
        parser.error(str(e))
    if not configs:
        parser.error("--configs is empty")
    contenders = _split_list(args.contenders)
    bad = [c for c in contenders if c not in CONTENDERS]
    if bad or not contenders:
        parser.error(f"--contenders: unknown {', '.join(bad) or '(empty)'}; choose from "
                     f"{', '.join(CONTENDERS)}")
    contenders = list(dict.fromkeys(contenders))
    import numba

    if args.threads > numba.config.NUMBA_NUM_THREADS:
        parser.error(f"--threads {args.threads}: numba has {numba.config.NUMBA_NUM_THREADS} "
                     "threads at most here (set NUMBA_NUM_THREADS to raise it)")
    rounds = args.rounds or (3 if args.quick else 5)
    if args.quick and args.samples is None:
        args.samples = QUICK_SAMPLES

    try:
        X, y, X_test, y_test = load_data(args)
    except (OSError, ValueError) as e:  # DatasetNotFoundError is one of these
        print(f"fastmlp bench: cannot load MNIST: {e}\n(use --data-dir, FASTMLP_DATA or "
              "--synthetic)", file=sys.stderr)
        return 1
    if args.quick:
        X_test, y_test = X_test[:2000], y_test[:2000]
    n = X.shape[0]

    def log(line):
        print(line, file=sys.stderr, flush=True)

    report = {"versions": _versions(), "threads": args.threads, "samples": n,
              "rounds": rounds, "learning_rate": args.learning_rate,
              "data": "synthetic" if args.synthetic else "mnist",
              "cpu_count": os.cpu_count(), "machine": platform.machine()}
    print(f"fastmlp bench: {n:,} training samples ({report['data']}), {rounds} round(s), "
          f"{args.threads} thread(s), learning rate {args.learning_rate}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()))

    with limit_threads(args.threads, contenders) as applied:
        report["thread_limits"] = applied
        if not args.quick:
            report["sgemm_gflops"] = sgemm_peak()
        log("epochs:")
        epochs = time_epochs(configs, contenders, X, y, rounds, args.learning_rate, log=log)
        summarize_epochs(epochs, n, report.get("sgemm_gflops"))
        report["epochs"] = epochs
        print()
        print("One training epoch (seconds over rounds; vs torch = torch time / this time, "
              ">1 is faster than torch)")
        print(epoch_table(epochs))
        if "sgemm_gflops" in report:
            print(f"reference: numpy float32 2048x2048 matmul, {args.threads} thread(s): "
                  f"{report['sgemm_gflops']:.1f} GFLOP/s")
        print("GFLOP/s counts dense forward+backward products: "
              "2n(Σ in·out) + 2n(Σ in·out) + 2n(Σ_{l>0} in·out)")
        fit_rows = [r for r in epochs if r.get("fit_seconds")]
        if fit_rows:
            print("fastmlp whole fit(epochs=1) call, median (adds input checks, CSR copy, "
                  "workspaces): " + ", ".join(
                      f"{LABELS[r['contender']]} {r['config']} "
                      f"{statistics.median(r['fit_seconds']):.3f} s" for r in fit_rows))

        if not args.no_predict:
            log("predict:")
            archs = list(dict.fromkeys(tuple(s) for _, s, _ in configs))
            calls = 200 if args.quick else 2000
            report["predict"] = []
            for sizes in archs:
                report["predict"] += time_predict(list(sizes), contenders, X, y, X_test,
                                                  calls, args.learning_rate)
            print()
            print(f"predict_proba (1-sample latency: median of {calls} calls)")
            print(predict_table(report["predict"]))

        if not args.no_sklearn_fit and "sklearn" in contenders and not missing_reason("sklearn"):
            epochs_fit = args.sklearn_epochs or (2 if args.quick else 10)
            log(f"MLPClassifier.fit ({epochs_fit} epochs):")
            fits = time_sklearn_fit(X, y, X_test, y_test, epochs_fit, 1 if args.quick else 2)
            report["sklearn_fit"] = {"epochs": epochs_fit, "params": sklearn_fit_params(
                epochs_fit), "results": fits}
            theirs = min(fits["scikit-learn"]["seconds"])
            print()
            print(f"MLPClassifier.fit, identical parameters ({epochs_fit} epochs, hidden (100,), "
                  "adam, batch 200), best of the rounds")
            print(format_table(
                ["estimator", "fit seconds", "test accuracy", "speed-up"],
                [[name, f"{min(r['seconds']):.2f}", f"{100 * r['accuracy']:.2f} %",
                  f"{theirs / min(r['seconds']):.2f}x"] for name, r in fits.items()],
                "lrrr"))

    if not args.no_startup and "numba" in contenders:
        log("start-up:")
        report["startup_warm"] = time_startup(args.threads, repeats=1 if args.quick else 3)
        if args.cold:
            report["startup_cold"] = time_startup(args.threads, cold=True,
                                                  repeats=1 if args.quick else 2)
        print()
        print("start-up: fresh `python -c` → import fastmlp, fit 512 samples, predict 1")
        rows = []
        for key, label in (("startup_warm", "warm (numba cache hot)"),
                           ("startup_cold", "cold (empty NUMBA_CACHE_DIR)")):
            s = report.get(key)
            if s is None:
                continue
            if "error" in s:
                rows.append([label, "failed: " + s["error"], "", ""])
            else:
                rows.append([label, f"{s['total']:.2f} s", f"{s['import']:.2f} s",
                             f"{s['first_fit']:.2f} s"])
        print(format_table(["start", "process wall", "import numpy+fastmlp",
                            "first fit+predict"], rows, "lrrr"))

    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2, default=str)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m fastmlp.bench"))
