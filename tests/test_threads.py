"""``import fastmlp`` changes nothing outside fastmlp: no environment variable, no other
library's settings. Numba's threading layer is chosen only where the user left it open.

Each check runs in a fresh interpreter: the threading layer is fixed once numba's pool starts,
and this test process may have started it already."""

import json
import os
import subprocess
import sys

import pytest

SCRIPT = """
import json, os, sys
before = dict(os.environ)
import fastmlp
after_import = dict(os.environ)
import numpy as np
X = np.random.default_rng(0).random((64, 20), dtype=np.float32)
net = fastmlp.Network([20, 8, 3], seed=0)
net.fit(X, np.arange(64) % 3, epochs=1, batch_size=16, verbose=False)
fastmlp.set_num_threads(1)
import numba
print(json.dumps({"import_same": after_import == before, "fit_same": dict(os.environ) == before,
                  "changed": sorted(k for k in set(before) | set(os.environ)
                                    if before.get(k) != os.environ.get(k)),
                  "layer": numba.threading_layer()}))
"""


def _run(extra_env=None):
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "NUMBA_THREADING_LAYER")}
    env.update(extra_env or {})
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_and_training_leave_the_environment_unchanged():
    out = _run()
    assert out["import_same"] and out["fit_same"], out["changed"]
    from fastmlp import _threads

    assert out["layer"] == _threads.SAFE_LAYER  # tbb: a dependency where it has wheels


@pytest.mark.parametrize("layer", ["omp", "workqueue"])
def test_the_users_threading_layer_wins(layer):
    out = _run({"NUMBA_THREADING_LAYER": layer})
    assert out["layer"] == layer
    assert out["fit_same"]


CONCURRENT = """
import threading
import numpy as np
import fastmlp
X = np.random.default_rng(0).random((2000, 30), dtype=np.float32)
y = np.arange(2000) % 3
shared = fastmlp.Network([30, 16, 3], seed=0)
expected = shared.predict_proba(X)
errors = []
def predict():
    try:
        for _ in range(30):
            assert np.array_equal(shared.predict_proba(X), expected)
    except Exception as exc:  # noqa: BLE001 - reported below
        errors.append(repr(exc))
def fit(seed):
    try:
        fastmlp.Network([30, 16, 3], seed=seed).fit(X, y, epochs=2, batch_size=64,
                                                    verbose=False)
    except Exception as exc:  # noqa: BLE001 - reported below
        errors.append(repr(exc))
threads = [threading.Thread(target=predict) for _ in range(3)] + [
    threading.Thread(target=fit, args=(s,)) for s in range(2)]
for t in threads: t.start()
for t in threads: t.join()
print("errors", errors)
"""


@pytest.mark.parametrize("layer", [None, "workqueue"])
def test_parallel_kernels_from_several_python_threads(layer):
    """Several Python threads predicting and fitting at once all finish with the right
    answers: on tbb (the default) they run side by side; on numba's workqueue layer, which
    aborts the process when two threads enter parallel code at once, fastmlp's calls take
    turns."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    if layer:
        env["NUMBA_THREADING_LAYER"] = layer
    done = subprocess.run([sys.executable, "-c", CONCURRENT], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "errors []"


def test_import_and_the_numpy_backend_never_load_numba():
    """`import fastmlp` stays light: building networks (dense or convolutional) and training
    on the reference backend must not import numba."""
    script = ("import sys, numpy as np, fastmlp\n"
              "from fastmlp import Conv2D, MaxPool2D\n"
              "fastmlp.Network([(1, 6, 6), Conv2D(2, 3), MaxPool2D(2), 3])\n"
              "net = fastmlp.Network([4, 3], backend='numpy')\n"
              "net.fit(np.ones((4, 4)), [0, 1, 2, 0], epochs=1, verbose=False)\n"
              "print('numba' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"


def test_compile_ticker_counts_only_when_preparation_is_slow(capsys):
    """fit's first call says it is compiling, with the seconds so far, instead of a frozen
    progress bar; a quick cache load says nothing."""
    import time

    from fastmlp._compiled import Ticker as _Ticker

    quick = _Ticker("preparing", every=0.05, quiet=1.0)
    quick.stop()
    assert capsys.readouterr().err == ""
    slow = _Ticker("preparing", every=0.05, quiet=0.05)
    time.sleep(0.3)
    slow.stop()
    err = capsys.readouterr().err
    assert "\rpreparing: 0 s" in err and err.endswith("preparing: done in 0 s\n")
