"""Cold and warm start: how long a fresh process waits for the compiled kernels.

Each case runs in a fresh ``python -c`` with an empty ``NUMBA_CACHE_DIR`` (cold: everything it
uses is compiled) and again with that cache filled (warm: loaded). Reported per case: wall
seconds and the process's CPU seconds (user + system: the compile is mostly single-threaded,
and CPU time is steadier than wall time on a shared machine).

    python benchmarks/cold_start.py [--repeats 1]

Cases:
* ``mlp fit+predict``: ``Network([784, 128, 10]).fit(...)`` then ``predict_proba`` — what
  ``fastmlp train``'s default recipe compiles (training, then the evaluation pass);
* ``cnn fit+predict``: the same for ``fastmlp train --model cnn``'s architecture;
* ``predict after load``: ``Network.load(...).predict_proba`` alone (a server's start-up).

Results: benchmarks/README.md, "Cold start".
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

SETUP = """
import json, resource, time
t0 = time.perf_counter()
import numpy as np, fastmlp
from fastmlp import Conv2D, MaxPool2D
rng = np.random.default_rng(0)
X = rng.random((256, 784), dtype=np.float32)
X[X < 0.8] = 0  # MNIST-like sparsity: the CSR path of real training
y = rng.integers(0, 10, 256)
"""
CASES = {
    "mlp fit+predict": """
net = fastmlp.Network([784, 128, 10], seed=0)
net.fit(X, y, epochs=1, batch_size=64, verbose=False)
net.predict_proba(X)
""",
    "cnn fit+predict": """
net = fastmlp.Network([(1, 28, 28), Conv2D(16, 5, padding=2), MaxPool2D(2),
                       Conv2D(32, 5, padding=2), MaxPool2D(2), 128, 10], seed=0)
net.fit(X[:64], y[:64], epochs=1, batch_size=32, verbose=False)
net.predict_proba(X)
""",
    "predict after load": """
net = fastmlp.Network.load(MODEL)
net.predict_proba(X[:1])
""",
}
REPORT = """
r = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"wall": time.perf_counter() - t0, "cpu": r.ru_utime + r.ru_stime}))
"""


def run(case, cache, model):
    script = SETUP + CASES[case].replace("MODEL", repr(model)) + REPORT
    env = {**os.environ, "NUMBA_CACHE_DIR": cache}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=1800)
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=1)
    args = p.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from fastmlp import Network, bench

    print(bench.cpu_line(bench.cpu_info()))
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "m.npz")
        Network([784, 128, 10], seed=0, backend="numpy").save(model)
        print(f"{'case':22} {'cold wall':>10} {'cold cpu':>9} {'warm wall':>10} {'warm cpu':>9}")
        for case in CASES:
            cold, warm = [], []
            for i in range(args.repeats):
                cache = os.path.join(tmp, f"cache-{case.replace(' ', '-')}-{i}")
                cold.append(run(case, cache, model))
                warm.append(run(case, cache, model))
            med = {k: {f: statistics.median(r[f] for r in v) for f in ("wall", "cpu")}
                   for k, v in (("cold", cold), ("warm", warm))}
            print(f"{case:22} {med['cold']['wall']:9.1f}s {med['cold']['cpu']:8.1f}s "
                  f"{med['warm']['wall']:9.1f}s {med['warm']['cpu']:8.1f}s", flush=True)


if __name__ == "__main__":
    main()
