"""One training epoch on MNIST: fastmlp (numba, numpy reference) vs PyTorch CPU vs
scikit-learn, same learning rate and batch size, each at every ``FASTMLP_BENCH_THREADS``.
The CNN (``cnn``: conv16k5p2-pool2-conv32k5p2-pool2-128-10, batch 128) is fastmlp (numba)
against PyTorch's same net; the numpy reference and scikit-learn skip it
(``fastmlp.bench.CNN_SKIPPED`` says why).

Every contender runs in its own worker process (conftest.py); a test prepares the model there
(one untimed warm-up epoch: numba compiles or loads its cache), then times
``FASTMLP_BENCH_ROUNDS`` epochs over ``FASTMLP_BENCH_SAMPLES`` samples. The time is the whole
call a user makes: ``net.fit(X, y, epochs=1)`` for fastmlp (input checks and CSR copy
included), a train-one-epoch function taking the numpy arrays for PyTorch, ``partial_fit``
for scikit-learn. ``extra_info`` carries samples/s and dense GFLOP/s (the CNN's convolutions
counted as ``bench.epoch_flops`` does).

This suite runs the contenders one after another; ``fastmlp bench`` alternates them round by
round and prints the comparison of best thread counts.
"""

import pytest
from conftest import THREADS, WorkerTimer

from fastmlp import bench

CONFIGS = [
    ("784-128-10", [784, 128, 10], 32),
    ("784-128-10", [784, 128, 10], 64),
    ("784-128-10", [784, 128, 10], 128),
    ("784-128-10", [784, 128, 10], 256),
    ("784-512-256-10", [784, 512, 256, 10], 128),
    (bench.CNN_NAME, bench.CNN_SIZES, 128),
]


@pytest.mark.parametrize("threads", THREADS, ids=[f"t{t}" for t in THREADS])
@pytest.mark.parametrize("contender", bench.CONTENDERS)
@pytest.mark.parametrize("arch,sizes,batch", CONFIGS,
                         ids=[f"{a}-b{b}" for a, _, b in CONFIGS])
def test_epoch(benchmark, mnist_train, workers, rounds, contender, threads, arch, sizes, batch):
    why = bench.skip_reason(contender, sizes)
    if why:
        pytest.skip(why)
    w = workers(contender, threads)
    name = f"{arch} b{batch}"
    w.ask("prepare", config=name, sizes=sizes, batch_size=batch)
    timer = WorkerTimer(w).install(benchmark)
    n = mnist_train[0].shape[0]
    benchmark.group = f"epoch {name} ({n:,} samples)"
    benchmark.pedantic(timer.call, args=("epoch",), kwargs={"config": name}, rounds=rounds,
                       iterations=1, warmup_rounds=0)
    if benchmark.stats is None:  # --benchmark-disable: ran once as a smoke test
        return
    median = benchmark.stats.stats.median
    benchmark.extra_info["samples_per_s"] = n / median
    benchmark.extra_info["gflops_dense"] = bench.epoch_flops(sizes, n) / median / 1e9
