"""One training epoch on MNIST: fastmlp (numba, numpy reference) vs PyTorch CPU vs
scikit-learn, same learning rate, batch size and thread count.

Each test builds a fresh model, warms it up on a few thousand samples (numba compiles or loads
its cache there), then times ``FASTMLP_BENCH_ROUNDS`` epochs over ``FASTMLP_BENCH_SAMPLES``
samples. fastmlp is timed by ``History.seconds`` (its training loop: the CSR copy of X and the
workspaces, made once per ``fit``, are left out, as the pre-made tensors are for torch); the
others by the wall time of their epoch. ``extra_info`` carries samples/s and dense GFLOP/s.

For a head-to-head that alternates the contenders round by round in one process, use
``fastmlp bench`` instead: this suite runs them one after another.
"""

import pytest

from fastmlp import bench

CONFIGS = [
    ("784-128-10", [784, 128, 10], 32),
    ("784-128-10", [784, 128, 10], 64),
    ("784-128-10", [784, 128, 10], 128),
    ("784-128-10", [784, 128, 10], 256),
    ("784-512-256-10", [784, 512, 256, 10], 128),
]
LEARNING_RATE = 0.05


@pytest.mark.parametrize("contender", bench.CONTENDERS)
@pytest.mark.parametrize("arch,sizes,batch", CONFIGS,
                         ids=[f"{a}-b{b}" for a, _, b in CONFIGS])
def test_epoch(benchmark, mnist_train, rounds, skip_missing, contender, arch, sizes, batch):
    skip_missing(contender)
    X, y = mnist_train
    runner = bench.make_contender(contender, sizes, batch, LEARNING_RATE, X, y, seed=0)
    warm = min(X.shape[0], bench.WARMUP_SAMPLES)
    runner.epoch(X[:warm], y[:warm])
    benchmark.group = f"epoch {arch} b{batch} ({X.shape[0]:,} samples)"
    benchmark._timer = runner.clock  # read before and after each round (see bench.py)
    benchmark.extra_info["timer"] = ("History.seconds" if contender in ("numba", "numpy")
                                     else "wall")
    benchmark.pedantic(runner.epoch, rounds=rounds, iterations=1, warmup_rounds=0)
    if benchmark.stats is None:  # --benchmark-disable: ran once as a smoke test
        return
    median = benchmark.stats.stats.median
    benchmark.extra_info["samples_per_s"] = X.shape[0] / median
    benchmark.extra_info["gflops_dense"] = bench.epoch_flops(sizes, X.shape[0]) / median / 1e9
