"""The ``fastmlp`` command line, run in-process through ``main(argv)`` (and twice as
``python -m fastmlp``), on small slices of the real MNIST (``--limit``)."""

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import fastmlp
from fastmlp import cli
from fastmlp.network import Network

# Small and quick: a few thousand images, a narrow network.
SMALL = ["--limit", "1500", "--hidden", "24", "--batch-size", "64", "--quiet"]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Every test runs in its own empty folder (train's default output goes to ./models)."""
    monkeypatch.chdir(tmp_path)


def run(argv, capsys):
    """``(exit status, stdout, stderr)`` of ``main(argv)``."""
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *fragments):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("fastmlp: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """An untrained 784-8-10 network saved to disk (enough for predict and the errors)."""
    path = tmp_path_factory.mktemp("model") / "tiny.npz"
    Network([784, 8, 10], seed=1).save(path)
    return path


# ----------------------------------------------------------------------------- help


@pytest.mark.parametrize("command", [[], ["train"], ["evaluate"], ["predict"], ["info"],
                                     ["serve"]])
def test_help(command, capsys):
    code, out, _ = run([*command, "--help"], capsys)
    assert code == 0
    assert out.startswith("usage: fastmlp")


def test_train_help_shows_the_default_recipe(capsys):
    _, out, _ = run(["train", "--help"], capsys)
    assert f"--hidden {','.join(map(str, cli.DEFAULT_RECIPE['hidden']))}" in out
    assert "models/mnist.npz" in out
    assert "--limit" not in out  # for tests only


def test_no_command(capsys):
    code, _, err = run([], capsys)
    assert_one_line_error(code, err, "missing command")


# ----------------------------------------------------------------------------- errors

ERRORS = {
    "unknown dataset": (["train", "--dataset", "cifar"], "invalid choice: 'cifar'"),
    "bad hidden": (["train", "--hidden", "12,x"], "'x' is not a positive integer"),
    "zero hidden": (["train", "--hidden", "12,0"], "'0' is not a positive integer"),
    "negative epochs": (["train", "--epochs", "-1"], "--epochs"),
    "zero epochs": (["train", "--epochs", "0"], "positive integer"),
    "nan lr": (["train", "--lr", "nan"], "--lr"),
    "split of 1": (["train", "--validation-split", "1"], "--validation-split"),
    "dropout of 1": (["train", "--dropout", "1"], "--dropout"),
    "negative augment": (["train", "--augment", "-1"], "--augment"),
    "augment past the image": (["train", "--augment", "29"], "a number of pixels 0..28"),
    "fractional augment": (["train", "--augment", "1.5"], "--augment"),
    "nan rotate": (["train", "--rotate", "nan"], "--rotate"),
    "rotate past 180": (["train", "--rotate", "181"], "--rotate"),
    "scale of 1": (["train", "--scale", "1"], "--scale"),
    "unknown optimizer": (["train", "--optimizer", "rmsprop"], "invalid choice"),
    "unknown option": (["train", "--frobnicate"], "unrecognized arguments"),
    "nesterov without momentum": (["train", "--nesterov"], "--optimizer momentum"),
    "early stopping without validation": (["train", "--early-stopping", "2"],
                                          "--validation-split"),
    "categories for mnist": (["train", "--categories", "cat,dog"], "quickdraw"),
    "quickdraw without categories": (["train", "--dataset", "quickdraw"], "--categories"),
    "resume without checkpoint": (["train", "--resume"], "--checkpoint"),
    "evaluate missing model": (["evaluate", "nothere.npz"], "does not exist"),
    "predict missing model": (["predict", "nothere.npz", "x.npy"], "does not exist"),
    "serve missing model": (["serve", "--model", "nothere.npz"], "does not exist"),
    "serve default model missing": (["serve"], "fastmlp train"),
    "bad port": (["serve", "--port", "70000"], "port"),
}


@pytest.mark.parametrize("argv,fragment", list(ERRORS.values()), ids=list(ERRORS))
def test_errors(argv, fragment, capsys):
    code, _, err = run(argv, capsys)
    assert_one_line_error(code, err, fragment)


@pytest.mark.parametrize("content", [b"", b"not a model at all", b"PK\x03\x04broken zip"],
                         ids=["empty", "text", "truncated-zip"])
@pytest.mark.parametrize("command", ["evaluate", "predict", "serve"])
def test_corrupt_model_file(command, content, tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(content)
    x = tmp_path / "x.npy"
    np.save(x, np.zeros(784, np.uint8))
    argv = {"evaluate": ["evaluate", bad], "predict": ["predict", bad, x],
            "serve": ["serve", "--model", bad, "--port", "0"]}[command]
    code, _, err = run(argv, capsys)
    assert_one_line_error(code, err, str(bad))


def test_missing_data_without_download(tmp_path, capsys):
    code, _, err = run(["train", "--data-dir", tmp_path / "empty", "--no-download"], capsys)
    assert_one_line_error(code, err, "MNIST")


@pytest.mark.parametrize("name,array,fragment", [
    ("wrong-shape.npy", np.zeros((3, 100)), "expected (784,)"),
    ("range.npy", np.full(784, 3.0), "0..1"),
    ("nan.npy", np.full(784, np.nan), "NaN"),
    ("text.npy", np.array(["a", "b"]), "not numbers"),
])
def test_predict_bad_arrays(name, array, fragment, tiny_model, tmp_path, capsys):
    np.save(tmp_path / name, array)
    code, _, err = run(["predict", tiny_model, tmp_path / name], capsys)
    assert_one_line_error(code, err, fragment)


def test_predict_missing_and_undecodable_files(tiny_model, tmp_path, capsys):
    code, _, err = run(["predict", tiny_model, tmp_path / "gone.png"], capsys)
    assert_one_line_error(code, err, "gone.png")
    (tmp_path / "fake.png").write_bytes(b"not a png")
    code, _, err = run(["predict", tiny_model, tmp_path / "fake.png"], capsys)
    assert_one_line_error(code, err, "fake.png")


def test_library_value_error_is_one_line(mnist, capsys):
    # --activation is validated by Network itself: its ValueError becomes one line.
    code, _, err = run(["train", *SMALL, "--data-dir", mnist, "--activation", "swish"], capsys)
    assert_one_line_error(code, err, "swish")


# --------------------------------------------------------------- train / evaluate / predict


def test_time_line_keeps_compiling_out_of_training():
    """Training time is the epochs' own seconds; a cold start's compile is reported apart."""
    assert cli._time_line(34.1, 10, 236.8, 230.0) == (
        "time: 34.1 s training (10 epochs), 236.8 s start-up and evaluation (mostly "
        "compiling the kernels: first run, cached after)")
    warm = cli._time_line(34.1, 1, 3.2, 0.4)
    assert warm.startswith("time: 34.1 s training (1 epoch), 3.2 s start-up and evaluation (")
    assert "compiling" not in warm



def test_train_evaluate_predict(mnist, tmp_path, capsys):
    out = tmp_path / "runs" / "small.npz"
    code, stdout, err = run(["train", *SMALL, "--epochs", "2", "--validation-split", "0.1",
                             "--data-dir", mnist, "--no-download", "--out", out], capsys)
    assert code == 0, err
    assert "test accuracy" in stdout
    assert out.is_file()
    history = json.loads((tmp_path / "runs" / "small.history.json").read_text())
    # training time: the epochs' own seconds; the rest (data, compiling) reported apart
    (time_line,) = [line for line in stdout.splitlines() if line.startswith("time: ")]
    epochs = sum(history["seconds"])
    shown = f"{epochs:.1f}" if epochs >= 1 else f"{epochs:.2f}"
    assert f"time: {shown} s training (2 epochs), " in time_line
    assert "s start-up and evaluation (" in time_line
    assert history["run"]["train_seconds"] == pytest.approx(sum(history["seconds"]))
    assert history["run"]["wall_seconds"] >= history["run"]["train_seconds"]
    assert len(history["loss"]) == len(history["val_accuracy"]) == 2
    assert history["run"]["dataset"] == "mnist"
    assert 0.5 < history["run"]["test_accuracy"] <= 1
    assert history["run"]["recipe"]["hidden"] == [24]
    net = Network.load(out)
    assert net.layer_sizes == [784, 24, 10]
    assert net.history.loss == history["loss"]
    assert not list((tmp_path / "runs").glob(".*.tmp"))  # no temporary files left

    code, stdout, err = run(["evaluate", out, "--data-dir", mnist], capsys)
    assert code == 0, err
    accuracy = float(stdout.split("accuracy")[1].split("%")[0])
    assert abs(accuracy - 100 * history["run"]["test_accuracy"]) < 0.006
    rows = [line.split() for line in stdout.splitlines()]
    per_class = [r for r in rows if len(r) >= 4 and r[0].isdigit() and r[1].isdigit()]
    assert [r[0] for r in per_class] == [str(k) for k in range(10)]
    assert sum(int(r[1]) for r in per_class) == 10000

    # predict: every .npy layout, uint8 and float, and an image file.
    X = cli._load_data("mnist", mnist)[2][:5]
    u8 = np.round(X * 255).astype(np.uint8)
    files = {"one.npy": u8[0], "rows.npy": u8[:3], "square.npy": X[0].reshape(28, 28),
             "squares.npy": X[:2].reshape(2, 28, 28)}
    for name, arr in files.items():
        np.save(tmp_path / name, arr)
    pil = pytest.importorskip("PIL.Image")
    pil.fromarray(255 - u8[0].reshape(28, 28)).resize((140, 140)).save(tmp_path / "digit.png")
    paths = [tmp_path / n for n in [*files, "digit.png"]]
    code, stdout, err = run(["predict", out, *paths, "--top", "3"], capsys)
    assert code == 0, err
    lines = stdout.strip().splitlines()
    assert len(lines) == 1 + 3 + 1 + 2 + 1
    assert lines[1].startswith(f"{tmp_path / 'rows.npy'}[0]: ")
    assert all(line.count("%") == 3 for line in lines)
    label = int(lines[0].split(": ")[1].split()[0])
    assert label == int(Network.load(out).predict(X[:1])[0])


def test_default_output_path(mnist, capsys):
    code, stdout, err = run(["train", *SMALL, "--epochs", "1", "--data-dir", mnist], capsys)
    assert code == 0, err
    assert Path("models/mnist.npz").is_file()
    assert Path("models/mnist.history.json").is_file()


# ------------------------------------------------------------ checkpoints and Ctrl-C


def _interrupt_after(monkeypatch, epochs):
    """Make the checkpoint save of epoch ``epochs`` be followed by a Ctrl-C."""
    save = cli._Checkpoints.save

    def save_then_interrupt(self, net, recipe):
        save(self, net, recipe)
        if net.history.epochs == epochs:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli._Checkpoints, "save", save_then_interrupt)


def test_resume_is_bit_identical(mnist, tmp_path, monkeypatch, capsys):
    # Adam (state arrays + step), cosine (schedule offset), dropout (key), shuffling RNG,
    # validation split and early stopping (best weights) all have to survive the break.
    args = ["train", *SMALL, "--epochs", "4", "--data-dir", mnist, "--dropout", "0.2",
            "--validation-split", "0.2", "--early-stopping", "10", "--seed", "3"]
    code, _, err = run([*args, "--out", tmp_path / "straight.npz",
                        "--checkpoint", tmp_path / "ck-straight"], capsys)
    assert code == 0, err

    with monkeypatch.context() as m:
        _interrupt_after(m, 2)
        code, _, err = run([*args, "--out", tmp_path / "resumed.npz",
                            "--checkpoint", tmp_path / "ck"], capsys)
    assert code == 130
    assert "interrupted" in err and "--resume" in err and "Traceback" not in err
    assert not (tmp_path / "resumed.npz").exists()  # nothing half-done is saved
    assert not (tmp_path / "resumed.history.json").exists()
    record = json.loads((tmp_path / "ck" / "checkpoint.json").read_text())
    assert record["epoch"] == 2
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == [
        "checkpoint.json", "epoch-0002.model.npz", "epoch-0002.state.npz"]

    # Without --resume the folder is refused; with a changed setting too.
    code, _, err = run([*args, "--checkpoint", tmp_path / "ck"], capsys)
    assert_one_line_error(code, err, "--resume")
    code, _, err = run([*args[:-2], "--seed", "4", "--checkpoint", tmp_path / "ck",
                        "--resume"], capsys)
    assert_one_line_error(code, err, "--seed 4 differs from the checkpoint's 3")

    code, stdout, err = run([*args, "--out", tmp_path / "resumed.npz",
                             "--checkpoint", tmp_path / "ck", "--resume"], capsys)
    assert code == 0, err
    a, b = Network.load(tmp_path / "straight.npz"), Network.load(tmp_path / "resumed.npz")
    for wa, wb in zip([*a.weights, *a.biases], [*b.weights, *b.biases]):
        assert wa.tobytes() == wb.tobytes()
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"):
        assert getattr(a.history, key) == getattr(b.history, key), key
    assert a.history.best_epoch == b.history.best_epoch
    assert json.loads((tmp_path / "ck" / "checkpoint.json").read_text())["epoch"] == 4


def test_train_with_augmentation(mnist, tmp_path, monkeypatch, capsys):
    """--augment/--rotate/--scale reach fit (an MLP then takes its input as a 28x28 image),
    show in the run's header, and are kept in the history's recipe and the checkpoint's;
    a resume must keep them."""
    seen = []
    fit = Network.fit

    def recording_fit(self, *args, **kwargs):
        seen.append(kwargs.get("augment"))
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(Network, "fit", recording_fit)
    args = ["train", *[a for a in SMALL if a != "--quiet"], "--epochs", "1", "--data-dir",
            mnist, "--augment", "2", "--rotate", "10", "--scale", "0.1"]
    code, out, err = run([*args, "--out", tmp_path / "aug.npz", "--checkpoint",
                          tmp_path / "ck"], capsys)
    assert code == 0, err
    assert seen == [{"shift": 2, "rotate": 10.0, "scale": 0.1}]
    assert "batch 64, augment shift 2 rotate 10 scale 0.1, 1 epoch" in out
    net = Network.load(tmp_path / "aug.npz")
    assert net.input_shape == (1, 28, 28) and net.layer_sizes == [784, 24, 10]
    recipe = json.loads((tmp_path / "aug.history.json").read_text())["run"]["recipe"]
    assert (recipe["augment"], recipe["rotate"], recipe["scale"]) == (2, 10.0, 0.1)
    config = json.loads((tmp_path / "ck" / "checkpoint.json").read_text())["config"]
    assert (config["augment"], config["rotate"], config["scale"]) == (2, 10.0, 0.1)
    code, _, err = run([*args[:-6], "--augment", "1", "--checkpoint", tmp_path / "ck",
                        "--resume"], capsys)
    assert_one_line_error(code, err, "--augment 1 differs from the checkpoint's 2")
    code, out, err = run(["evaluate", tmp_path / "aug.npz", "--data-dir", mnist], capsys)
    assert code == 0, err


def test_resume_without_checkpoint_starts_afresh(mnist, tmp_path, capsys):
    code, stdout, err = run(["train", *SMALL, "--epochs", "1", "--data-dir", mnist,
                             "--checkpoint", tmp_path / "new", "--resume"], capsys)
    assert code == 0, err
    assert (tmp_path / "new" / "checkpoint.json").is_file()


def test_ctrl_c_without_checkpoint(mnist, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Network, "fit", interrupted)
    code, _, err = run(["train", *SMALL, "--data-dir", mnist], capsys)
    assert code == 130
    assert "interrupted" in err and "Traceback" not in err
    assert not Path("models").exists() or not list(Path("models").iterdir())


# ---------------------------------------------------------------- info, serve, bench


def test_info(capsys, tmp_path):
    code, out, err = run(["info", "--data-dir", tmp_path], capsys)
    assert code == 0, err
    for word in ("fastmlp", "numpy", "numba", "threads", "numba cache", str(tmp_path)):
        assert word in out
    assert "mnist" in out and "missing 4 of 4" in out


def test_serve_uses_the_default_model(tiny_model, monkeypatch, capsys):
    import fastmlp.web.server as server

    calls = []
    monkeypatch.setattr(server, "serve", lambda *a, **k: calls.append((a, k)))
    Path("models").mkdir()
    Path("models/mnist.npz").write_bytes(tiny_model.read_bytes())
    code, _, err = run(["serve", "--port", "8123"], capsys)
    assert code == 0, err
    assert calls == [((str(Path("models/mnist.npz")),), {"host": "127.0.0.1", "port": 8123})]


def test_bench_dispatches(monkeypatch, capsys):
    seen = []
    fake = types.ModuleType("fastmlp.bench")
    fake.main = lambda argv: seen.append(argv) or 0
    monkeypatch.setitem(sys.modules, "fastmlp.bench", fake)
    monkeypatch.setattr(fastmlp, "bench", fake, raising=False)
    assert cli.main(["bench", "--quick", "--threads", "1"]) == 0
    assert seen == [["--quick", "--threads", "1"]]


def test_bench_missing(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "fastmlp.bench", None)
    monkeypatch.delattr(fastmlp, "bench", raising=False)
    code, _, err = run(["bench"], capsys)
    assert_one_line_error(code, err, "bench")


# ------------------------------------------------------------------------ subprocess


def _python_m(*args, cwd):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1]) + os.pathsep + env.get(
        "PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "fastmlp", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=120)


def test_python_m_help(tmp_path):
    result = _python_m("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "train" in result.stdout and "evaluate" in result.stdout


def test_python_m_error_is_one_line(tmp_path):
    result = _python_m("train", "--hidden", "12,x", cwd=tmp_path)
    assert result.returncode == 2
    assert_one_line_error(result.returncode, result.stderr, "--hidden")
    assert result.stdout == ""
