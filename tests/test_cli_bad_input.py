"""The CLI's contract, one row per bad input: exit status 2 and ONE line ``fastmlp: error:
...`` naming the problem -- for arguments, model files, checkpoints, sidecars and the files
given to ``predict``. Rows need no training unless marked; all run in-process."""

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from fastmlp import cli
from test_cli import assert_one_line_error, run  # one definition of the CLI contract
from fastmlp.network import Network

SMALL = ["--limit", "600", "--hidden", "8", "--batch-size", "64", "--quiet"]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


class Hung(BaseException):  # not an Exception: the CLI must not turn it into an error line
    pass


@pytest.fixture
def alarm():
    """A hang (reading a FIFO) fails the test instead of stopping the suite."""
    def hung(*_):
        raise Hung("the command hung")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(300)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)




# --------------------------------------------------------------------- files to point at


def tiny_model(folder):
    path = Path(folder) / "tiny.npz"
    if not path.exists():
        Network([784, 8, 10], seed=1).save(path)
    return path


def fifo(folder, name="pipe"):
    path = Path(folder) / name
    os.mkfifo(path)
    return path


def link_loop(folder):
    a, b = Path(folder) / "loop-a.npz", Path(folder) / "loop-b.npz"
    a.symlink_to(b)
    b.symlink_to(a)
    return a


def a_folder(folder):
    path = Path(folder) / "dir.npz"
    path.mkdir()
    a_folder.last = path
    return path


def made(_thing, value):
    """``value``, once ``_thing`` (a file in the way) has been made."""
    return value


def huge_npy(folder):
    """An .npy whose header claims (10**12, 784) float32: 3 TB, in a 200-byte file."""
    path = Path(folder) / "huge.npy"
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000, 784), }"
    header += " " * (118 - len(header)) + "\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
    return path


def png_bomb(folder, side=20000):
    """A PNG whose header says side x side pixels (its data is nearly nothing)."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1000)
    path = Path(folder) / "bomb.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
                     + chunk(b"IEND", b""))
    return path


def busy_port(_folder):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    busy_port.keep = s  # held until the next call
    return s.getsockname()[1]


def checkpoint(folder, **changes):
    """A checkpoint.json of the right shape (files it names need not exist), changed."""
    ckpt = Path(folder) / "ckpt"
    ckpt.mkdir(exist_ok=True)
    data = {"format": cli.CHECKPOINT_FORMAT, "version": cli.CHECKPOINT_VERSION, "epoch": 1,
            "config": dict(cli.DEFAULT_RECIPE), "model": "epoch-0001.model.npz",
            "state": "epoch-0001.state.npz",
            "training_state": {"optimizer": "adam", "rng": {}, "dropout_key": 1,
                               "early_stopping": None, "scalars": {"step": 3}}}
    for key, value in changes.items():
        if key.startswith("config_"):
            data["config"][key[7:]] = value
        elif key.startswith("ts_"):
            data["training_state"][key[3:]] = value
        else:
            data[key] = value
    (ckpt / "checkpoint.json").write_text(json.dumps(data))
    return ckpt


def a_file(folder, name="file.txt"):
    path = Path(folder) / name
    path.write_text("not a folder")
    return path


def in_ckpt(folder, name, make=fifo):
    """``ckpt/<name>`` made by ``make`` (a FIFO by default): the --checkpoint folder."""
    ckpt = Path(folder) / "ckpt"
    ckpt.mkdir(exist_ok=True)
    make(ckpt, name)
    return ckpt


def no_data(folder):
    """Options that make a run fail at loading its data: a check that comes first shows."""
    return ["--data-dir", Path(folder) / "no-data", "--no-download"]


BIG = 2**63


def raw_checkpoint(folder, text):
    ckpt = Path(folder) / "ckpt"
    ckpt.mkdir(exist_ok=True)
    (ckpt / "checkpoint.json").write_text(text)
    return ckpt


# ----------------------------------------------------------------------------- the table
# (id, argv builder given the tmp folder, fragments of the one error line)

CASES = [
    # huge sizes: say the memory they would need
    ("hidden-20-digits", lambda d: ["train", "--hidden", "99999999999999999999"],
     ["parameters; training it needs about", "this machine has"]),
    ("hidden-1e8", lambda d: ["train", "--hidden", "100000000"], ["needs about", "GB"]),
    ("hidden-superscript", lambda d: ["train", "--hidden", "\u00b2"], ["not a positive integer"]),
    # misspelled flags: a suggestion, and the command's own help
    ("misspelled-flag", lambda d: ["train", "--epohcs", "3"],
     ["unrecognized arguments: --epohcs", "did you mean --epochs", "fastmlp train --help"]),
    ("misspelled-flag-predict", lambda d: ["predict", "m.npz", "x.npy", "--tpo", "2"],
     ["did you mean --top", "fastmlp predict --help"]),
    ("unknown-flag", lambda d: ["evaluate", "m.npz", "--zzzzzz"],
     ["unrecognized arguments: --zzzzzz", "fastmlp evaluate --help"]),
    # bench: one line, not its whole usage
    ("bench-bad-value", lambda d: ["bench", "--rounds", "0"], ["--rounds", "fastmlp bench --help"]),
    ("bench-unknown-flag", lambda d: ["bench", "--frobnicate"], ["unrecognized arguments"]),
    # save targets that are not regular files: refused before any training
    ("out-fifo", lambda d: ["train", "--out", fifo(d, "out.npz")], ["named pipe"]),
    ("out-folder", lambda d: ["train", "--out", a_folder(d)], ["is a folder"]),
    # every output path is checked before the first epoch (and before the data is loaded)
    ("history-fifo", lambda d: ["train", "--out", made(fifo(d, "m.history.json"), "m.npz"),
                                *no_data(d)], ["m.history.json", "named pipe"]),
    ("checkpoint-record-fifo", lambda d: ["train", "--out", "m.npz", *no_data(d), "--checkpoint",
                                          in_ckpt(d, "checkpoint.json")],
     ["checkpoint.json", "named pipe"]),
    ("checkpoint-epoch-file-fifo", lambda d: ["train", "--out", "m.npz", *no_data(d),
                                              "--checkpoint", in_ckpt(d, "epoch-0001.model.npz")],
     ["epoch-0001.model.npz", "named pipe"]),
    ("checkpoint-under-a-file", lambda d: ["train", "--out", "m.npz", *no_data(d),
                                           "--checkpoint", a_file(d) / "ckpt"],
     ["file.txt is not a folder"]),
    ("out-under-a-file", lambda d: ["train", "--out", a_file(d) / "m.npz", *no_data(d)],
     ["file.txt is not a folder"]),
    ("plot-file-fifo", lambda d: ["train", "--out", "m.npz", *no_data(d), "--plot",
                                  made(fifo(a_folder(d), "curves.png"), a_folder.last)],
     ["curves.png", "named pipe"]),
    # layer integers and --layers / --hidden tokens: bounded, ASCII digits, the token named
    ("layers-stride-2**63", lambda d: ["train", "--model", "cnn", "--layers",
                                       f"conv8k3s{BIG}", *no_data(d)],
     ["Conv2D stride must be at most 2,147,483,647, got 9223372036854775808"]),
    ("layers-pool-2**63", lambda d: ["train", "--model", "cnn", "--layers", f"pool2s{BIG}",
                                     *no_data(d)], ["MaxPool2D stride must be at most"]),
    ("layers-superscript", lambda d: ["train", "--model", "cnn", "--layers", "\u00b2"],
     ["bad layer '\u00b2'"]),
    ("layers-5000-digits", lambda d: ["train", "--model", "cnn", "--layers", "7" * 5000],
     ["(5,000 characters): a number of more than 20 digits"]),
    ("layers-arabic-indic", lambda d: ["train", "--model", "cnn", "--layers",
                                       "conv8k3,\u0661\u0662", *no_data(d)],
     ["bad layer '\u0661\u0662'"]),
    ("layers-dropout-1.5", lambda d: ["train", "--model", "cnn", "--layers", "conv8k3,drop1.5"],
     ["bad layer 'drop1.5': Dropout rate must be in [0, 1), got 1.5"]),
    ("layers-bn-first", lambda d: ["train", "--model", "cnn", "--layers", "bn,conv8k3",
                                   *no_data(d)], ["BatchNorm", "right after a Conv2D"]),
    ("layers-avg-too-big", lambda d: ["train", "--model", "cnn", "--layers", "avg29",
                                      *no_data(d)], ["29x29 window does not fit"]),
    ("mlp-layers-with-conv", lambda d: ["train", "--layers", "conv8k3,bn,128", *no_data(d)],
     ["--layers conv8k3: convolution and pooling need --model cnn"]),
    ("mlp-layers-and-hidden", lambda d: ["train", "--layers", "128,bn", "--hidden", "64",
                                         *no_data(d)], ["give --hidden or --layers, not both"]),
    ("hidden-arabic-indic", lambda d: ["train", "--hidden", "\u0661\u0662"],
     ["'\u0661\u0662' is not a positive integer"]),
    ("hidden-5000-digits", lambda d: ["train", "--hidden", "7" * 5000],
     ["(5,000 characters) is a number of more than 20 digits"]),
    # bench: a misspelled option gets a suggestion, as every other command's does
    ("bench-misspelled-flag", lambda d: ["bench", "--rouns", "2"],
     ["unrecognized arguments: --rouns", "did you mean --rounds", "fastmlp bench --help"]),
    # evaluate without MODEL: the default model, as serve's
    ("evaluate-default-missing", lambda d: ["evaluate"],
     [str(Path("models", "mnist.npz")), "does not exist", "fastmlp train"]),
    ("evaluate-default-per-dataset", lambda d: ["evaluate", "--dataset", "fashion-mnist"],
     [str(Path("models", "fashion-mnist.npz")), "does not exist"]),
    ("predict-default-missing", lambda d: ["predict", "x.png"],
     [str(Path("models", "mnist.npz")), "does not exist"]),
    # model files: what is wrong, in words
    ("evaluate-folder", lambda d: ["evaluate", a_folder(d)], ["is a folder"]),
    ("evaluate-link-loop", lambda d: ["evaluate", link_loop(d)], ["symbolic link loop"]),
    ("evaluate-missing", lambda d: ["evaluate", "gone.npz"], ["does not exist"]),
    ("serve-folder", lambda d: ["serve", "--model", a_folder(d)], ["is a folder"]),
    ("serve-link-loop", lambda d: ["serve", "--model", link_loop(d)], ["symbolic link loop"]),
    ("serve-port-in-use", lambda d: ["serve", "--model", tiny_model(d), "--port", busy_port(d)],
     ["already in use", "--port"]),
    ("predict-model-fifo", lambda d: ["predict", fifo(d, "m.npz"), "x.npy"], ["not a regular file"]),
    # predict's inputs
    ("predict-fifo", lambda d: ["predict", tiny_model(d), fifo(d, "in.npy")], ["not a regular file"]),
    ("predict-huge-npy", lambda d: ["predict", tiny_model(d), huge_npy(d)],
     ["claims shape (1000000000000, 784)", "truncated or corrupt"]),
    ("predict-png-bomb", lambda d: ["predict", tiny_model(d), png_bomb(d)],
     ["bomb.png", "pixels"]),
    # below Pillow's own refusal (it only warns there) but still 400 MB of floats
    ("predict-png-100-megapixels", lambda d: ["predict", tiny_model(d), png_bomb(d, 10000)],
     ["10000 x 10000 pixels"]),
    ("predict-missing-input", lambda d: ["predict", tiny_model(d), "gone.npy"],
     ["gone.npy", "does not exist"]),
    # damaged checkpoint.json: types, paths, nesting
    ("ckpt-epoch-string", lambda d: ["train", "--checkpoint", checkpoint(d, epoch="3"), "--resume"],
     ["not a valid checkpoint", "epoch '3'"]),
    ("ckpt-epoch-float", lambda d: ["train", "--checkpoint", checkpoint(d, epoch=1.5), "--resume"],
     ["epoch 1.5"]),
    ("ckpt-config-list", lambda d: ["train", "--checkpoint", checkpoint(d, config=[1]), "--resume"],
     ["config is a list"]),
    ("ckpt-hidden-string", lambda d: ["train", "--checkpoint",
                                      checkpoint(d, config_hidden="512"), "--resume"],
     ["config hidden"]),
    ("ckpt-lr-string", lambda d: ["train", "--checkpoint", checkpoint(d, config_lr="fast"),
                                  "--resume"], ["config lr"]),
    ("ckpt-augment-negative", lambda d: ["train", "--checkpoint",
                                         checkpoint(d, config_augment=-1), "--resume"],
     ["config augment is -1"]),
    ("ckpt-rotate-string", lambda d: ["train", "--checkpoint",
                                      checkpoint(d, config_rotate="10"), "--resume"],
     ["config rotate"]),
    ("ckpt-scale-1", lambda d: ["train", "--checkpoint", checkpoint(d, config_scale=1.0),
                                "--resume"], ["config scale is 1.0"]),
    ("ckpt-dataset-dict", lambda d: ["train", "--checkpoint",
                                     checkpoint(d, config_dataset={"a": 1}), "--resume"],
     ["config dataset"]),
    ("ckpt-model-path-escape", lambda d: ["train", "--checkpoint",
                                          checkpoint(d, model="../../etc/passwd"), "--resume"],
     ["not an epoch-NNNN.model.npz file name"]),
    ("ckpt-state-number", lambda d: ["train", "--checkpoint", checkpoint(d, state=7), "--resume"],
     ["state 7"]),
    ("ckpt-training-state-list", lambda d: ["train", "--checkpoint",
                                            checkpoint(d, training_state=[]), "--resume"],
     ["training_state is not an object"]),
    ("ckpt-scalars-string", lambda d: ["train", "--checkpoint",
                                       checkpoint(d, ts_scalars={"step": "3"}), "--resume"],
     ["scalars"]),
    # damaged checkpoint state: the schema (types, ranges) checked before anything is used
    ("ckpt-no-step", lambda d: ["train", "--checkpoint", checkpoint(d, ts_scalars={}),
                                "--resume"], ["not a valid checkpoint", "no 'step'"]),
    ("ckpt-step-2**70", lambda d: ["train", "--checkpoint",
                                   checkpoint(d, ts_scalars={"step": 2**70}), "--resume"],
     ["step 1180591620717411303424 is not an integer in 0 .. 2**53"]),
    ("ckpt-step-2**63-1", lambda d: ["train", "--checkpoint",
                                     checkpoint(d, ts_scalars={"step": BIG - 1}), "--resume"],
     ["step 9223372036854775807 is not"]),
    ("ckpt-step-2.5", lambda d: ["train", "--checkpoint", checkpoint(d, ts_scalars={"step": 2.5}),
                                 "--resume"], ["step 2.5 is not an integer"]),
    ("ckpt-step-negative", lambda d: ["train", "--checkpoint",
                                      checkpoint(d, ts_scalars={"step": -1}), "--resume"],
     ["step -1 is not"]),
    ("ckpt-cnn-layers-null", lambda d: ["train", "--checkpoint",
                                        checkpoint(d, config_model="cnn", config_layers=None),
                                        "--resume"], ["config layers is null", "model cnn"]),
    ("ckpt-cnn-no-layers", lambda d: ["train", "--checkpoint",
                                      checkpoint(d, config_model="cnn"), "--resume"],
     ["config layers is null"]),
    ("ckpt-cnn-bad-layers", lambda d: ["train", "--checkpoint",
                                       checkpoint(d, config_model="cnn",
                                                  config_layers=f"conv8k3s{BIG}"), "--resume"],
     ["config layers", "Conv2D stride must be at most"]),
    ("ckpt-hidden-2**63", lambda d: ["train", "--checkpoint", checkpoint(d, config_hidden=[BIG]),
                                     "--resume"], ["config hidden is [9223372036854775808]"]),
    ("ckpt-epochs-2**70", lambda d: ["train", "--checkpoint", checkpoint(d, config_epochs=2**70),
                                     "--resume"], ["config epochs"]),
    ("ckpt-optimizer-unknown", lambda d: ["train", "--checkpoint",
                                          checkpoint(d, ts_optimizer="lbfgs"), "--resume"],
     ["optimizer \"lbfgs\""]),
    ("ckpt-since-best-2**70", lambda d: ["train", "--checkpoint", checkpoint(
        d, ts_early_stopping={"since_best": 2**70, "best_loss": 1.0}), "--resume"],
     ["since_best 1180591620717411303424"]),
    ("ckpt-nested", lambda d: ["train", "--checkpoint",
                               raw_checkpoint(d, "[" * 100000 + "]" * 100000), "--resume"],
     ["not a readable checkpoint"]),
    ("ckpt-not-json", lambda d: ["train", "--checkpoint", raw_checkpoint(d, "{epoch: 1"),
                                 "--resume"], ["not a readable checkpoint"]),
]


@pytest.mark.parametrize("build, fragments", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(build, fragments, tmp_path, capsys, alarm):
    argv = build(tmp_path)
    code, _, err = run(argv, capsys)
    assert "Traceback" not in err
    assert_one_line_error(code, err, *fragments)


# ------------------------------------------------------------------------- predict batches


def test_predict_reports_a_bad_file_and_goes_on(tmp_path, capsys, alarm):
    model = tiny_model(tmp_path)
    good = tmp_path / "good.npy"
    np.save(good, np.zeros((2, 784), np.float32))
    code, out, err = run(["predict", model, good, huge_npy(tmp_path), fifo(tmp_path), good],
                         capsys)
    assert code == 2  # some failed
    assert out.count("good.npy[") == 4  # both good files, two samples each
    lines = err.strip().splitlines()
    assert len(lines) == 2 and all(l.startswith("fastmlp: error: ") for l in lines), err
    assert "huge.npy" in lines[0] and "pipe" in lines[1]


@pytest.mark.parametrize("content", [
    "[" * 100000 + "]" * 100000,
    '{"run": {"dataset": ["mnist"], "classes": 5}}',
    '{"run": {"classes": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}}',
    '{"run": "x"}',
    "not json",
], ids=["nested", "dataset-list", "classes-numbers", "run-string", "not-json"])
def test_damaged_history_json_is_ignored_by_predict(content, tmp_path, capsys):
    model = tiny_model(tmp_path)
    (tmp_path / "tiny.history.json").write_text(content)
    np.save(tmp_path / "x.npy", np.zeros(784, np.float32))
    code, out, err = run(["predict", model, tmp_path / "x.npy"], capsys)
    assert code == 0, err
    assert out.startswith(str(tmp_path / "x.npy") + ": ")


# ------------------------------------------------------------------- runs that train a little


def test_output_survives_a_closed_pipe(mnist, tmp_path, monkeypatch, capsys):
    """`fastmlp train ... | head -1`: the reader leaves after the first line; the model must
    still be saved, and the exit status is 0."""

    class ClosedAfterOneLine:
        def __init__(self):
            self.lines = 0

        def write(self, text):
            if self.lines >= 1:
                raise BrokenPipeError(32, "Broken pipe")
            self.lines += text.count("\n")
            return len(text)

        def flush(self):
            if self.lines >= 1:
                raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", ClosedAfterOneLine())
    code = cli.main(["train", *SMALL[:-1], "--epochs", "1", "--data-dir", mnist,
                     "--out", tmp_path / "p.npz"])
    assert code == 0
    assert Network.load(tmp_path / "p.npz").layer_sizes == [784, 8, 10]


def test_train_does_not_replace_a_default_model_of_another_recipe(mnist, capsys):
    base = ["train", *SMALL, "--data-dir", mnist]
    assert run([*base, "--epochs", "2"], capsys)[0] == 0
    before = Path("models/mnist.npz").read_bytes()
    code, _, err = run([*base, "--epochs", "1"], capsys)
    assert_one_line_error(code, err, "models/mnist.npz already holds", "--epochs 2 there, 1 now",
                          "--force")
    assert Path("models/mnist.npz").read_bytes() == before
    assert run([*base, "--epochs", "2"], capsys)[0] == 0  # the same recipe again: fine
    assert run([*base, "--epochs", "1", "--force"], capsys)[0] == 0
    assert Network.load("models/mnist.npz").history.epochs == 1


def test_a_recipe_saved_before_augmentation_existed_is_the_same_recipe(tmp_path):
    """A model saved by a fastmlp without --augment/--rotate/--scale had them off: the same
    command replaces it (and a run with augmentation on does not)."""
    out = tmp_path / "m.npz"
    out.write_bytes(b"a model")
    recipe = dict(cli.DEFAULT_RECIPE, augment=0, rotate=0.0, scale=0.0)
    old = {k: v for k, v in recipe.items() if k not in ("augment", "rotate", "scale")}
    (tmp_path / "m.history.json").write_text(json.dumps({"run": {"recipe": old}}))
    cli._check_default_output(out, recipe)
    with pytest.raises(cli.CLIError, match="--augment 0 there, 2 now"):
        cli._check_default_output(out, dict(recipe, augment=2))


def test_one_epoch_one_thread_is_singular(mnist, capsys):
    code, out, err = run(["train", *SMALL[:-1], "--epochs", "1", "--threads", "1",
                          "--data-dir", mnist, "--out", "m.npz"], capsys)
    assert code == 0, err
    assert "1 epoch on" in out and "1 thread" in out and "1 threads" not in out


@pytest.mark.parametrize("damage, fragment", [
    ("truncate", ""), ("garbage", ""), ("extra-member", "junk"), ("wrong-shape", "shape"),
    ("nan", "NaN"), ("no-state2", "has no 'state2'"), ("negative-state2", "negative values"),
    ("npy-claims-huge", "claims shape (1000000000000,)")])
def test_damaged_checkpoint_state_is_one_line(damage, fragment, mnist, tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    code, _, err = run(["train", *SMALL, "--epochs", "1", "--data-dir", mnist, "--checkpoint",
                        ckpt, "--out", "m.npz"], capsys)
    assert code == 0, err
    state = ckpt / json.loads((ckpt / "checkpoint.json").read_text())["state"]
    if damage == "truncate":
        state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    elif damage == "garbage":
        state.write_bytes(b"PK\x03\x04" + os.urandom(300))
    else:
        with np.load(state) as a:
            arrays = {k: a[k] for k in a.files}
        if damage == "extra-member":
            arrays["junk"] = np.zeros(10)
        elif damage == "wrong-shape":
            arrays["opt.state1"] = arrays["opt.state1"][:-3]
        elif damage == "no-state2":
            del arrays["opt.state2"]
        elif damage == "negative-state2":
            arrays["opt.state2"][:5] = -1.0
        elif damage == "nan":
            arrays["opt.state2"][0] = np.nan
        with open(state, "wb") as f:
            np.savez(f, **arrays)
        if damage == "npy-claims-huge":  # an .npy header claiming 4 TB in a small member
            import zipfile

            members = {}
            with zipfile.ZipFile(state) as z:
                for name in z.namelist():
                    members[name] = z.read(name)
            head = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000,), }"
            head += " " * (117 - len(head)) + "\n"
            members["opt.state1.npy"] = (b"\x93NUMPY\x01\x00" + len(head).to_bytes(2, "little")
                                         + head.encode())
            with zipfile.ZipFile(state, "w") as z:
                for name, data in members.items():
                    z.writestr(name, data)
    code, _, err = run(["train", *SMALL, "--epochs", "2", "--data-dir", mnist, "--checkpoint",
                        ckpt, "--resume", "--out", "m.npz"], capsys)
    assert "Traceback" not in err
    assert_one_line_error(code, err, str(ckpt), fragment)


def test_predict_ignores_a_history_fifo_beside_the_model(tmp_path, capsys, alarm):
    """The sidecar is read only when it is a regular file: a FIFO would block for ever."""
    model = tiny_model(tmp_path)
    fifo(tmp_path, "tiny.history.json")
    np.save(tmp_path / "x.npy", np.zeros(784, np.float32))
    code, out, err = run(["predict", model, tmp_path / "x.npy"], capsys)
    assert code == 0, err
    assert out.startswith(str(tmp_path / "x.npy") + ": ")


def test_predict_and_evaluate_default_to_the_trained_model(tmp_path, capsys):
    Path("models").mkdir()
    Network([784, 8, 10], seed=1).save("models/mnist.npz")
    np.save("x.npy", np.zeros(784, np.float32))
    code, out, err = run(["predict", "x.npy"], capsys)  # no MODEL: models/mnist.npz
    assert code == 0, err
    assert out.startswith("x.npy: ")
    code, out, err = run(["predict", "models/mnist.npz", "x.npy", "x.npy"], capsys)
    assert code == 0, err
    assert out.count("x.npy: ") == 2


def test_info_lists_every_model_from_its_header(tmp_path, capsys, monkeypatch):
    from fastmlp.layers import Conv2D, MaxPool2D

    Path("models").mkdir()
    Network([784, 8, 10], seed=1, backend="numpy").save("models/mnist.npz")
    Network([(1, 28, 28), Conv2D(2, 5, padding=2), MaxPool2D(2), 10], seed=1,
            backend="numpy").save("models/mnist-cnn.npz")
    Path("models/broken.npz").write_bytes(b"not a model")
    Path("models/notes.txt").write_text("not listed")
    import fastmlp.network

    def no_networks(*args, **kwargs):
        raise AssertionError("info built a network")

    monkeypatch.setattr(fastmlp.network.Network, "__init__", no_networks)
    code, out, err = run(["info", "--data-dir", tmp_path], capsys)
    assert code == 0, err
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("models "))
    assert "3 in models" in lines[at]
    listed = {line.split()[0]: line for line in lines[at + 1:at + 4]}
    assert set(listed) == {"broken.npz", "mnist-cnn.npz", "mnist.npz"}
    assert listed["mnist.npz"].rstrip().endswith("784-8-10") and " KB " in listed["mnist.npz"]
    assert "(1, 28, 28), Conv2D(2, 5, padding=2), MaxPool2D(2), 10" in listed["mnist-cnn.npz"]
    assert "not readable" in listed["broken.npz"] and "zip" in listed["broken.npz"]


def test_bench_without_data_is_one_line(monkeypatch, capsys):
    from fastmlp import bench
    from fastmlp.datasets import DatasetNotFoundError

    def missing(args):
        raise DatasetNotFoundError("MNIST is not in /nowhere/mnist:\nmissing 4 files")

    monkeypatch.setattr(bench, "load_data", missing)
    code, out, err = run(["bench", "--quick"], capsys)
    assert_one_line_error(code, err, "cannot load MNIST", "missing 4 files", "--synthetic")
    assert out == ""


def test_python_m_train_piped_into_head_saves(data_dir, tmp_path):
    """The real thing: a subprocess whose stdout reader closes after one line."""
    env = dict(os.environ, FASTMLP_DATA=str(data_dir))
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastmlp", "train", *SMALL[:-1], "--epochs", "1",
         "--out", "p.npz"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()  # like `head -1` exiting
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    assert (tmp_path / "p.npz").is_file()
    assert b"Traceback" not in err and b"Exception ignored" not in err
