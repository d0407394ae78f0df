"""``fastmlp bench`` (fastmlp.bench.main): runs end to end on a tiny subset, and rejects bad
options with argparse's exit status 2. Peers that are not installed are skipped in the run."""

import json

import pytest

from fastmlp import bench

TINY = ["--quick", "--rounds", "1", "--synthetic", "--samples", "512", "--threads", "1"]


def test_quick_run_prints_table_and_json(capsys, tmp_path):
    out_json = tmp_path / "bench.json"
    assert bench.main(TINY + ["--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "One training epoch" in out
    assert "fastmlp (numba)" in out and "fastmlp (numpy ref)" in out
    assert "784-128-10 b64" in out
    assert "predict_proba" in out
    assert "warm (numba cache hot)" in out
    for peer in ("torch", "sklearn"):
        label = bench.LABELS[peer]
        assert label in out  # a timed row, or one that says it is not installed
        if bench.missing_reason(peer):
            assert "not installed" in out
    report = json.loads(out_json.read_text())
    rows = {r["contender"]: r for r in report["epochs"]}
    numba = rows["numba"]
    assert len(numba["seconds"]) == 1 and numba["median"] > 0
    assert numba["gflops"] == pytest.approx(
        bench.epoch_flops([784, 128, 10], 512) / numba["median"] / 1e9)
    if not bench.missing_reason("torch"):
        assert rows["torch"]["vs_torch"] == pytest.approx(1.0)
        assert numba["vs_torch"] == pytest.approx(rows["torch"]["median"] / numba["median"])
    assert "error" not in report["startup_warm"], report["startup_warm"]
    assert report["startup_warm"]["total"] > 0
    if not bench.missing_reason("sklearn"):
        # the drop-in comparison: both estimators fitted with the same parameters
        fits = report["sklearn_fit"]["results"]
        assert set(fits) == {"fastmlp.sklearn", "scikit-learn"}
        assert all(len(r["seconds"]) == 1 and 0 <= r["accuracy"] <= 1 for r in fits.values())
        assert "MLPClassifier.fit, identical parameters" in out


def test_missing_peer_is_reported_not_run(capsys, monkeypatch):
    real = bench._have
    monkeypatch.setattr(bench, "_have", lambda m: False if m == "torch" else real(m))
    argv = TINY + ["--contenders", "numba,torch", "--no-predict", "--no-startup"]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    torch_line = next(line for line in out.splitlines() if line.startswith("PyTorch CPU"))
    assert "not installed" in torch_line
    numba_line = next(line for line in out.splitlines() if line.startswith("fastmlp (numba)"))
    assert "x" not in numba_line.split()[-2]  # no torch to compare with: the ratio is "-"


@pytest.mark.parametrize("argv", [
    ["--rounds", "0"],
    ["--rounds", "many"],
    ["--threads", "-1"],
    ["--threads", "10000"],
    ["--configs", "784-128-10"],
    ["--configs", "100-10 b64"],
    ["--configs", "784-x-10 b64"],
    ["--configs", ","],
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
])
def test_parse_config(text, expected):
    assert bench.parse_config(text) == expected


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
               FASTMLP_BENCH_ROUNDS="1", FASTMLP_BENCH_SKLEARN_ITER="1")
    done = subprocess.run([sys.executable, "-m", "pytest", "benchmarks", "-q", "-x",
                           "--benchmark-disable", "-p", "no:cacheprovider"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout
