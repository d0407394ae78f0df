"""``predict_proba``: latency of one sample and throughput on the 10,000 MNIST test images,
fastmlp (numba, numpy reference) vs PyTorch CPU (``inference_mode``) vs scikit-learn.

Models are trained one short epoch first (the weights do not change the cost, but it is the
realistic state, and it warms everything up)."""

import numpy as np
import pytest

from fastmlp import bench

ARCHS = {"784-128-10": [784, 128, 10], "784-512-256-10": [784, 512, 256, 10]}


@pytest.fixture(scope="module")
def trained(mnist, skip_missing):
    X, y = mnist[0][:bench.WARMUP_SAMPLES], mnist[1][:bench.WARMUP_SAMPLES]
    models = {}

    def get(contender, arch):
        key = (contender, arch)
        if key not in models:
            skip_missing(contender)
            model = bench.make_contender(contender, ARCHS[arch], 64, 0.05, X, y, seed=0)
            model.epoch()
            models[key] = model
        return models[key]

    return get


@pytest.mark.parametrize("contender", bench.CONTENDERS)
@pytest.mark.parametrize("arch", list(ARCHS))
def test_predict_one(benchmark, mnist, trained, contender, arch):
    model = trained(contender, arch)
    x = np.ascontiguousarray(mnist[2][:1])
    model.predict_proba(x)
    benchmark.group = f"predict_proba 1 sample {arch}"
    benchmark(model.predict_proba, x)


@pytest.mark.parametrize("contender", bench.CONTENDERS)
@pytest.mark.parametrize("arch", list(ARCHS))
def test_predict_10k(benchmark, mnist, trained, contender, arch):
    model = trained(contender, arch)
    X_test = mnist[2]
    model.predict_proba(X_test)
    benchmark.group = f"predict_proba {X_test.shape[0]:,} samples {arch}"
    out = benchmark.pedantic(model.predict_proba, args=(X_test,), rounds=5, iterations=1)
    assert out.shape == (X_test.shape[0], 10)
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["samples_per_s"] = X_test.shape[0] / benchmark.stats.stats.median
