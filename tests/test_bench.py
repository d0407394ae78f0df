"""``fastmlp bench`` (fastmlp.bench.main): runs end to end on a tiny subset, and rejects bad
options with argparse's exit status 2. Peers that are not installed are skipped in the run."""

import json
import os
import platform
import subprocess
import sys

import numpy as np
import pytest

from fastmlp import bench

TINY = ["--quick", "--rounds", "1", "--synthetic", "--samples", "512", "--threads", "1"]


def test_quick_run_prints_table_and_json(capsys, tmp_path):
    """Every contender at 1 and 2 threads, each in its own worker process."""
    out_json = tmp_path / "bench.json"
    argv = TINY[:-1] + ["1,2", "--json", str(out_json)]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("fastmlp bench")
    assert "CPU: " in out and "AVX2 " in out and "AVX-512 " in out
    assert "One training epoch" in out
    assert "fastmlp (numba) at its best thread count" in out
    assert "784-128-10 b64" in out
    assert "predict_proba" in out
    assert "warm (numba cache hot)" in out
    report = json.loads(out_json.read_text())
    assert set(report["cpu"]) >= {"model", "cpus", "avx2", "avx512"}
    assert report["threads"] == [1, 2]
    ran = [c for c in bench.CONTENDERS if not bench.missing_reason(c)]
    runnable = [c for c in ran if bench.trains(c)]  # the contenders with epoch rows
    for peer in ("torch", "sklearn", "onnxruntime"):
        assert bench.LABELS[peer] in out  # timed rows, or one that says it is not installed
        if bench.missing_reason(peer):
            assert "not installed" in out
    rows = {(r["contender"], r["threads"]): r for r in report["epochs"]}
    assert set(rows) == {(c, t) for c in runnable for t in (1, 2)}
    # Fairness: one process per (contender, threads), none of them this one.
    workers = {(w["contender"], w["threads"]): w for w in report["workers"]}
    assert set(workers) == {(c, t) for c in ran for t in (1, 2)}
    pids = {w["pid"] for w in workers.values()}
    assert len(pids) == len(workers) and os.getpid() not in pids
    assert {r["pid"] for r in rows.values()} == {
        w["pid"] for (c, _), w in workers.items() if bench.trains(c)}
    for (c, t), w in workers.items():
        # each library ran alone, with the thread count it was given
        others = {"numba": ["torch", "sklearn", "onnxruntime"],
                  "numpy": ["numba", "torch", "sklearn", "onnxruntime"],
                  "torch": ["numba", "fastmlp.network", "sklearn", "onnxruntime"],
                  "sklearn": ["numba", "fastmlp.network", "torch", "onnxruntime"],
                  "onnxruntime": ["numba", "torch", "sklearn"]}[c]
        assert not set(others) & set(w["modules"]), (c, w["modules"])
        assert not {k for k in w["env"] if k in bench.THREAD_ENV}, w["env"]
        # numpy and scikit-learn run without OpenBLAS's CPU override; the others keep it
        for k in bench.OPENBLAS_TUNING_ENV:
            assert w["env"].get(k) == (None if c in ("numpy", "sklearn")
                                       else os.environ.get(k)), (c, k, w["env"])
        if c == "numba":
            assert w["thread_state"]["numba"] == t
        if c == "torch":
            assert w["thread_state"]["torch"] == t
        if c == "onnxruntime":
            assert w["thread_state"]["onnxruntime"] == t
            assert w["thread_state"]["onnxruntime_inter_op"] == t
        if "blas" in w["thread_state"]:
            assert w["thread_state"]["blas"] == [t]
    numba = rows[("numba", 1)]
    assert len(numba["seconds"]) == 1 and numba["median"] > 0
    assert numba["gflops"] == pytest.approx(
        bench.epoch_flops([784, 128, 10], 512) / numba["median"] / 1e9)
    # Ratios: fastmlp's best thread count against each contender's best.
    comparison = report["epoch_comparison"]["784-128-10 b64"]
    ours = min(rows[("numba", t)]["median"] for t in (1, 2))
    assert comparison["numba"]["median"] == pytest.approx(ours)
    for c in runnable:
        theirs = min(rows[(c, t)]["median"] for t in (1, 2))
        assert comparison[c]["fastmlp_speedup"] == pytest.approx(theirs / ours)
        assert sum(rows[(c, t)]["best"] for t in (1, 2)) == 1
    predict = {(r["contender"], r["threads"]): r for r in report["predict"]}
    assert set(predict) == {(c, t) for c in ran for t in (1, 2)}
    assert all(r["latency"] > 0 and r["batch_median"] > 0 for r in predict.values())
    if "onnxruntime" in ran:
        # inference only: no epoch row, one "no training" row instead; timed in predict, with
        # fastmlp's ratio against its best thread count beside PyTorch's
        assert not any(r["contender"] == "onnxruntime" for r in report["epochs"])
        assert report["inference_only"] == {"onnxruntime": bench.INFERENCE_ONLY["onnxruntime"]}
        epoch_part, predict_part = out.split("predict_proba, the whole call")
        ort_rows = [line for line in epoch_part.splitlines()
                    if line.startswith("onnxruntime CPU  ")]
        assert len(ort_rows) == 1 and ort_rows[0].split()[2:] == ["no", "training"]
        assert "vs onnxruntime CPU best" not in epoch_part
        for key in ("latency", "batch_median"):
            best = report["predict_comparison"][key]["784-128-10"]
            theirs = min(predict[("onnxruntime", t)][key] for t in (1, 2))
            assert best["onnxruntime"]["fastmlp_speedup"] == pytest.approx(
                theirs / best["numba"][key])
        header = next(line for line in predict_part.splitlines()
                      if line.startswith("config") and "vs onnxruntime CPU best" in line)
        assert header.index("vs PyTorch CPU best") < header.index("vs onnxruntime CPU best") \
            or "torch" not in ran
        assert predict_part.count("vs onnxruntime CPU best") == 2  # 1 row and 10,000 rows
    assert "error" not in report["startup_warm"], report["startup_warm"]
    assert report["startup_warm"]["total"] > 0
    if not bench.missing_reason("sklearn"):
        # the drop-in comparison: both estimators fitted with the same parameters
        fits = report["sklearn_fit"]["results"]
        assert {(r["estimator"], r["threads"]) for r in fits} == {
            (e, t) for e in ("fastmlp.sklearn", "scikit-learn") for t in (1, 2)}
        assert all(len(r["seconds"]) == 1 and 0 <= r["accuracy"] <= 1 for r in fits)
        assert "MLPClassifier.fit, identical parameters" in out


def test_missing_peer_is_reported_not_run(capsys, monkeypatch):
    real = bench._have
    monkeypatch.setattr(bench, "_have", lambda m: False if m == "torch" else real(m))
    monkeypatch.setattr(bench, "load_average", lambda: (9.0, 8.0, 7.0))  # a busy machine
    argv = TINY + ["--contenders", "numba,torch", "--no-predict", "--no-startup"]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    torch_line = next(line for line in out.splitlines() if line.startswith("PyTorch CPU"))
    assert "not installed" in torch_line
    numba_line = next(line for line in out.splitlines() if line.startswith("fastmlp (numba)"))
    assert numba_line.split()[-1] == "1.00x"  # compared with itself only
    # the reason below the table, not stretching a column; no ratio column for it
    assert "PyTorch CPU: not installed (pip install torch" in out
    assert "vs PyTorch CPU best" not in out
    assert max(len(line) for line in out.splitlines() if line.startswith("PyTorch CPU  ")) < 60
    # the header says how busy the machine was, and that the ratios are unreliable
    assert "load average: 9.00, 8.00, 7.00 (1, 5, 15 min)" in out
    assert "warning: the machine is busy" in out and "unreliable" in out


def test_missing_contender_does_not_widen_the_table():
    row = {"config": "784-128-10 b64", "contender": "numba", "threads": 1, "seconds": [1.0],
           "median": 1.0, "min": 1.0, "max": 1.0, "samples_per_s": 512.0, "gflops": 1.0,
           "best": True, "fastmlp_speedup": 1.0}
    alone = bench.epoch_table([row], {})
    missing = {"torch": "not installed (pip install torch==2.13.0, or the [bench] extra)",
               "sklearn": "failed: scikit-learn MLP t1: worker exited with status 1 (boom)"}
    without_torch = bench.epoch_table([row], {"torch": missing["torch"]})
    assert max(map(len, without_torch.splitlines())) == max(map(len, alone.splitlines()))
    assert "not installed" in without_torch
    assert "did not run" in bench.epoch_table([row], missing)
    assert bench.missing_notes(missing).splitlines() == [
        "PyTorch CPU: " + missing["torch"], "scikit-learn MLP: " + missing["sklearn"]]


@pytest.mark.parametrize("load, cpus, busy", [((0.4, 0.2, 0.1), 2, False),
                                              ((1.0, 0.2, 0.1), 2, False),
                                              ((1.1, 3.0, 3.0), 2, True),
                                              ((3.0, 1.0, 1.0), 16, False)])
def test_load_lines_warn_above_half_a_cpu_of_load_per_core(load, cpus, busy):
    lines = bench.load_lines(load, cpus)
    assert lines[0].startswith(f"load average: {load[0]:.2f}, ") and f"on {cpus} CPU" in lines[0]
    assert (len(lines) == 2) is busy
    if busy:
        assert "unreliable" in lines[1]
    assert bench.load_lines(None, cpus) == ["load average: not reported by this system"]


def test_worker_env_drops_thread_settings(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.setenv("FASTMLP_SOMETHING", "kept")
    env = bench.worker_env({"NUMBA_THREADING_LAYER": "omp"})
    assert "OMP_WAIT_POLICY" not in env and "OMP_NUM_THREADS" not in env
    assert env["FASTMLP_SOMETHING"] == "kept" and env["NUMBA_THREADING_LAYER"] == "omp"
    import os

    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"  # this process is left alone


def test_cpu_info_reads_flags_and_falls_back(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu avx2 fma\n\n"
                 "processor\t: 1\nmodel name\t: Test CPU 9000\nflags\t\t: fpu avx2 fma\n")
    info = bench.cpu_info(str(f))
    assert info["model"] == "Test CPU 9000"
    assert info["avx2"] is True and info["avx512"] is False
    assert "AVX2 yes, AVX-512 no" in bench.cpu_line(info)
    missing = bench.cpu_info(str(tmp_path / "absent"))
    assert missing["avx2"] is None and "AVX2 ?" in bench.cpu_line(missing)


def test_compare_uses_each_contenders_best_thread_count():
    rows = [{"config": "c", "contender": "numba", "threads": 1, "median": 2.0},
            {"config": "c", "contender": "numba", "threads": 2, "median": 1.0},
            {"config": "c", "contender": "torch", "threads": 1, "median": 3.0},
            {"config": "c", "contender": "torch", "threads": 2, "median": 6.0}]
    out = bench.compare(rows, "median")["c"]
    assert out["numba"]["threads"] == 2 and out["torch"]["threads"] == 1
    assert out["torch"]["fastmlp_speedup"] == pytest.approx(3.0)
    assert [r["best"] for r in rows] == [False, True, True, False]
    assert [r["fastmlp_speedup"] for r in rows] == [2.0, 1.0, 3.0, 6.0]


@pytest.mark.parametrize("text,cpus,expected", [
    ("1,N", 2, [1, 2]), ("2,1,2", 4, [1, 2]), ("all", 3, [3]), ("1", 1, [1])])
def test_parse_threads(text, cpus, expected):
    assert bench.parse_threads(text, cpus) == expected


@pytest.mark.parametrize("text", ["", "0", "3", "x", "1,,-1"])
def test_parse_threads_rejects(text):
    with pytest.raises(ValueError, match="--threads"):
        bench.parse_threads(text, 2)


@pytest.mark.parametrize("argv", [
    ["--rounds", "0"],
    ["--rounds", "many"],
    ["--threads", "-1"],
    ["--threads", "10000"],
    ["--threads", "two"],
    ["--configs", "784-128-10"],
    ["--configs", "100-10 b64"],
    ["--configs", "784-x-10 b64"],
    ["--configs", ","],
    ["--configs", "cnn"],
    ["--configs", "cnn b0"],
    ["--configs", "784-conv8k40-10 b64"],
    ["--configs", "784-128-pool2-10 b64"],
    ["--configs", "784-conv8k3-pool2 b64"],
    ["--contenders", "keras"],
    ["--learning-rate", "0"],
    ["--no-such-option"],
])
def test_bad_options_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_help_exits_0(capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(["--help"])
    assert exc.value.code == 0
    assert "--rounds" in capsys.readouterr().out


@pytest.mark.parametrize("text,expected", [
    ("784-128-10 b64", ("784-128-10 b64", [784, 128, 10], 64)),
    ("784-512-256-10:128", ("784-512-256-10 b128", [784, 512, 256, 10], 128)),
    (" 784-128-10/32 ", ("784-128-10 b32", [784, 128, 10], 32)),
    ("cnn b128", ("cnn b128", bench.CNN_SIZES, 128)),
    ("CNN:64", ("cnn b64", bench.CNN_SIZES, 64)),
    ("784-conv16k5p2-pool2-conv32k5p2-pool2-128-10 b128", ("cnn b128", bench.CNN_SIZES, 128)),
    ("784-conv8k3s2-pool2-64-10/32",
     ("784-conv8k3s2-pool2-64-10 b32", [784, "conv8k3s2", "pool2", 64, 10], 32)),
])
def test_parse_config(text, expected):
    assert bench.parse_config(text) == expected


def test_default_run_has_the_cnn_and_quick_does_not():
    assert bench.CONFIGS["cnn b128"] == (bench.CNN_SIZES, 128)
    for name, (sizes, batch) in bench.CONFIGS.items():
        assert bench.parse_config(name) == (name, sizes, batch)
    assert not any(bench.is_cnn(bench.CONFIGS[c][0])
                   for c in bench.QUICK_CONFIGS)


@pytest.mark.parametrize("sizes", [
    bench.CNN_SIZES,
    [784, "conv8k3s2p1", "pool3s2", "conv4k2", 32, 10],
    [784, 64, 10],
])
def test_worker_architecture_is_fastmlp_layers_plan(sizes):
    """The workers read a config with fastmlp.layers itself (parse + plan): the shapes that
    the PyTorch model is built from, and the FLOP count uses, are fastmlp's."""
    from fastmlp import layers
    from fastmlp._bench_worker import IMAGE, architecture, network_specs

    specs = ([IMAGE] + layers.parse(",".join(map(str, sizes[1:])))
             if any(isinstance(s, str) for s in sizes) else sizes)
    assert network_specs(sizes) == specs
    assert architecture(sizes) == layers.plan(specs)


def test_worker_has_no_parser_of_its_own():
    from fastmlp import _bench_worker

    assert not hasattr(_bench_worker, "_CONV") and not hasattr(_bench_worker, "_POOL")
    with pytest.raises(ValueError, match=r"layer 1 \(Conv2D\(8, 40\)\): its 40x40 kernel"):
        _bench_worker.architecture([784, "conv8k40", 10])
    with pytest.raises(ValueError, match="1x28x28 image"):
        _bench_worker.architecture([100, "conv8k3", 10])


def test_torch_model_is_fastmlps_architecture():
    """PyTorch's modules, built from fastmlp.layers' records, are the exact equivalent of
    the CNN: same layers, parameter shapes equal to fastmlp's weight shapes."""
    if bench.missing_reason("torch"):
        pytest.skip(bench.missing_reason("torch"))
    from fastmlp._bench_worker import TorchModel, architecture

    model = TorchModel(bench.CNN_SIZES, 128, 0.05, 0).model
    assert [type(m).__name__ for m in model] == [
        "Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "MaxPool2d", "Flatten", "Linear",
        "ReLU", "Linear"]
    conv1, conv2 = model[0], model[3]
    assert (conv1.kernel_size, conv1.stride, conv1.padding) == ((5, 5), (1, 1), (2, 2))
    assert (conv2.in_channels, conv2.out_channels) == (16, 32)
    assert (model[2].kernel_size, model[2].stride) == (2, 2)
    weights = [p.shape for name, p in model.named_parameters() if name.endswith("weight")]
    assert [tuple(w) for w in weights] == [layer.weight_shape
                                           for layer in architecture(bench.CNN_SIZES)
                                           if layer.has_weights]


def test_torch_model_has_the_new_layer_kinds():
    """BatchNorm (2d after a conv, 1d after a dense layer) before the ReLU of the layer it
    normalises, AvgPool2d, Dropout; one Flatten, before the first dense layer."""
    if bench.missing_reason("torch"):
        pytest.skip(bench.missing_reason("torch"))
    from fastmlp._bench_worker import TorchModel

    sizes = [784, "conv4k3p1", "bn", "pool2", "drop0.25", "avg2s1", 16, "bn", "drop0.5", 10]
    model = TorchModel(sizes, 32, 0.05, 0).model
    assert [type(m).__name__ for m in model] == [
        "Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "Dropout", "AvgPool2d", "Flatten",
        "Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear"]
    assert (model[1].num_features, model[1].eps, model[1].momentum) == (4, 1e-5, 0.1)
    assert (model[5].kernel_size, model[5].stride) == (2, 1)
    assert model[4].p == 0.25 and model[8].num_features == 16
    model.eval()
    assert model(__import__("torch").zeros(3, 1, 28, 28)).shape == (3, 10)


# What builds every non-fastmlp contender's model: none of it may load numba (the workers
# report it in "modules"; this checks it without a worker, in a fresh interpreter).
NO_NUMBA_SCRIPT = """
import sys
import numpy as np
import fastmlp.layers
import fastmlp._bench_worker as w
assert "numba" not in sys.modules, "fastmlp.layers / the worker module imported numba"
X = np.random.default_rng(0).random((3, 784), dtype=np.float32)
for name in sys.argv[1:]:
    for sizes in ([784, 16, 10], [784, "conv4k3p1", "pool2", 16, 10]):
        if name == "onnxruntime":
            m = w.OnnxModel(sizes, 0, w.session_options(1))
        else:
            m = w.make_model(name, sizes, 32, 0.05)
        m.predict_proba(X)
        assert "numba" not in sys.modules, (name, sizes)
print("ok", sorted(k for k in ("numba", "fastmlp.network", "onnxruntime") if k in sys.modules))
"""


def test_workers_that_are_not_fastmlp_never_import_numba():
    peers = [c for c in ("torch", "onnxruntime") if not bench.missing_reason(c)]
    env = bench.worker_env()
    done = subprocess.run([sys.executable, "-c", NO_NUMBA_SCRIPT, *peers], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("ok")
    assert "numba" not in done.stdout


def test_skip_reasons_only_for_cnns():
    for c in bench.CONTENDERS:
        assert bench.skip_reason(c, [784, 128, 10], training=False) is None
        assert (bench.skip_reason(c, [784, 128, 10]) is None) is bench.trains(c)
    assert "inference only" in bench.skip_reason("onnxruntime", bench.CNN_SIZES)
    assert bench.skip_reason("onnxruntime", bench.CNN_SIZES, training=False) is None
    assert bench.skip_reason("numba", bench.CNN_SIZES) is None
    assert bench.skip_reason("torch", bench.CNN_SIZES) is None
    assert "reference" in bench.skip_reason("numpy", bench.CNN_SIZES)
    assert "no convolutional" in bench.skip_reason("sklearn", bench.CNN_SIZES)


def test_cnn_flop_formula():
    # conv F·C·k²·OH·OW per image: 16·1·25·28·28 and 32·16·25·14·14; then 1568·128, 128·10.
    macs = [16 * 25 * 28 * 28, 32 * 16 * 25 * 14 * 14, 1568 * 128, 128 * 10]
    assert bench.layer_macs(bench.CNN_SIZES) == macs
    n = 3
    # forward and dW over every layer, dX for all but the first (conv1 needs no input grad)
    assert bench.epoch_flops(bench.CNN_SIZES, n) == 2 * n * (2 * sum(macs) + sum(macs[1:]))
    assert bench.epoch_flops(bench.CNN_SIZES, 1) == pytest.approx(17.5e6, rel=0.01)


def test_cnn_run_times_fastmlp_and_torch_and_skips_the_others(capsys, tmp_path):
    """``cnn b128`` next to an MLP config: fastmlp and PyTorch timed, the numpy reference
    skipped with its reason (scikit-learn too, when asked), and --quick still works."""
    out_json = tmp_path / "cnn.json"
    argv = ["--quick", "--synthetic", "--samples", "256", "--rounds", "1", "--threads", "1",
            "--configs", "784-128-10 b64,cnn b128", "--contenders", "numba,numpy,torch",
            "--no-startup", "--no-sklearn-fit", "--json", str(out_json)]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    report = json.loads(out_json.read_text())
    ran = [c for c in ("numba", "numpy", "torch") if not bench.missing_reason(c)]
    epochs = {(r["config"], r["contender"]) for r in report["epochs"]}
    assert epochs == ({("784-128-10 b64", c) for c in ran}
                      | {("cnn b128", c) for c in ran if c != "numpy"})
    assert report["skipped"] == {"cnn b128": {"numpy": bench.CNN_SKIPPED["numpy"]}}
    assert bench.CNN_SKIPPED["numpy"] in out
    numpy_cnn = [line for line in out.splitlines()
                 if line.startswith("fastmlp (numpy ref)") and "cnn" in line]
    assert numpy_cnn and all("skipped" in line for line in numpy_cnn)
    cnn = next(r for r in report["epochs"]
               if r["config"] == "cnn b128" and r["contender"] == "numba")
    assert cnn["gflops"] == pytest.approx(
        bench.epoch_flops(bench.CNN_SIZES, 256) / cnn["median"] / 1e9)
    predict = {(r["config"], r["contender"]) for r in report["predict"]}
    assert ("cnn", "numba") in predict and ("cnn", "numpy") not in predict
    if "torch" in ran:
        assert ("cnn", "torch") in predict
        assert report["epoch_comparison"]["cnn b128"]["torch"]["fastmlp_speedup"] > 0


def test_flop_formula():
    # 784-128-10: forward 2n(784·128 + 128·10), dW the same, dX 2n(128·10).
    n = 100
    pairs = 784 * 128 + 128 * 10
    assert bench.epoch_flops([784, 128, 10], n) == 2 * n * pairs * 2 + 2 * n * 128 * 10


def test_format_table_aligns():
    text = bench.format_table(["a", "bb"], [["x", "1"], ["yyy", "22"]], "lr")
    lines = text.splitlines()
    assert lines[0] == "a    bb"
    assert lines[2] == "x     1"
    assert lines[3] == "yyy  22"


def test_benchmark_suite_runs(data_dir):
    """Every pytest-benchmark file still runs against today's kernels (each benchmark once,
    on a small slice of MNIST; speed is not measured here)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, FASTMLP_DATA=str(data_dir), FASTMLP_BENCH_SAMPLES="1024",
               FASTMLP_BENCH_ROUNDS="1", FASTMLP_BENCH_SKLEARN_ITER="1",
               FASTMLP_BENCH_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "pytest", "benchmarks", "-q", "-x",
                           "--benchmark-disable", "-p", "no:cacheprovider"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout


# --- onnxruntime: an inference-only contender ---------------------------------------------


def _tiny_data(folder, n_test=32):
    X, y, X_test, y_test = bench.synthetic_mnist(64, n_test)
    return bench.write_data(str(folder), X, y, X_test, y_test), X_test


@pytest.mark.parametrize("sizes", [[784, 16, 10], [784, "conv4k3p1", "pool2", 16, 10],
                                   [784, "conv4k3p1", "bn", "avg2", "drop0.25", 16, "bn", 10]],
                         ids=["mlp", "cnn", "cnn-bn"])
def test_onnxruntime_worker_predicts_what_fastmlp_predicts(tmp_path, sizes):
    """The onnxruntime worker runs the fastmlp network (same seed, same weights) exported
    to ONNX: its probabilities equal fastmlp's (numba backend) to 1e-5."""
    if bench.missing_reason("onnxruntime"):
        pytest.skip(bench.missing_reason("onnxruntime"))
    from fastmlp._bench_worker import network_specs
    from fastmlp.network import Network

    path, X_test = _tiny_data(tmp_path)
    w = bench.Worker("onnxruntime", 1, path, 0.05, seed=3)
    try:
        w.ready()
        assert w.ask("prepare", config="c", sizes=sizes, batch_size=32) == {"ok": True}
        theirs = np.array(w.ask("proba", config="c", rows=20)["proba"])
        with pytest.raises(bench.WorkerError, match="inference-only"):
            w.ask("epoch", config="c")
        assert len(w.ask("predict", config="c", rows=1, calls=3)["seconds"]) == 3
        info = w.ask("info")
        assert "numba" not in info["modules"] and "onnxruntime" in info["modules"]
        assert w.hello["versions"]["onnxruntime"]
    finally:
        w.close()
    ours = Network(network_specs(sizes), seed=3).predict_proba(X_test[:20])
    assert theirs.shape == (20, 10)
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-5)


def test_onnxruntime_check_catches_a_different_network():
    """The worker's warm-up check (OnnxModel.check) fails loudly when the session does not
    compute the fastmlp network's function."""
    if bench.missing_reason("onnxruntime"):
        pytest.skip(bench.missing_reason("onnxruntime"))
    from fastmlp._bench_worker import OnnxModel, session_options

    model = OnnxModel([784, 16, 10], 0, session_options(2))
    X = bench.synthetic_mnist(8, 8)[2]
    assert model.check(X) <= OnnxModel.TOLERANCE
    assert model.session.get_session_options().intra_op_num_threads == 2
    assert model.session.get_session_options().inter_op_num_threads == 2
    assert model.session.get_providers() == ["CPUExecutionProvider"]
    model.net.weights[0][:] += 0.5  # the session still holds the exported weights
    with pytest.raises(ValueError, match="differ from fastmlp"):
        model.check(X)


def test_missing_onnxruntime_is_reported_not_run(capsys, monkeypatch, tmp_path):
    real = bench._have
    monkeypatch.setattr(bench, "_have", lambda m: False if m == "onnxruntime" else real(m))
    out_json = tmp_path / "bench.json"
    argv = TINY + ["--contenders", "numba,onnxruntime", "--no-startup", "--json",
                   str(out_json)]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("onnxruntime CPU  ")]
    assert len(lines) == 2 and all("not installed" in line for line in lines)  # both tables
    assert all(len(line) < 60 for line in lines)
    assert "onnxruntime CPU: not installed (onnxruntime; pip install onnx onnxruntime" in out
    assert "no training" not in out and "vs onnxruntime CPU best" not in out
    report = json.loads(out_json.read_text())
    assert "onnxruntime" in report["missing"]
    assert {r["contender"] for r in report["predict"]} == {"numba"}


def test_missing_onnx_alone_makes_onnxruntime_missing(monkeypatch):
    real = bench._have
    monkeypatch.setattr(bench, "_have", lambda m: False if m == "onnx" else real(m))
    reason = bench.missing_reason("onnxruntime")
    if real("onnxruntime"):
        assert reason.startswith("not installed (onnx;")


def test_inference_only_row_does_not_widen_the_table():
    row = {"config": "784-128-10 b64", "contender": "numba", "threads": 1, "seconds": [1.0],
           "median": 1.0, "min": 1.0, "max": 1.0, "samples_per_s": 512.0, "gflops": 1.0,
           "best": True, "fastmlp_speedup": 1.0}
    alone = bench.epoch_table([row], {})
    with_ort = bench.epoch_table([row], {}, inference=["onnxruntime"])
    assert max(map(len, with_ort.splitlines())) == max(map(len, alone.splitlines()))
    assert with_ort.splitlines()[-1].split() == ["onnxruntime", "CPU", "no", "training"]
    # not installed: that row only, not both
    missing = bench.epoch_table([row], {"onnxruntime": "not installed (x)"},
                                inference=["onnxruntime"])
    assert "no training" not in missing and "not installed" in missing
    assert bench.inference_notes(["numba", "onnxruntime"]) == (
        "onnxruntime CPU: " + bench.INFERENCE_ONLY["onnxruntime"])


# --- OpenBLAS's CPU override: off in the numpy and scikit-learn workers only ---------------


def test_worker_env_unsets_openblas_coretype_for_numpy_and_sklearn(monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.setenv("OPENBLAS_L2_SIZE", "512")
    for contender in bench.CONTENDERS:
        env = bench.worker_env(contender=contender)
        if contender in ("numpy", "sklearn"):
            assert "OPENBLAS_CORETYPE" not in env and "OPENBLAS_L2_SIZE" not in env
        else:
            assert env["OPENBLAS_CORETYPE"] == "Haswell" and env["OPENBLAS_L2_SIZE"] == "512"
    assert "OPENBLAS_CORETYPE" in bench.worker_env()  # the start-up timing's fastmlp
    assert os.environ["OPENBLAS_CORETYPE"] == "Haswell"  # this process is left alone


def test_each_worker_gets_its_own_openblas_environment(monkeypatch, tmp_path):
    """The environment the worker processes actually see (their "info")."""
    if platform.machine().lower() not in ("x86_64", "amd64") or not bench.cpu_info()["avx2"]:
        pytest.skip("OPENBLAS_CORETYPE=Haswell needs an x86 CPU with AVX2")
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.setenv("OPENBLAS_L2_SIZE", "512")
    path, _ = _tiny_data(tmp_path)
    chosen = [c for c in ("numpy", "sklearn", "onnxruntime", "torch")
              if not bench.missing_reason(c)]
    workers, failed = bench.start_workers([(c, 1) for c in chosen], path, 0.05)
    try:
        assert not failed
        envs = {w.contender: w.ask("info")["env"] for w in workers}
    finally:
        for w in workers:
            w.close()
    for c, env in envs.items():
        if c in ("numpy", "sklearn"):
            assert "OPENBLAS_CORETYPE" not in env and "OPENBLAS_L2_SIZE" not in env, env
        else:
            assert env["OPENBLAS_CORETYPE"] == "Haswell" and env["OPENBLAS_L2_SIZE"] == "512"
    assert os.environ["OPENBLAS_CORETYPE"] == "Haswell"
