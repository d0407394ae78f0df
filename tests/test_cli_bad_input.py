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
    return path


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


def test_one_epoch_one_thread_is_singular(mnist, capsys):
    code, out, err = run(["train", *SMALL[:-1], "--epochs", "1", "--threads", "1",
                          "--data-dir", mnist, "--out", "m.npz"], capsys)
    assert code == 0, err
    assert "1 epoch on" in out and "1 thread" in out and "1 threads" not in out


@pytest.mark.parametrize("damage", ["truncate", "garbage", "extra-member", "wrong-shape",
                                    "nan"])
def test_damaged_checkpoint_state_is_one_line(damage, mnist, tmp_path, capsys):
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
        else:
            arrays["opt.state2"][0] = np.nan
        with open(state, "wb") as f:
            np.savez(f, **arrays)
    code, _, err = run(["train", *SMALL, "--epochs", "2", "--data-dir", mnist, "--checkpoint",
                        ckpt, "--resume", "--out", "m.npz"], capsys)
    assert "Traceback" not in err
    assert_one_line_error(code, err, str(ckpt))


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
