"""Which numba threading layer should fastmlp choose? (Since each layer's products are split
between threads, a batch costs several fork-joins: tbb's ~2 µs against workqueue's ~70 µs.)
One MNIST epoch (the whole
``fit(epochs=1)`` call) at 2 threads under each candidate, idle and with a busy-loop process
on the machine, plus a PyTorch epoch with and without the OMP_WAIT_POLICY=PASSIVE that
``import fastmlp`` used to set. Each variant runs in its own worker process (the same workers
as ``fastmlp bench``); the variants alternate round by round.

    FASTMLP_DATA=/path/to/data python benchmarks/threading_layer.py [--rounds 5] [--threads 2]

Results: benchmarks/README.md, "Numba's threading layer".
"""

import argparse
import statistics
import subprocess
import sys
import tempfile

from fastmlp import bench
from fastmlp.datasets import load_mnist

CONFIGS = [bench.parse_config("784-128-10 b64"), bench.parse_config("784-512-256-10 b128")]
# label -> (contender, extra environment of that worker only)
VARIANTS = {
    "fastmlp, omp + OMP_WAIT_POLICY=PASSIVE (old)": (
        "numba", {"NUMBA_THREADING_LAYER": "omp", "OMP_WAIT_POLICY": "PASSIVE"}),
    "fastmlp, omp, spinning (numba's default here)": ("numba", {"NUMBA_THREADING_LAYER": "omp"}),
    "fastmlp, workqueue (fastmlp's choice until 0.2)": (
        "numba", {"NUMBA_THREADING_LAYER": "workqueue"}),
    "fastmlp, tbb (fastmlp's choice now)": ("numba", {}),
    "PyTorch, OMP_WAIT_POLICY=PASSIVE (old import fastmlp)": (
        "torch", {"OMP_WAIT_POLICY": "PASSIVE"}),
    "PyTorch, environment untouched (now)": ("torch", {}),
}


def run(data_path, threads, rounds, log, variants=VARIANTS):
    workers = []
    try:
        for label, (contender, env) in variants.items():
            w = bench.Worker(contender, threads, data_path, 0.05, extra_env=env, label=label)
            workers.append(w)
        for w in workers:
            w.ready()
            layer = w.ask("info")["threads"].get("numba_threading_layer")
            log(f"  ready: {w.label} (pid {w.hello['pid']}, layer {layer})")
        bench.prepare(workers, CONFIGS)
        rows = bench.time_epochs(workers, CONFIGS, rounds, log=log)
    finally:
        for w in workers:
            w.close()
    labels = {w.hello["pid"]: w.label for w in workers}
    return [(labels[r["pid"]], r["config"], statistics.median(r["seconds"]), min(r["seconds"]),
             max(r["seconds"])) for r in rows]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--loads", default="idle,busy", help="idle, busy or both (default)")
    p.add_argument("--no-torch", action="store_true", help="the fastmlp variants only")
    args = p.parse_args()
    variants = {k: v for k, v in VARIANTS.items() if not (args.no_torch and v[0] == "torch")}

    def log(line):
        print(line, file=sys.stderr, flush=True)

    print(bench.cpu_line(bench.cpu_info()))
    X, y, X_test, y_test = load_mnist(None, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        data_path = bench.write_data(tmp, X, y, X_test[:10], y_test[:10])
        for load in [x.strip() for x in args.loads.split(",")]:
            hog = None
            if load == "busy":  # one more runnable process than the machine has idle
                hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            try:
                log(f"{load}:")
                result = run(data_path, args.threads, args.rounds, log, variants)
            finally:
                if hog is not None:
                    hog.kill()
                    hog.wait()
            print(f"\n{load} ({'a busy-loop process running beside' if hog else 'no extra load'}"
                  f"), {args.threads} threads, median of {args.rounds} rounds:")
            print(bench.format_table(
                ["variant", "config", "s/epoch (median)", "min–max"],
                [[v, c, f"{m:.3f}", f"{lo:.3f}–{hi:.3f}"] for v, c, m, lo, hi in result],
                "llrr"))


if __name__ == "__main__":
    sys.exit(main())
