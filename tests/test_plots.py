"""fastmlp.plots: the PNG files exist, are valid PNGs and are not blank; and the CLI's --plot."""

import struct
import sys
import zlib

import numpy as np
import pytest

from fastmlp import cli, plots
from fastmlp.network import History, Network

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path, min_bytes=8000):
    """A complete PNG (signature, IHDR first, IEND last, every chunk's CRC right), of a
    size that only a drawn figure reaches."""
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE), path
    assert len(data) >= min_bytes, (path, len(data))
    pos, chunks = len(PNG_SIGNATURE), []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, (path, kind)
        chunks.append(kind)
        pos += 12 + length
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND", chunks
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 300 and height >= 200


@pytest.fixture
def mpl():
    return pytest.importorskip("matplotlib")


@pytest.fixture
def fake_results():
    rng = np.random.default_rng(0)
    n, k = 300, 10
    y = rng.integers(0, k, n)
    proba = rng.dirichlet(np.ones(k), n)
    proba[np.arange(n), y] += rng.random(n)  # mostly right, some confident mistakes
    proba /= proba.sum(axis=1, keepdims=True)
    X = rng.random((n, 784)).astype(np.float32)
    return X, y, proba


def test_history_curves(mpl, tmp_path):
    h = History(loss=[0.9, 0.4, 0.3], accuracy=[0.7, 0.85, 0.9], val_loss=[0.8, 0.5, 0.55],
                val_accuracy=[0.72, 0.83, 0.82], best_epoch=2)
    assert_png(plots.plot_history(h, tmp_path / "h.png"))
    # a dict works too, and validation curves are optional
    assert_png(plots.plot_history({"loss": [1.0, 0.5], "accuracy": [0.5, 0.8]},
                                  tmp_path / "d.png"))
    assert plots.plot_history(History(), tmp_path / "empty.png") is None
    assert not (tmp_path / "empty.png").exists()


def test_confusion_and_mistakes(mpl, tmp_path, fake_results):
    X, y, proba = fake_results
    assert_png(plots.plot_confusion(y, proba.argmax(1), tmp_path / "c.png"))
    assert_png(plots.plot_confusion(y, proba.argmax(1), tmp_path / "named.png",
                                    class_names=list(cli.FASHION_CLASSES)))
    assert_png(plots.plot_misclassified(X, y, proba, tmp_path / "m.png"))
    # no mistakes at all: still a valid picture that says so
    perfect = np.eye(10)[y]
    assert_png(plots.plot_misclassified(X, y, perfect, tmp_path / "none.png"), 2000)


def test_confusion_matrix_counts():
    m = plots.confusion_matrix([0, 1, 1, 2], [0, 2, 1, 2], 4)
    assert m.tolist() == [[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]


def test_most_confident_mistakes_come_first(mpl, tmp_path, monkeypatch):
    shown = []
    real = plots._as_images
    monkeypatch.setattr(plots, "_as_images", lambda X: shown.append(X.copy()) or real(X))
    X = np.arange(4)[:, None] * np.ones((4, 784)) / 4
    y = np.array([0, 0, 0, 0])
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.05, 0.95]])
    plots.plot_misclassified(X, y, proba, tmp_path / "m.png", count=2)
    assert [row[0] for row in shown[0]] == [3 / 4, 1 / 4]


def test_write_plots(mpl, tmp_path, fake_results):
    X, y, proba = fake_results
    h = History(loss=[0.5, 0.3], accuracy=[0.8, 0.9])
    written = plots.write_plots(tmp_path / "new" / "dir", h, X, y, proba)
    assert sorted(written) == ["confusion", "curves", "misclassified"]
    for path in written.values():
        assert path.parent == tmp_path / "new" / "dir"
        assert_png(path)
    assert not list((tmp_path / "new" / "dir").glob(".*"))  # no temporary files left


def test_matplotlib_missing(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"pip install 'fastmlp\[plot\]' \(from a checkout: pip install -e '\.\[plot\]'"):
        plots.require_matplotlib()
    # the CLI says so in one line before it loads any data or trains anything
    code = cli.main(["train", "--plot", str(tmp_path / "p"), "--data-dir",
                     str(tmp_path / "no-data"), "--no-download"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "matplotlib" in err and "Traceback" not in err


def test_cli_train_and_evaluate_plots(mpl, data_dir, tmp_path, capsys):
    out = tmp_path / "m.npz"
    code = cli.main(["train", "--limit", "1000", "--hidden", "16", "--epochs", "2",
                     "--validation-split", "0.1", "--quiet", "--data-dir", str(data_dir),
                     "--out", str(out), "--plot", str(tmp_path / "train-plots")])
    assert code == 0, capsys.readouterr().err
    for name in plots.FILES.values():
        assert_png(tmp_path / "train-plots" / name)

    code = cli.main(["evaluate", str(out), "--data-dir", str(data_dir),
                     "--plot", str(tmp_path / "eval-plots")])
    assert code == 0, capsys.readouterr().err
    for name in plots.FILES.values():  # curves from the History saved in the model
        assert_png(tmp_path / "eval-plots" / name)


def test_evaluate_plots_without_history(mpl, data_dir, tmp_path, capsys):
    out = tmp_path / "untrained.npz"
    Network([784, 8, 10], seed=0).save(out)
    code = cli.main(["evaluate", str(out), "--data-dir", str(data_dir),
                     "--plot", str(tmp_path / "p")])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == [
        plots.FILES["confusion"], plots.FILES["misclassified"]]
