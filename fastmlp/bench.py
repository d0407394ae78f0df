"""``fastmlp bench``: fastmlp against its numpy reference, PyTorch, scikit-learn and (for
inference) onnxruntime on MNIST — one training epoch, ``predict_proba``, and start-up —
measured fairly.

Fair means four things here:

1. **The same span for every contender: the whole call a user makes.** fastmlp: the wall time
   of ``net.fit(X, y, epochs=1, ...)`` (input checks, the CSR copy of X and the workspaces
   included); PyTorch: a function that takes the numpy arrays and trains one epoch
   (``from_numpy``, a ``randperm`` order, forward / backward / step per batch); scikit-learn:
   ``partial_fit``. Predict: one ``predict_proba(X)`` call from numpy to numpy for each
   (PyTorch: ``from_numpy``, a ``no_grad`` forward, softmax, ``.numpy()``; onnxruntime:
   ``session.run(None, {"input": X})`` on the same network exported by
   :func:`fastmlp.export.onnx_model` — inference only, it has no training rows).
2. **Each library in its own process.** One worker process (``python -m
   fastmlp._bench_worker``) per contender and thread count, started with the same
   environment, cleared of thread settings (:data:`THREAD_ENV`); a worker imports only its own
   library and sets only its own threads (the numpy and scikit-learn workers also run
   without :data:`OPENBLAS_TUNING_ENV`, so that OpenBLAS picks its kernels for this CPU, as
   it would for a user). The workers load the same data, warm up (numba
   compiles or loads its cache, untimed), then this process drives them over pipes in
   alternation, A B C A B C ... (the first one rotating each round), so noise from the rest of
   the machine falls on all of them alike.
3. **Every contender at every thread count** (``--threads``, default ``1,N`` with N the
   CPUs): numba's pool through ``fastmlp.set_num_threads``, PyTorch's through
   ``torch.set_num_threads``, onnxruntime's through its ``SessionOptions`` (intra- and
   inter-op threads), BLAS / OpenMP through threadpoolctl. All rows are shown; the
   ratios compare fastmlp at its best thread count with each peer at *its* best.
4. **The machine is named**: CPU model, core count, AVX2 / AVX-512, library versions.

Configs are MLPs (``784-128-10 b64``) or CNNs: ``cnn b128`` is the convolution issue's net
(:data:`CNN_SIZES`), fastmlp's ``Network([(1, 28, 28), Conv2D(16, 5, padding=2),
MaxPool2D(2), Conv2D(32, 5, padding=2), MaxPool2D(2), 128, 10])`` against PyTorch's exact
equivalent; the numpy reference and scikit-learn skip CNNs (:data:`CNN_SKIPPED`).

``python -m fastmlp.bench --help``; the ``fastmlp bench`` command runs :func:`main`.
"""

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from ._args import _number, _positive_int
from ._bench_worker import IMAGE, architecture, is_cnn

# The CNN of the convolution issue, in the worker's form: 784 inputs read as one 1x28x28
# image, then layer tokens of fastmlp's --layers syntax, then dense widths. "cnn" in a
# config names it.
CNN_SIZES = [784, "conv16k5p2", "pool2", "conv32k5p2", "pool2", 128, 10]
CNN_NAME = "cnn"
# name -> (layer sizes, batch size); the order of the default run.
CONFIGS = {
    "784-128-10 b64": ([784, 128, 10], 64),
    "784-128-10 b32": ([784, 128, 10], 32),
    "784-128-10 b128": ([784, 128, 10], 128),
    "784-128-10 b256": ([784, 128, 10], 256),
    "784-512-256-10 b128": ([784, 512, 256, 10], 128),
    "cnn b128": (CNN_SIZES, 128),
}
QUICK_CONFIGS = ["784-128-10 b64"]
QUICK_SAMPLES = 4096
CONTENDERS = ("numba", "numpy", "torch", "onnxruntime", "sklearn")
FASTMLP = "numba"  # the contender the ratios are about
LABELS = {
    "numba": "fastmlp (numba)",
    "numpy": "fastmlp (numpy ref)",
    "torch": "PyTorch CPU",
    "onnxruntime": "onnxruntime CPU",
    "sklearn": "scikit-learn MLP",
}
# Contenders timed in predict only, and why (shown in the epoch table instead of a time).
INFERENCE_ONLY = {
    "onnxruntime": "inference only (the fastmlp network exported to ONNX): timed in "
                   "predict_proba",
}
N_FEATURES, N_CLASSES = 784, 10
PREDICT_ROWS = 10000  # rows of the throughput call (the MNIST test set)
# Contenders that do not run CNNs, and why (shown in the tables instead of a time).
CNN_SKIPPED = {
    "numpy": "skipped for the CNN: the numpy reference's convolutions take ~7 min per "
             "60,000-image epoch",
    "sklearn": "skipped for the CNN: scikit-learn has no convolutional network",
}
# Removed from every worker's environment: each worker sets its own threads through its
# library's API, and none may inherit another's (or the caller's) thread settings.
THREAD_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "OMP_DYNAMIC", "OMP_PROC_BIND",
              "OMP_PLACES", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "KMP_AFFINITY",
              "MKL_NUM_THREADS", "MKL_DYNAMIC", "OPENBLAS_NUM_THREADS", "BLIS_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "NUMBA_NUM_THREADS",
              "NUMBA_THREADING_LAYER")
# OpenBLAS settings that pin its kernels (and the cache size they block for) to a CPU model
# instead of the one it detects. The numpy and scikit-learn contenders, whose time is
# OpenBLAS's, run without them, as a user's numpy would; other processes keep them.
OPENBLAS_TUNING_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
# Removed from that contender's worker only, on top of THREAD_ENV.
CONTENDER_ENV_REMOVED = {"numpy": OPENBLAS_TUNING_ENV, "sklearn": OPENBLAS_TUNING_ENV}


# --- configuration parsing ------------------------------------------------------------------


def parse_config(text):
    """``"784-128-10 b64"``, ``"784-128-10:64"`` or ``"784-128-10/64"`` -> (name, sizes, batch).

    The input layer must be 784 wide and the output 10 (MNIST). ``"cnn b128"`` is the
    convolution issue's CNN (:data:`CNN_SIZES`); other CNNs are written with fastmlp's
    ``--layers`` tokens between the sizes, the 784 inputs then read as one 1x28x28 image:
    ``"784-conv8k3-pool2-64-10 b128"``."""
    s = text.strip().replace(":", " b").replace("/", " b")
    parts = s.split()
    if len(parts) != 2 or not parts[1].lower().startswith("b"):
        raise ValueError(f"bad config {text!r}: expected e.g. '784-128-10 b64', "
                         "'784-128-10:64' or 'cnn b128'")
    try:
        batch = int(parts[1][1:])
    except ValueError:
        raise ValueError(f"bad config {text!r}: the batch size must be an integer") from None
    if batch < 1:
        raise ValueError(f"bad config {text!r}: the batch size must be positive")
    if parts[0].lower() == CNN_NAME:
        return f"{CNN_NAME} b{batch}", list(CNN_SIZES), batch
    sizes = []
    for p in parts[0].split("-"):
        if p.isdigit():
            sizes.append(int(p))
        elif p.startswith(("conv", "pool")):
            sizes.append(p)
        else:
            raise ValueError(f"bad config {text!r}: layer sizes must be integers (or, for a "
                             "CNN, tokens like conv16k5p2 and pool2)")
    ints = [v for v in sizes if isinstance(v, int)]
    if len(sizes) < 2 or min(ints) < 1:
        raise ValueError(f"bad config {text!r}: need at least two positive layer sizes and "
                         "a positive batch size")
    if sizes[0] != N_FEATURES or sizes[-1] != N_CLASSES:
        raise ValueError(f"bad config {text!r}: MNIST needs {N_FEATURES} inputs and "
                         f"{N_CLASSES} outputs")
    try:
        architecture(sizes)  # fastmlp.layers checks every token and geometry
    except ValueError as e:
        raise ValueError(f"bad config {text!r}: {e}") from None
    return f"{arch_name(sizes)} b{batch}", sizes, batch


def arch_name(sizes):
    """``"784-128-10"``; ``"cnn"`` for :data:`CNN_SIZES`."""
    return CNN_NAME if list(sizes) == CNN_SIZES else "-".join(map(str, sizes))


def skip_reason(contender, sizes, training=True):
    """None when ``contender`` runs the architecture ``sizes`` — trains it, or with
    ``training=False`` predicts with it — else why it does not."""
    if is_cnn(sizes) and contender in CNN_SKIPPED:
        return CNN_SKIPPED[contender]
    if training and contender in INFERENCE_ONLY:
        return INFERENCE_ONLY[contender]
    return None


def trains(contender):
    """False for the inference-only contenders (:data:`INFERENCE_ONLY`)."""
    return contender not in INFERENCE_ONLY


def _split_list(text):
    return [p for p in (q.strip() for q in text.split(",")) if p]


def parse_threads(text, cpus=None):
    """``"1,2"`` -> [1, 2] (sorted, unique); ``"N"`` or ``"all"`` stands for the CPU count."""
    cpus = cpus or os.cpu_count() or 1
    out = set()
    for p in _split_list(text):
        if p.lower() in ("n", "all"):
            out.add(cpus)
            continue
        try:
            n = int(p)
        except ValueError:
            raise ValueError(f"--threads: expected integers or N, got {p!r}") from None
        if not 1 <= n <= cpus:
            raise ValueError(f"--threads: {n} is not in 1..{cpus} (the CPUs here)")
        out.add(n)
    if not out:
        raise ValueError("--threads is empty")
    return sorted(out)


# --- FLOPs ------------------------------------------------------------------------------------


def layer_macs(sizes):
    """Multiply-adds per image of each layer with weights, forward: ``in·out`` for a dense
    layer, ``F·C·kh·kw·OH·OW`` for a convolution (pooling, BatchNorm and Dropout have
    none: their few operations per value are not counted)."""
    macs = []
    for layer in architecture(sizes):  # fastmlp.layers.Layer records
        if layer.kind == "dense":
            macs.append(layer.n_in * layer.n_out)
        elif layer.kind == "conv":
            kh, kw = layer.spec.kernel_size
            f, oh, ow = layer.out_shape
            macs.append(f * layer.in_shape[0] * kh * kw * oh * ow)
    return macs


def epoch_flops(sizes, n_samples):
    """Floating-point operations of one epoch (forward + backward, the products only)::

        forward  2·n·Σ_l M_l            (dense Z = A Wᵀ; conv: each output a C·kh·kw dot)
        dW       2·n·Σ_l M_l            (dense δᵀ A; conv: the same products, transposed)
        dX       2·n·Σ_{l>0} M_l        (δ W, not needed for the first layer)

    with ``M_l`` the multiply-adds of layer ``l`` per image (:func:`layer_macs`: ``in·out``
    dense, ``F·C·kh·kw·OH·OW`` conv). Kernels that skip zero inputs do less actual work; the
    rate reported is against this dense count, i.e. "effective" GFLOP/s.
    """
    macs = layer_macs(sizes)
    return 2.0 * n_samples * (2 * sum(macs) + sum(macs[1:]))


# --- the machine ------------------------------------------------------------------------------


def cpu_info(cpuinfo="/proc/cpuinfo"):
    """``{"model", "cpus", "avx2", "avx512"}`` from /proc/cpuinfo; where there is none (not
    Linux), the model from :mod:`platform` and the vector flags as None (unknown)."""
    info = {"model": platform.processor() or platform.machine() or "unknown",
            "cpus": os.cpu_count(), "avx2": None, "avx512": None}
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return info
    flags = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and info["model"] in (platform.processor(),
                                                      platform.machine(), "unknown"):
            info["model"] = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    if flags:
        info["avx2"] = "avx2" in flags
        info["avx512"] = "avx512f" in flags
    return info


def cpu_line(info):
    def yes(v):
        return "?" if v is None else ("yes" if v else "no")

    return (f"CPU: {info['model']}, {info['cpus']} CPU(s), AVX2 {yes(info['avx2'])}, "
            f"AVX-512 {yes(info['avx512'])}")


# Above this 1-minute load average per CPU, other work shares the CPUs with the workers.
BUSY_LOAD_PER_CPU = 0.5


def load_average():
    """The 1, 5 and 15-minute load averages, or None where the OS does not report them."""
    try:
        return tuple(os.getloadavg())
    except (OSError, AttributeError):  # not Unix
        return None


def load_lines(load, cpus):
    """The header's load line, and a warning when the machine is busy (the 1-minute load
    above :data:`BUSY_LOAD_PER_CPU` per CPU): other processes then take CPU time from the
    workers unevenly, and times and ratios are unreliable."""
    if load is None:
        return ["load average: not reported by this system"]
    lines = [f"load average: {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f} (1, 5, 15 min) on "
             f"{cpus} CPU(s)"]
    if load[0] > BUSY_LOAD_PER_CPU * cpus:
        lines.append(f"warning: the machine is busy (load {load[0]:.2f} > "
                     f"{BUSY_LOAD_PER_CPU:g} per CPU): other work takes CPU time from the "
                     "contenders, so times and ratios are unreliable; rerun on a quiet machine")
    return lines


def _have(module):
    return importlib.util.find_spec(module) is not None


def missing_reason(contender):
    """None when the contender can run, else why not (for the report and pytest skips)."""
    if contender == "torch" and not _have("torch"):
        return "not installed (pip install torch==2.13.0, or the [bench] extra)"
    if contender == "sklearn" and not _have("sklearn"):
        return "not installed (pip install scikit-learn, or the [bench] extra)"
    if contender == "onnxruntime":
        absent = [m for m in ("onnxruntime", "onnx") if not _have(m)]
        if absent:  # onnx builds the graph (fastmlp.export), onnxruntime runs it
            return (f"not installed ({' and '.join(absent)}; pip install onnx onnxruntime, "
                    "or the [onnx] extra)")
    return None


# --- worker processes -------------------------------------------------------------------------


class WorkerError(RuntimeError):
    """A worker failed to start, or answered an operation with an error."""


def worker_env(extra=None, contender=None):
    """The environment a worker starts from: this one without :data:`THREAD_ENV` (and,
    for ``contender``, without its :data:`CONTENDER_ENV_REMOVED`), with this fastmlp first on
    PYTHONPATH (so the workers run the same code), plus ``extra``. This process's own
    environment is left as it is."""
    removed = set(THREAD_ENV) | set(CONTENDER_ENV_REMOVED.get(contender, ()))
    env = {k: v for k, v in os.environ.items() if k not in removed}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env.update(extra or {})
    return env


class Worker:
    """One contender at one thread count in its own process; :meth:`ask` sends one operation
    and returns the answer (see :mod:`fastmlp._bench_worker` for the protocol)."""

    def __init__(self, contender, threads, data_path, lr, seed=0, extra_env=None, label=None):
        self.contender, self.threads = contender, threads
        self.label = label or f"{LABELS.get(contender, contender)} t{threads}"
        self._err = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fastmlp._bench_worker"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self._err, text=True, bufsize=1,
            env=worker_env(extra_env, contender))
        self._send({"contender": contender, "threads": threads, "data": data_path,
                    "lr": lr, "seed": seed})
        self.hello = None

    def _send(self, obj):
        try:
            self.proc.stdin.write(json.dumps(obj) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise WorkerError(f"{self.label}: worker exited ({self._stderr_tail()})") from None

    def _receive(self):
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            raise WorkerError(f"{self.label}: worker exited with status "
                              f"{self.proc.returncode} ({self._stderr_tail()})")
        answer = json.loads(line)
        if "error" in answer:
            raise WorkerError(f"{self.label}: {answer['error']}")
        return answer

    def _stderr_tail(self, lines=3):
        self._err.seek(0)
        tail = [s for s in self._err.read().splitlines() if s.strip()][-lines:]
        return " | ".join(tail) or "no message"

    def ready(self):
        """Wait for the set-up to finish (imports, threads, data); returns its answer."""
        if self.hello is None:
            self.hello = self._receive()
        return self.hello

    def ask(self, op, **kwargs):
        self._send({"op": op, **kwargs})
        return self._receive()

    def close(self):
        if self.proc.poll() is None:
            try:
                self.ask("quit")
            except (WorkerError, ValueError):
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout, self._err):
            f.close()


def start_workers(specs, data_path, lr, log=None, extra_env=None):
    """Start one worker per ``(contender, threads)`` in ``specs`` (all at once: their set-up is
    untimed) and wait until each is ready. Returns ``(workers, failures)``, failures a dict
    ``{(contender, threads): reason}``."""
    workers, failures = [], {}
    for contender, threads in specs:
        workers.append(Worker(contender, threads, data_path, lr, extra_env=extra_env))
    alive = []
    for w in workers:
        try:
            w.ready()
            alive.append(w)
            if log:
                log(f"  started {w.label} (pid {w.hello['pid']})")
        except (WorkerError, ValueError) as e:
            failures[(w.contender, w.threads)] = str(e)
            w.close()
    return alive, failures


def rotations(items, rounds):
    """``rounds`` orders of ``items``, the first one rotating: A B C, B C A, C A B, ..."""
    items = list(items)
    for r in range(rounds):
        k = r % len(items) if items else 0
        yield items[k:] + items[:k]


# --- measurements -----------------------------------------------------------------------------


def _row(w, **kw):
    return {"contender": w.contender, "threads": w.threads, "pid": w.hello["pid"], **kw}


def running(workers, sizes, training=False):
    """The workers whose contender runs the architecture ``sizes`` (:func:`skip_reason`):
    predicts with it, or with ``training`` trains it."""
    return [w for w in workers if skip_reason(w.contender, sizes, training) is None]


def skipped(configs, contenders, key=lambda name, sizes: name):
    """``{key(name, sizes): {contender: why}}`` for the configs some contenders skip (the
    inference-only contenders' lack of training is not a skip: :func:`inference_notes`)."""
    out = {}
    for name, sizes, _ in configs:
        for c in contenders:
            why = skip_reason(c, sizes, training=False)
            if why:
                out.setdefault(key(name, sizes), {})[c] = why
    return out


def prepare(workers, configs, log=None):
    """Build every config's model in every worker that runs it, and run its untimed warm-up
    (an epoch; an inference-only contender checks its probabilities against fastmlp's)."""
    for name, sizes, batch in configs:
        for w in running(workers, sizes):
            w.ask("prepare", config=name, sizes=sizes, batch_size=batch)
        if log:
            log(f"  warmed up {name}")


def time_epochs(workers, configs, rounds, log=None):
    """Per config, ``rounds`` rounds of one whole epoch call in every worker that trains it
    (:func:`running`; not the inference-only contenders), in rotation.

    Returns ``[{"config", "sizes", "batch_size", "contender", "threads", "pid",
    "seconds": [...]}, ...]``."""
    results = []
    for name, sizes, batch in configs:
        chosen = running(workers, sizes, training=True)
        rows = {id(w): _row(w, config=name, sizes=sizes, batch_size=batch, seconds=[])
                for w in chosen}
        results += rows.values()
        for r, order in enumerate(rotations(chosen, rounds)):
            for w in order:
                seconds = w.ask("epoch", config=name)["seconds"]
                rows[id(w)]["seconds"].append(seconds)
                if log:
                    log(f"  {name:<20} round {r + 1}/{rounds}  {w.label:<24} {seconds:8.3f} s")
    return results


def time_predict(workers, configs, rounds, calls, rows, log=None):
    """Per architecture (its first config's model, trained by the epochs): in every round
    and worker that runs it, one ``predict_proba`` of ``rows`` test rows and ``calls`` of
    one row.

    Returns rows with ``batch_seconds`` (one per round), ``latencies`` (every call) and their
    medians ``batch_median`` and ``latency``."""
    results, seen = [], set()
    for name, sizes, _ in configs:
        arch = arch_name(sizes)
        if arch in seen:
            continue
        seen.add(arch)
        chosen = running(workers, sizes)
        out = {id(w): _row(w, config=arch, model=name, batch_rows=rows, batch_seconds=[],
                           latencies=[]) for w in chosen}
        results += out.values()
        for order in rotations(chosen, rounds):
            for w in order:
                out[id(w)]["batch_seconds"] += w.ask("predict", config=name,
                                                     rows=rows)["seconds"]
                out[id(w)]["latencies"] += w.ask("predict", config=name, rows=1,
                                                 calls=calls)["seconds"]
        for row in out.values():
            row["batch_median"] = statistics.median(row["batch_seconds"])
            row["latency"] = statistics.median(row["latencies"])
        if log:
            log(f"  predict {arch} done")
    return results


def sklearn_fit_params(epochs):
    """The drop-in comparison's parameters, identical for both MLPClassifiers: a plain
    scikit-learn setup, run for exactly ``epochs`` epochs (no early stop)."""
    return dict(hidden_layer_sizes=(100,), activation="relu", solver="adam", alpha=1e-4,
                batch_size=200, learning_rate_init=1e-3, max_iter=epochs, shuffle=True,
                random_state=0, n_iter_no_change=epochs)


def time_sklearn_fit(workers, epochs, rounds):
    """``MLPClassifier(**params).fit(X, y)``: fastmlp.sklearn's in the numba workers,
    scikit-learn's in the sklearn workers, taking turns."""
    params = sklearn_fit_params(epochs)
    chosen = [w for w in workers if w.contender in ("numba", "sklearn")]
    out = {id(w): _row(w, estimator="fastmlp.sklearn" if w.contender == "numba"
                       else "scikit-learn", seconds=[], accuracy=None) for w in chosen}
    for order in rotations(chosen, rounds):
        for w in order:
            answer = w.ask("sklearn_fit", params=params)
            out[id(w)]["seconds"].append(answer["seconds"])
            out[id(w)]["accuracy"] = answer["accuracy"]
    return list(out.values())


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
    env = worker_env()

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


# --- summaries and tables ---------------------------------------------------------------------


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


def best_rows(rows, key, group="config"):
    """``{(group value, contender): the row with the smallest rows[key]}``."""
    best = {}
    for r in rows:
        if r.get(key) is None:
            continue
        k = (r[group], r["contender"])
        if k not in best or r[key] < best[k][key]:
            best[k] = r
    return best


def compare(rows, key, group="config"):
    """Per ``group`` value: fastmlp's best row against each contender's best row.

    Returns ``{group value: {"fastmlp": {"threads", key}, contender: {"threads", key,
    "fastmlp_speedup": their best / fastmlp's best}}}`` (> 1: fastmlp is faster). Every
    row also gets ``fastmlp_speedup`` = its value / fastmlp's best, and ``best`` (bool)."""
    best = best_rows(rows, key, group)
    out = {}
    for (g, c), r in best.items():
        out.setdefault(g, {})[c] = {"threads": r["threads"], key: r[key]}
    for r in rows:
        r["best"] = best.get((r[group], r["contender"])) is r
        ours = best.get((r[group], FASTMLP))
        if ours is not None and r.get(key):
            r["fastmlp_speedup"] = r[key] / ours[key]
    for g, per in out.items():
        if FASTMLP in per:
            for c, entry in per.items():
                entry["fastmlp_speedup"] = entry[key] / per[FASTMLP][key]
    return out


def summarize_epochs(results, n_samples, peak=None):
    """Add median/min/max, samples/s and GFLOP/s to every epoch row; returns the comparison
    of best thread counts (:func:`compare`)."""
    for row in results:
        if not row.get("seconds"):
            continue
        med = statistics.median(row["seconds"])
        row["median"], row["min"], row["max"] = med, min(row["seconds"]), max(row["seconds"])
        row["samples_per_s"] = n_samples / med
        row["gflops"] = epoch_flops(row["sizes"], n_samples) / med / 1e9
        row["gflop_per_epoch"] = epoch_flops(row["sizes"], n_samples) / 1e9
        if peak and row["threads"] in peak:
            row["fraction_of_sgemm"] = row["gflops"] / peak[row["threads"]]
    return compare(results, "median")


def _speedup(r):
    s = r.get("fastmlp_speedup")
    return "-" if s is None else f"{s:.2f}x"


def _with_skipped(results, skip, make_row, width):
    """``make_row(r)`` for every result, and after each config's rows one row per contender
    that skipped it (``skip``: ``{config: {contender: why}}``)."""
    rows, done = [], set()

    def flush(config):
        if config is not None and config not in done:
            done.add(config)
            # The reason is long: the row says "skipped", skip_notes() says why.
            rows.extend([LABELS[c], "", config, "skipped"] + [""] * (width - 4)
                        for c in (skip or {}).get(config, {}))

    last = None
    for r in results:
        if r["config"] != last:
            flush(last)
            last = r["config"]
        row = make_row(r)
        if row is not None:
            rows.append(row)
    flush(last)
    for config in skip or {}:
        flush(config)
    return rows


def _absent(why):
    """A missing contender's cell: a word or two (the reason, long, goes below the table:
    :func:`missing_notes`), so the column stays as wide as the times in it."""
    return "not installed" if why.startswith("not installed") else "did not run"


def missing_notes(missing):
    """One line per contender that did not run, and why."""
    return "\n".join(f"{LABELS[c]}: {why}" for c, why in missing.items())


def inference_notes(contenders):
    """One line per inference-only contender among ``contenders``: why it has no epoch."""
    return "\n".join(f"{LABELS[c]}: {INFERENCE_ONLY[c]}" for c in contenders
                     if c in INFERENCE_ONLY)


def skip_notes(skip):
    """One line per contender that skipped configs: which, and why."""
    by = {}
    for config, per in (skip or {}).items():
        for c, why in per.items():
            by.setdefault((c, why), []).append(config)
    return "\n".join(f"{LABELS[c]}: {why} ({', '.join(configs)})"
                     for (c, why), configs in by.items())


def epoch_table(results, missing, skip=None, inference=()):
    """The epoch rows; then one row per contender in ``inference`` (inference only: "no
    training") and per ``missing`` one, each a word or two in the time column (the reasons
    go below the table: :func:`inference_notes`, :func:`missing_notes`)."""

    def make_row(r):
        if not r.get("seconds"):
            return None
        return [LABELS[r["contender"]], f"{r['threads']}{' *' if r['best'] else ''}",
                r["config"], f"{r['median']:.3f}", f"{r['min']:.3f}–{r['max']:.3f}",
                f"{r['samples_per_s']:,.0f}", f"{r['gflops']:.1f}", _speedup(r)]

    rows = _with_skipped(results, skip, make_row, 8)
    rows += [[LABELS[c], "", "", "no training", "", "", "", ""] for c in inference
             if c not in missing]
    rows += [[LABELS[c], "", "", _absent(why), "", "", "", ""] for c, why in missing.items()]
    return format_table(["contender", "threads", "config", "s/epoch (median)", "min–max",
                         "samples/s", "GFLOP/s", "fastmlp best is"], rows, "lrlrrrrr")


def ratio_table(comparison, contenders, what, skip=None):
    """One line per config: fastmlp's best, then each peer's best and fastmlp's speed-up
    ("skipped" where the peer does not run that config: ``skip``, as for epoch_table)."""
    skip = skip or {}
    peers = [c for c in contenders if c != FASTMLP]
    rows = []
    for g, per in comparison.items():
        ours = per.get(FASTMLP)
        if ours is None:
            continue
        line = [g, f"{_fmt_seconds(ours[what])} (t{ours['threads']})"]
        for c in peers:
            p = per.get(c)
            line.append(("skipped" if c in skip.get(g, {}) else "-") if p is None else
                        f"{p['fastmlp_speedup']:.2f}x (t{p['threads']})")
        rows.append(line)
    return format_table(["config", "fastmlp best"] + [f"vs {LABELS[c]} best" for c in peers],
                        rows, "l" + "r" * (1 + len(peers)))


def predict_table(results, missing, skip=None):
    def make_row(r):
        return [LABELS[r["contender"]], str(r["threads"]), r["config"],
                _fmt_seconds(r["latency"]), _speedup_of(r, "latency"),
                _fmt_seconds(r["batch_median"]), f"{r['batch_rows'] / r['batch_median']:,.0f}",
                _speedup_of(r, "batch_median")]

    rows = _with_skipped(results, skip, make_row, 8)
    rows += [[LABELS[c], "", "", _absent(why), "", "", "", ""] for c, why in missing.items()]
    n = results[0]["batch_rows"] if results else PREDICT_ROWS
    return format_table(["contender", "threads", "net", "1 row (median)", "fastmlp best is",
                         f"{n:,} rows", "samples/s", "fastmlp best is"], rows, "lrlrrrrr")


def _speedup_of(r, key):
    s = r.get("speedup_" + key)
    return "-" if s is None else f"{s:.2f}x"


def summarize_predict(results):
    """Comparisons of best thread counts for the 1-row latency and the batch time."""
    out = {}
    for key in ("latency", "batch_median"):
        out[key] = compare(results, key)
        for r in results:
            r["speedup_" + key] = r.pop("fastmlp_speedup", None)
            r["best_" + key] = r.pop("best")
    return out


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
        return synthetic_mnist(args.samples or 60000, PREDICT_ROWS)
    from .datasets import load_mnist

    X, y, X_test, y_test = load_mnist(args.data_dir, progress=False)
    if args.samples:
        X, y = X[:args.samples], y[:args.samples]
    return X, y, X_test, y_test


def write_data(folder, X, y, X_test, y_test):
    """The workers' common data, one .npz (uncompressed: loads at disk speed)."""
    path = os.path.join(folder, "data.npz")
    np.savez(path, X=np.ascontiguousarray(X, np.float32), y=np.asarray(y, np.int64),
             X_test=np.ascontiguousarray(X_test, np.float32),
             y_test=np.asarray(y_test, np.int64))
    return path


# --- command line -----------------------------------------------------------------------------


# The CLI's argument checks, so that `fastmlp bench` words its errors like every subcommand.
_positive_float = _number(low=0, low_open=True)


def build_parser(prog="fastmlp bench"):
    p = argparse.ArgumentParser(
        prog=prog,
        description="Time one MNIST training epoch and predict_proba: fastmlp (numba and "
                    "numpy backends) against PyTorch CPU and scikit-learn, and, for "
                    "predict_proba only, onnxruntime running the same network exported to "
                    "ONNX; each library in its own process at each thread count, timing the "
                    "whole call a user makes, contenders alternating round by round; plus "
                    "start-up time.")
    p.add_argument("--configs", default=None,
                   help="comma-separated configs 'SIZES bBATCH' (or SIZES:BATCH), e.g. "
                        "'784-128-10 b64,784-512-256-10:128,cnn b128'; 'cnn' is the CNN "
                        "conv16k5p2-pool2-conv32k5p2-pool2-128-10 on 1x28x28 images, other "
                        "CNNs put --layers tokens between the sizes, e.g. "
                        "'784-conv8k3-pool2-64-10 b128' (default: "
                        + ", ".join(CONFIGS) + ")")
    p.add_argument("--contenders", default=",".join(CONTENDERS),
                   help=f"comma-separated subset of {','.join(CONTENDERS)} (default: all; "
                        "onnxruntime is timed in predict only)")
    p.add_argument("--rounds", type=_positive_int, default=None,
                   help="timed epochs per contender, thread count and config (default 5; 3 "
                        "with --quick)")
    p.add_argument("--threads", default="1,N",
                   help="comma-separated thread counts, each contender runs at each; N = "
                        f"the CPUs here, {os.cpu_count()} (default 1,N)")
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


def main(argv=None, prog="fastmlp bench", parser=None):
    """Run the benchmark; returns 0. Bad options: ``parser.error`` (argparse's: usage and
    exit status 2; the ``fastmlp`` command passes a parser whose errors are its one
    ``fastmlp: error:`` line). No data: ValueError (one line from either command)."""
    parser = parser or build_parser(prog)
    args = parser.parse_args(argv)
    try:
        names = _split_list(args.configs) if args.configs is not None else (
            QUICK_CONFIGS if args.quick else list(CONFIGS))
        configs = [parse_config(c) for c in names]
        threads = parse_threads(args.threads)
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
    rounds = args.rounds or (3 if args.quick else 5)
    if args.quick and args.samples is None:
        args.samples = QUICK_SAMPLES

    try:
        X, y, X_test, y_test = load_data(args)
    except (OSError, ValueError) as e:  # DatasetNotFoundError is one of these
        text = " ".join(str(e).split())  # one line
        text = text[len("MNIST: "):] if text.startswith("MNIST: ") else text
        raise ValueError(f"cannot load MNIST: {text} (use --data-dir, FASTMLP_DATA or "
                         "--synthetic)") from None
    X_test, y_test = X_test[:PREDICT_ROWS], y_test[:PREDICT_ROWS]
    n = X.shape[0]

    def log(line):
        print(line, file=sys.stderr, flush=True)

    cpu = cpu_info()
    report = {"cpu": cpu, "parent_pid": os.getpid(), "threads": threads, "samples": n,
              "rounds": rounds, "learning_rate": args.learning_rate,
              "data": "synthetic" if args.synthetic else "mnist",
              "machine": platform.machine(), "command": [prog] + list(argv or sys.argv[1:]),
              "worker_env_removed": [k for k in THREAD_ENV if k in os.environ]}
    missing = {c: missing_reason(c) for c in contenders if missing_reason(c)}
    runnable = [c for c in contenders if c not in missing]
    report["worker_env_removed_for"] = {
        c: [k for k in CONTENDER_ENV_REMOVED[c] if k in os.environ]
        for c in runnable if c in CONTENDER_ENV_REMOVED}
    report["load_average"] = load_average()
    print(f"fastmlp bench: {n:,} training samples ({report['data']}), {rounds} round(s), "
          f"threads {','.join(map(str, threads))}, learning rate {args.learning_rate}")
    print(cpu_line(cpu))
    for line in load_lines(report["load_average"], cpu["cpus"] or 1):
        print(line)
    unset = sorted({k for ks in report["worker_env_removed_for"].values() for k in ks})
    if unset:
        who = [LABELS[c] for c, ks in report["worker_env_removed_for"].items() if ks]
        print(", ".join(f"{k}={os.environ[k]}" for k in unset) + " set here: unset in the "
              + " and ".join(who) + " workers, so that OpenBLAS picks its kernels for this "
              "CPU there")

    with tempfile.TemporaryDirectory(prefix="fastmlp-bench-") as tmp:
        data_path = write_data(tmp, X, y, X_test, y_test)
        del X, y, X_test, y_test  # the workers hold the data now
        log("starting workers:")
        specs = [(c, t) for c in runnable for t in threads]
        workers, failed = start_workers(specs, data_path, args.learning_rate, log)
        try:
            for (c, t), why in failed.items():
                missing[c] = f"failed: {why}"
                print(f"{LABELS[c]} with {t} thread(s) failed to start: {why}",
                      file=sys.stderr)
            # A contender that failed at one thread count is left out at all of them.
            for w in [w for w in workers if w.contender in missing]:
                w.close()
            workers = [w for w in workers if w.contender not in missing]
            _run(args, report, workers, configs, rounds, contenders, missing, n, log)
        finally:
            for w in workers:
                w.close()

    if not args.no_startup and FASTMLP in contenders and FASTMLP not in missing:
        log("start-up:")
        report["startup_warm"] = time_startup(max(threads), repeats=1 if args.quick else 3)
        if args.cold:
            report["startup_cold"] = time_startup(max(threads), cold=True,
                                                  repeats=1 if args.quick else 2)
        print()
        print(f"start-up: fresh `python -c` → import fastmlp, fit 512 samples, predict 1 "
              f"({max(threads)} thread(s))")
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

    report["missing"] = missing
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2, default=str)
        print(f"\nwrote {args.json}")
    return 0


def _run(args, report, workers, configs, rounds, contenders, missing, n, log):
    """The timed part of :func:`main`, with every worker started."""
    report["workers"] = []
    for w in workers:
        info = w.ask("info")
        report["workers"].append({"contender": w.contender, "threads": w.threads,
                                  "pid": info["pid"], "thread_state": info["threads"],
                                  "modules": info["modules"], "env": info["env"],
                                  "versions": w.hello["versions"]})
    versions = {}
    for entry in report["workers"]:
        versions.update(entry["versions"])
    report["versions"] = versions
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    layers = {e["thread_state"].get("numba_threading_layer") for e in report["workers"]} - {None}
    if layers:
        print(f"numba threading layer: {', '.join(sorted(layers))}")
    kernels = {}  # OpenBLAS's kernels (its "architecture") -> the contenders that loaded them
    for e in report["workers"]:
        for arch in e["thread_state"].get("blas_arch", []):
            kernels.setdefault(arch, [])
            if LABELS[e["contender"]] not in kernels[arch]:
                kernels[arch].append(LABELS[e["contender"]])
    if kernels and (len(kernels) > 1 or report["worker_env_removed_for"]):
        print("OpenBLAS kernels: " + "; ".join(f"{arch} in {', '.join(who)}"
                                                for arch, who in kernels.items()))

    if not args.quick:
        report["sgemm_gflops"] = {}
        for w in workers:
            if w.contender == "numpy":
                report["sgemm_gflops"][w.threads] = w.ask("sgemm")["gflops"]
    skip = skipped(configs, [c for c in contenders if c not in missing])
    skip_arch = skipped(configs, [c for c in contenders if c not in missing],
                        key=lambda name, sizes: arch_name(sizes))
    report["skipped"] = skip
    log("warm-up:")
    prepare(workers, configs, log)
    log("epochs:")
    epochs = time_epochs(workers, configs, rounds, log=log)
    report["epoch_comparison"] = summarize_epochs(epochs, n, report.get("sgemm_gflops"))
    report["epochs"] = epochs
    print()
    print("One training epoch: the whole fit(epochs=1) / train-one-epoch / partial_fit call, "
          "each library in its own process (* = that contender's best thread count; "
          "fastmlp best is = this time / fastmlp's best time, > 1: fastmlp is faster)")
    present = [c for c in contenders if c not in missing]  # no column of "-" for the absent
    inference = [c for c in present if not trains(c)]
    report["inference_only"] = {c: INFERENCE_ONLY[c] for c in inference}
    print(epoch_table(epochs, missing, skip, inference))
    if skip:
        print(skip_notes(skip))
    if inference:
        print(inference_notes(inference))
    if missing:
        print(missing_notes(missing))
    print()
    print("fastmlp (numba) at its best thread count against each contender at its best:")
    print(ratio_table(report["epoch_comparison"], [c for c in present if trains(c)], "median",
                      skip))
    if report.get("sgemm_gflops"):
        print("reference: numpy float32 2048x2048 matmul: " + ", ".join(
            f"{g:.1f} GFLOP/s at {t} thread(s)" for t, g in report["sgemm_gflops"].items()))
    print("GFLOP/s counts forward+backward products: 2n(Σ M) + 2n(Σ M) + 2n(Σ_{l>0} M), "
          "M = in·out (dense) or F·C·kh·kw·OH·OW (conv) per image")
    if any(is_cnn(sizes) for _, sizes, _ in configs):
        print(f"{CNN_NAME}: a {'x'.join(map(str, IMAGE))} image, "
              + "-".join(map(str, CNN_SIZES[1:])) + " (Conv2D(16, 5, padding=2), "
              "MaxPool2D(2), Conv2D(32, 5, padding=2), MaxPool2D(2), 128, 10; PyTorch: the "
              "same layers, ReLU after each conv and hidden dense layer)")

    if not args.no_predict:
        log("predict:")
        calls = 50 if args.quick else 400
        predict = time_predict(workers, configs, rounds, calls, PREDICT_ROWS, log)
        report["predict_comparison"] = summarize_predict(predict)
        report["predict"] = predict
        rows = predict[0]["batch_rows"] if predict else PREDICT_ROWS
        print()
        print(f"predict_proba, the whole call from numpy to numpy: 1 row (median of "
              f"{calls} calls x {rounds} rounds) and {rows:,} rows (median of {rounds})")
        print(predict_table(predict, missing, skip_arch))
        for key, what in (("latency", "1 row"), ("batch_median", f"{rows:,} rows")):
            print()
            print(f"predict_proba {what}: fastmlp (numba) best against each contender's best:")
            print(ratio_table(report["predict_comparison"][key], present, key, skip_arch))

    skl = [w for w in workers if w.contender == "sklearn"]
    if not args.no_sklearn_fit and skl:
        epochs_fit = args.sklearn_epochs or (2 if args.quick else 10)
        log(f"MLPClassifier.fit ({epochs_fit} epochs):")
        fits = time_sklearn_fit(workers, epochs_fit, 1 if args.quick else 2)
        for r in fits:
            r["best_seconds"] = min(r["seconds"])
        theirs = min((r["best_seconds"] for r in fits if r["estimator"] == "scikit-learn"))
        report["sklearn_fit"] = {"epochs": epochs_fit, "params": sklearn_fit_params(
            epochs_fit), "results": fits}
        print()
        print(f"MLPClassifier.fit, identical parameters ({epochs_fit} epochs, hidden (100,), "
              "adam, batch 200), best of the rounds, each in its own process")
        print(format_table(
            ["estimator", "threads", "fit seconds", "test accuracy",
             "vs scikit-learn best"],
            [[r["estimator"], str(r["threads"]), f"{r['best_seconds']:.2f}",
              f"{100 * r['accuracy']:.2f} %", f"{theirs / r['best_seconds']:.2f}x"]
             for r in fits], "lrrrr"))


if __name__ == "__main__":
    try:
        sys.exit(main(prog="python -m fastmlp.bench"))
    except ValueError as e:
        print(f"python -m fastmlp.bench: error: {e}", file=sys.stderr)
        sys.exit(2)
