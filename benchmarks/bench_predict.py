"""``predict_proba``: latency of one sample and throughput on the 10,000 MNIST test images,
fastmlp (numba, numpy reference) vs PyTorch CPU vs scikit-learn, at every
``FASTMLP_BENCH_THREADS``, each in its own worker process (conftest.py).

The time is the whole call from a numpy array to a numpy array (PyTorch: ``from_numpy``, a
``no_grad`` forward, softmax, ``.numpy()``). Models are trained one short warm-up epoch first
(the weights do not change the cost, but it is the realistic state, and it warms up).

The CNN (``cnn``) runs in fastmlp (numba) and PyTorch only; the numpy reference and
scikit-learn skip it (``fastmlp.bench.CNN_SKIPPED``)."""

import pytest
from conftest import THREADS, WorkerTimer

from fastmlp import bench

ARCHS = {"784-128-10": [784, 128, 10], "784-512-256-10": [784, 512, 256, 10],
         bench.CNN_NAME: bench.CNN_SIZES}
ONE_ROW_ROUNDS = 200


def _prepared(workers, contender, threads, arch):
    why = bench.skip_reason(contender, ARCHS[arch])
    if why:
        pytest.skip(why)
    w = workers(contender, threads)
    name = f"{arch} b64"
    w.ask("prepare", config=name, sizes=ARCHS[arch], batch_size=64)
    return w, name


@pytest.mark.parametrize("threads", THREADS, ids=[f"t{t}" for t in THREADS])
@pytest.mark.parametrize("contender", bench.CONTENDERS)
@pytest.mark.parametrize("arch", list(ARCHS))
def test_predict_one(benchmark, workers, contender, threads, arch):
    w, name = _prepared(workers, contender, threads, arch)
    timer = WorkerTimer(w).install(benchmark)
    benchmark.group = f"predict_proba 1 sample {arch}"
    benchmark.pedantic(timer.call, args=("predict",), kwargs={"config": name, "rows": 1},
                       rounds=ONE_ROW_ROUNDS, iterations=1, warmup_rounds=5)


@pytest.mark.parametrize("threads", THREADS, ids=[f"t{t}" for t in THREADS])
@pytest.mark.parametrize("contender", bench.CONTENDERS)
@pytest.mark.parametrize("arch", list(ARCHS))
def test_predict_10k(benchmark, mnist, workers, contender, threads, arch):
    w, name = _prepared(workers, contender, threads, arch)
    rows = mnist[2].shape[0]
    timer = WorkerTimer(w).install(benchmark)
    benchmark.group = f"predict_proba {rows:,} samples {arch}"
    benchmark.pedantic(timer.call, args=("predict",), kwargs={"config": name, "rows": rows},
                       rounds=5, iterations=1, warmup_rounds=1)
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["samples_per_s"] = rows / benchmark.stats.stats.median
