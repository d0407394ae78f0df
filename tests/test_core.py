"""The compiled core's promises (fastmlp.kernels.threads, fastmlp.kernels._cache):

* each layer's work is split between threads so that every number is computed by one thread
  in one order: 1, 2 and 3 threads give the same bits, and agree with the reference;
* two Python threads run compiled code at once, and a user's own parallel numba code beside
  fastmlp does not abort the process;
* an edited kernel file takes effect on the next run (the cache is keyed by every kernel's
  source);
* a network compiles only the layer kinds it has.

Thread counts above the machine's cores run in a subprocess started with NUMBA_NUM_THREADS=3
(numba fixes its pool size at start)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

THREAD_COUNTS = """
import json, numpy as np, fastmlp
from fastmlp import AvgPool2D, BatchNorm, Conv2D, Dropout, MaxPool2D
rng = np.random.default_rng(0)
cases = {
    "mlp": ([30, 40, 24, 5], rng.random((150, 30)) * (rng.random((150, 30)) > 0.7)),
    "cnn": ([(2, 9, 9), Conv2D(12, 3, padding=1), MaxPool2D(2), Conv2D(7, 2, stride=2), 11, 4],
            rng.random((70, 162))),
    # BatchNorm's statistics span the whole batch whatever the thread count
    "layers": ([(2, 9, 9), Conv2D(12, 3, padding=1), BatchNorm(), AvgPool2D(2, 1),
                Dropout(0.2), 40, BatchNorm(), Dropout(0.3), 4], rng.random((70, 162))),
}
out = {}
for name, (spec, X) in cases.items():
    n_out = spec[-1]
    y = rng.integers(0, n_out, X.shape[0])
    results = []
    for threads in (1, 2, 3):
        fastmlp.set_num_threads(threads)
        for batch in (64, 2):  # 2: fewer rows than threads
            net = fastmlp.Network(spec, dtype="float64", seed=3)
            net.fit(X, y, epochs=2, batch_size=batch, optimizer="adam", learning_rate=0.01,
                    l2=0.01, dropout=0.1, verbose=False)
            grads = net.gradients(X, y, l2=0.1)
            results.append([net._params.tobytes().hex(), net.predict_proba(X).tobytes().hex(),
                            net.forward(X, training=True)[-1].tobytes().hex(),
                            b"".join(g.tobytes() for pair in grads for g in pair).hex()])
    ref = fastmlp.Network(spec, dtype="float64", seed=3, backend="numpy")
    ref.fit(X, y, epochs=2, batch_size=64, optimizer="adam", learning_rate=0.01, l2=0.01,
            dropout=0.1, verbose=False)
    fast = fastmlp.Network(spec, dtype="float64", seed=3)
    fastmlp.set_num_threads(3)
    fast.fit(X, y, epochs=2, batch_size=64, optimizer="adam", learning_rate=0.01, l2=0.01,
             dropout=0.1, verbose=False)
    out[name] = {"identical": [r == results[i % 2] for i, r in enumerate(results)],
                 "to_reference": float(np.abs(fast._params - ref._params).max()),
                 "threads": fastmlp.get_num_threads()}
print(json.dumps(out))
"""


def run_python(script, env_extra=None, timeout=900):
    env = dict(os.environ)
    env.update(env_extra or {})
    env = {k: v for k, v in env.items() if v is not None}  # None: unset it
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def test_one_two_and_three_threads_give_the_same_bits():
    out = json.loads(run_python(THREAD_COUNTS, {"NUMBA_NUM_THREADS": "3"}))
    for name, result in out.items():
        assert result["threads"] == 3, name
        assert all(result["identical"]), (name, result["identical"])
        assert result["to_reference"] < 1e-9, (name, result["to_reference"])


USER_PARALLEL = """
import threading, numpy as np, numba, fastmlp
from numba import njit, prange

@njit(parallel=True)
def users_sum(a):
    s = 0.0
    for i in prange(a.size):
        s += a[i]
    return s

X = np.random.default_rng(0).random((4000, 50), dtype=np.float32)
y = np.arange(4000) % 3
net = fastmlp.Network([50, 64, 3], seed=0)
net.fit(X[:100], y[:100], epochs=1, verbose=False)  # fastmlp has run once: its layer chosen
done = []
def train():
    net.fit(X, y, epochs=3, batch_size=32, verbose=False)
    done.append("fit")
def users_code():
    a = np.ones(100000)
    for _ in range(300):
        assert users_sum(a) == 100000.0
    done.append("user")
threads = [threading.Thread(target=train), threading.Thread(target=users_code),
           threading.Thread(target=users_code)]
for t in threads: t.start()
for t in threads: t.join()
print(sorted(done), numba.threading_layer())
"""


def test_users_parallel_numba_code_beside_training_does_not_abort():
    """After fastmlp has chosen numba's threading layer, a user's own
    ``@njit(parallel=True)`` function running in other threads while fastmlp trains finishes
    (numba's workqueue layer would abort the process with 'Concurrent access')."""
    env = {"NUMBA_THREADING_LAYER": None}
    line = run_python(USER_PARALLEL, env)
    assert line == "['fit', 'user', 'user'] tbb", line


EDITED = """
import numpy as np, fastmlp
net = fastmlp.Network([4, 3], activations=["identity"], cost="mse", seed=0)
net.weights[0] = np.eye(3, 4)
net.biases[0] = np.zeros(3)
print(net.predict_proba(np.array([[1.0, -2.0, 3.0, 4.0]]))[0].tolist())
"""


def test_an_edited_kernel_takes_effect_on_the_next_run(tmp_path):
    """numba keys a cached function by its own file only; fastmlp keys every kernel by the
    hash of all kernel sources. Edit a copy's activations.py (identity doubles its input):
    the cached inference entry point (in inference.py, unchanged) must run the new code."""
    copy = tmp_path / "src"
    shutil.copytree(ROOT / "fastmlp", copy / "fastmlp",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = {"PYTHONPATH": str(copy), "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    script = "import sys; sys.path.insert(0, %r)\n" % str(copy) + EDITED
    assert run_python(script, env) == "[1.0, -2.0, 3.0]"
    assert run_python(script, env) == "[1.0, -2.0, 3.0]"  # from the cache
    activations = copy / "fastmlp" / "kernels" / "activations.py"
    text = activations.read_text()
    marker = "        elif code == EXP:"
    assert marker in text
    activations.write_text(text.replace(marker, (
        "        elif code == IDENTITY:\n"
        "            for j in range(cols):\n"
        "                Z[r, j] = 2 * Z[r, j]\n" + marker), 1))
    assert run_python(script, env) == "[2.0, -4.0, 6.0]"


COMPILED = """
import numpy as np, fastmlp
from fastmlp.kernels import threads
net = fastmlp.Network([30, 8, 3], seed=0)
X = np.random.default_rng(0).random((50, 30))
net.fit(X, np.arange(50) % 3, epochs=1, verbose=False)
net.predict_proba(X)
print(len(threads._conv_forward_split.overloads) + len(threads._conv_weight_split.overloads)
      + len(threads._conv_input_split.overloads), len(threads._gemm_split.overloads) > 0)
"""


def test_a_dense_network_compiles_no_convolution_code(tmp_path):
    """Compile what is used: fitting and predicting with an MLP never compiles the
    convolution kernels (a cold start pays only for the layer kinds it has)."""
    line = run_python(COMPILED, {"NUMBA_CACHE_DIR": str(tmp_path / "cache")})
    assert line == "0 True", line


def test_a_huge_but_valid_model_predicts_in_small_blocks_and_an_impossible_one_is_refused(
        monkeypatch):
    """A small model file can ask for a huge workspace (16,384 1x1 filters on a 28x28 image:
    51 MB of activations per row). Prediction works through it in blocks that fit a fixed
    budget instead of allocating for 256 rows at once; a model whose single row cannot fit
    in memory is refused, saying how much it would need, before anything is allocated."""
    import numpy as np

    from fastmlp import Conv2D, MaxPool2D, Network
    from fastmlp import _compiled

    net = Network([(1, 28, 28), Conv2D(16384, 1), MaxPool2D(28), 10], seed=0)
    per_row = _compiled.workspace_bytes(net, 1, False)
    block = net._backend._block(10_000)
    assert 1 <= block < _compiled.PREDICT_BLOCK
    assert block * per_row <= _compiled.WORKSPACE_BUDGET
    X = np.random.default_rng(0).random((3, 784), dtype=np.float32)
    reference = Network([(1, 28, 28), Conv2D(16384, 1), MaxPool2D(28), 10], seed=0,
                        backend="numpy")
    np.testing.assert_allclose(net.predict_proba(X), reference.predict_proba(X), rtol=1e-4,
                               atol=1e-6)

    # (memory fixed at 16 GiB: the refusal must not depend on the machine the test runs on)
    monkeypatch.setattr(_compiled, "physical_memory", lambda: 16 * 2**30)
    impossible = Network([(1, 64, 64), Conv2D(2**20, 1), MaxPool2D(64), 10], seed=0)
    with pytest.raises(ValueError, match=r"predicting 1 sample at a time needs [\d,.]+ GiB "
                                         r"of workspace .* 16\.0 GiB"):
        impossible.predict_proba(np.zeros((1, 4096), np.float32))
    with pytest.raises(ValueError, match=r"training on 2 samples at a time needs"):
        impossible.fit(np.zeros((2, 4096), np.float32), [0, 1], epochs=1, verbose=False)
