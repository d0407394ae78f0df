"""fastmlp.datasets: IDX reader, data-folder resolution, loaders, downloads (against a local
HTTP server only: an autouse fixture fails any request to a host other than 127.0.0.1)."""

import gzip
import hashlib
import http.server
import io
import os
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from fastmlp import datasets as ds
from fastmlp.datasets import DatasetNotFoundError, read_idx

NAMES = ds.IDX_FILES


# ------------------------------------------------------------------------------ isolation


@pytest.fixture(autouse=True)
def _offline_and_isolated(monkeypatch):
    real_urlopen = urllib.request.urlopen

    def loopback_only(req, *a, **kw):
        url = req.full_url if isinstance(req, urllib.request.Request) else req
        host = urllib.parse.urlsplit(url).hostname
        assert host == "127.0.0.1", f"test tried to reach {url}"
        return real_urlopen(req, *a, **kw)

    monkeypatch.setattr(urllib.request, "urlopen", loopback_only)
    monkeypatch.setattr(ds, "SYSTEM_DIRS", {})
    monkeypatch.delenv("FASTMLP_DATA", raising=False)


# ------------------------------------------------------------------------------ helpers


def idx_bytes(array):
    """IDX encoding of ``array``, written independently of the module's own writer."""
    array = np.asarray(array)
    code = {np.dtype("u1"): 8, np.dtype("i1"): 9, np.dtype("i2"): 0x0B, np.dtype("i4"): 0x0C,
            np.dtype("f4"): 0x0D, np.dtype("f8"): 0x0E}[array.dtype.newbyteorder("=")]
    big = array.astype(array.dtype.newbyteorder(">"))
    return bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes() + big.tobytes()


def fake_idx_dataset(n_train=12, n_test=5, seed=0):
    """{name: raw IDX bytes} of a tiny MNIST-shaped dataset, and the arrays."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test).astype(np.uint8),
    }
    arrays["train-images-idx3-ubyte"][0, 0, :2] = (0, 255)  # both ends of the range
    return {k: idx_bytes(v) for k, v in arrays.items()}, arrays


@pytest.fixture
def fake_mnist(monkeypatch):
    """Patch the MNIST checksums / sizes to those of a tiny fake dataset; return its bytes and arrays."""
    raw, arrays = fake_idx_dataset()
    monkeypatch.setitem(ds.CHECKSUMS, "mnist", {k: hashlib.md5(v).hexdigest() for k, v in raw.items()})
    monkeypatch.setitem(ds.SPLIT_SIZES, "mnist", (12, 5))
    return raw, arrays


def check_fake_result(result, arrays):
    X_train, y_train, X_test, y_test = result
    for X, y, split in ((X_train, y_train, "train"), (X_test, y_test, "t10k")):
        imgs = arrays[f"{split}-images-idx3-ubyte"]
        assert X.dtype == np.float32 and X.shape == (len(imgs), 784) and X.flags.c_contiguous
        np.testing.assert_array_equal(X, imgs.reshape(len(imgs), 784).astype(np.float32) / np.float32(255))
        assert y.dtype == np.int64
        np.testing.assert_array_equal(y, arrays[f"{split}-labels-idx1-ubyte"])
    assert X_train.min() == 0.0 and X_train.max() == 1.0


def leftovers(folder):
    return sorted(p.name for p in Path(folder).iterdir()) if Path(folder).exists() else []


class Server:
    """A real HTTP server on 127.0.0.1 (port 0) in a thread; routes[path] is one of:
    bytes (200), int (that status), ("drop", bytes) (Content-Length of all, half sent, then the
    connection closes), ("cut", bytes) (half sent, no Content-Length), ("stall", seconds)."""

    def __init__(self):
        self.routes = {}
        self.requests = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                server.requests.append(self.path)
                spec = server.routes.get(self.path, 404)
                if isinstance(spec, int):
                    self.send_error(spec)
                    return
                kind, body = ("ok", spec) if isinstance(spec, bytes) else spec
                if kind == "stall":
                    time.sleep(body)
                    return
                if kind == "trickle":  # all of it, one byte every 50 ms (each read succeeds)
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    for i in range(len(body)):
                        try:
                            self.wfile.write(body[i:i + 1])
                            self.wfile.flush()
                        except OSError:
                            return
                        time.sleep(0.05)
                    return
                self.send_response(200)
                if kind in ("ok", "drop"):
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body if kind == "ok" else body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, prefix):
        return f"{self.base}/{prefix}/"

    def serve_idx(self, prefix, raw, spec=lambda b: b):
        for name, data in raw.items():
            self.routes[f"/{prefix}/{name}.gz"] = spec(gzip.compress(data, mtime=0))


@pytest.fixture
def server():
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


# ------------------------------------------------------------------------------ real MNIST


@pytest.fixture(scope="module")
def mnist(data_dir):
    return ds.load_mnist(data_dir, download=False)


def test_real_mnist_shapes_dtypes_ranges(mnist):
    X_train, y_train, X_test, y_test = mnist
    assert X_train.shape == (60000, 784) and X_test.shape == (10000, 784)
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    for X in (X_train, X_test):
        assert X.dtype == np.float32 and X.flags.c_contiguous
        assert X.min() == 0.0 and X.max() == 1.0
    for y in (y_train, y_test):
        assert y.dtype == np.int64 and y.min() == 0 and y.max() == 9
    # The well-known normalisation constants of MNIST's training set.
    assert abs(float(X_train.mean(dtype=np.float64)) - 0.1307) < 1e-3
    assert abs(float(X_train.std(dtype=np.float64)) - 0.3081) < 1e-3
    # Pixels are multiples of 1/255.
    assert np.array_equal(np.round(X_test[:100] * 255), X_test[:100] * np.float32(255))


def test_real_mnist_label_counts(mnist):
    _, y_train, _, y_test = mnist
    assert np.bincount(y_train).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_real_mnist_md5_and_env_var(data_dir, monkeypatch, mnist):
    monkeypatch.setenv("FASTMLP_DATA", str(data_dir))
    X_train, y_train, X_test, y_test = ds.load_mnist(verify=True, download=False)  # found via the env var
    np.testing.assert_array_equal(y_test, mnist[3])
    np.testing.assert_array_equal(X_test[:50], mnist[2][:50])


def test_real_fashion_mnist_from_debian_package(tmp_path, monkeypatch):
    system = Path("/usr/share/datasets/fashion-mnist")
    if not all(ds._find_file([system], n) for n in NAMES):
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    monkeypatch.setitem(ds.SYSTEM_DIRS, "fashion-mnist", [system])
    X_train, y_train, X_test, y_test = ds.load_fashion_mnist(tmp_path, download=False, verify=True)
    assert X_train.shape == (60000, 784) and X_test.shape == (10000, 784)
    assert np.bincount(y_train).tolist() == [6000] * 10 and np.bincount(y_test).tolist() == [1000] * 10
    assert leftovers(tmp_path) == []  # nothing was written to the data folder


# ------------------------------------------------------------------------------ IDX reader


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype,shape", [("u1", (3, 4, 5)), ("i1", (7,)), ("i2", (2, 3)), ("i4", (4, 1)),
                                         ("f4", (2, 2, 2, 2)), ("f8", (5,))])
def test_read_idx_round_trip(tmp_path, gz, dtype, shape):
    rng = np.random.default_rng(1)
    a = np.clip(rng.standard_normal(shape) * 100, -128, 127).astype(dtype)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    ds._write_idx(path, a)
    content = path.read_bytes()
    assert (content[:2] == b"\x1f\x8b") == gz
    assert (gzip.decompress(content) if gz else content) == idx_bytes(a)
    b = read_idx(path)
    assert b.dtype == np.dtype(dtype) and b.dtype.isnative and b.shape == shape and b.flags.writeable
    np.testing.assert_array_equal(a, b)


def test_read_idx_detects_gzip_by_content(tmp_path):
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    (tmp_path / "plain-named").write_bytes(gzip.compress(idx_bytes(a)))
    (tmp_path / "raw.gz").write_bytes(idx_bytes(a))
    np.testing.assert_array_equal(read_idx(tmp_path / "plain-named"), a)
    np.testing.assert_array_equal(read_idx(tmp_path / "raw.gz"), a)


GOOD = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))


@pytest.mark.parametrize("content,why", [
    (GOOD[:-1], "truncated"),
    (GOOD + b"\0", "trailing"),
    (b"\x08\x03" + GOOD[2:], "magic"),
    (GOOD[:2] + b"\x07" + GOOD[3:], "type code"),
    (GOOD[:3] + b"\x00", "0 dimensions"),
    (GOOD[:3] + b"\x02" + GOOD[4:], "payload"),  # claims 2 dims: 2x3 payload != 4*... bytes
    (GOOD[:10], "truncated IDX header"),
    (b"", "shorter"),
    (gzip.compress(GOOD)[:-12], "truncated gzip"),
    (gzip.compress(GOOD)[:-8] + b"\0\0\0\0" + gzip.compress(GOOD)[-4:], "corrupt gzip"),
])
def test_read_idx_rejects_bad_files(tmp_path, content, why):
    path = tmp_path / "bad-file-idx"
    path.write_bytes(content)
    with pytest.raises(ValueError) as e:
        read_idx(path)
    assert str(path) in str(e.value) and why in str(e.value)


# ------------------------------------------------------------------------------ data folder


def test_resolve_data_dir_order(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert ds.resolve_data_dir() == tmp_path / "home" / ".cache" / "fastmlp"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert ds.resolve_data_dir() == tmp_path / "xdg" / "fastmlp"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/xdg")  # invalid per the spec: ignored
    assert ds.resolve_data_dir() == tmp_path / "home" / ".cache" / "fastmlp"
    monkeypatch.setenv("FASTMLP_DATA", str(tmp_path / "env"))
    assert ds.resolve_data_dir() == tmp_path / "env"
    assert ds.resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert ds.resolve_data_dir(str(tmp_path / "arg")) == tmp_path / "arg"
    monkeypatch.setenv("FASTMLP_DATA", "~/d")
    assert ds.resolve_data_dir() == tmp_path / "home" / "d"


def test_resolve_data_dir_macos_windows(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(sys, "platform", "darwin")
    assert ds.resolve_data_dir() == tmp_path / "Library" / "Caches" / "fastmlp"
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "local"))
    assert ds.resolve_data_dir() == tmp_path / "local" / "fastmlp"


def test_loader_follows_resolution_order(tmp_path, monkeypatch, fake_mnist):
    raw, arrays = fake_mnist
    for where in ("arg", "env", "cache"):
        (tmp_path / where / "mnist").mkdir(parents=True)
    for name, data in raw.items():
        (tmp_path / "cache" / "mnist" / name).write_bytes(data)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # -> tmp_path / "fastmlp"
    (tmp_path / "fastmlp").symlink_to(tmp_path / "cache")
    monkeypatch.setattr(sys, "platform", "linux")
    check_fake_result(ds.load_mnist(download=False), arrays)
    monkeypatch.setenv("FASTMLP_DATA", str(tmp_path / "env"))
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path / "env" / "mnist")):
        ds.load_mnist(download=False)
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path / "arg" / "mnist")):
        ds.load_mnist(tmp_path / "arg", download=False)


# ------------------------------------------------------------------------------ local files


def test_load_local_mixed_gz_and_raw(tmp_path, fake_mnist):
    raw, arrays = fake_mnist
    folder = tmp_path / "mnist"
    folder.mkdir()
    for i, (name, data) in enumerate(raw.items()):
        if i % 2:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    check_fake_result(ds.load_mnist(tmp_path, download=False), arrays)
    check_fake_result(ds.load_dataset("MNIST", tmp_path, download=False, verify=True), arrays)


def test_missing_files_without_download(tmp_path, fake_mnist):
    raw, _ = fake_mnist
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / NAMES[0]).write_bytes(raw[NAMES[0]])
    with pytest.raises(DatasetNotFoundError) as e:
        ds.load_mnist(tmp_path, download=False)
    assert isinstance(e.value, ValueError)
    msg = str(e.value)
    assert all(n in msg for n in NAMES[1:]) and NAMES[0] not in msg
    assert str(tmp_path / "mnist") in msg and "download=True" in msg


@pytest.mark.parametrize("edit,why", [
    (lambda a: {**a, "train-labels-idx1-ubyte": a["train-labels-idx1-ubyte"][:-1]}, "labels"),
    (lambda a: {**a, "t10k-labels-idx1-ubyte": np.full(5, 10, np.uint8)}, "0..9"),
    (lambda a: {**a, "t10k-images-idx3-ubyte": np.zeros((5, 28, 27), np.uint8)}, "28x28"),
    (lambda a: {**a, "train-images-idx3-ubyte": np.zeros((11, 28, 28), np.uint8)}, "12 uint8 images"),
    (lambda a: {**a, "train-images-idx3-ubyte": np.zeros((12, 28, 28), np.float32)}, "uint8"),
])
def test_loader_validates_shapes_and_labels(tmp_path, fake_mnist, edit, why):
    _, arrays = fake_mnist
    (tmp_path / "mnist").mkdir()
    for name, a in edit(arrays).items():
        (tmp_path / "mnist" / name).write_bytes(idx_bytes(a))
    with pytest.raises(ValueError, match=why):
        ds.load_mnist(tmp_path, download=False)


def test_verify_checks_md5_of_present_files(tmp_path, fake_mnist):
    raw, arrays = fake_mnist
    (tmp_path / "mnist").mkdir()
    for name, data in raw.items():
        (tmp_path / "mnist" / name).write_bytes(data)
    other = arrays["t10k-images-idx3-ubyte"].copy()
    other[0, 0, 0] ^= 1  # still a valid IDX file of the right shape
    (tmp_path / "mnist" / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(other))
    ds.load_mnist(tmp_path, download=False)  # header/size only: accepted
    with pytest.raises(ValueError, match="MD5") as e:
        ds.load_mnist(tmp_path, download=False, verify=True)
    assert "t10k-images-idx3-ubyte" in str(e.value)


def test_truncated_local_file_is_an_error(tmp_path, fake_mnist):
    raw, _ = fake_mnist
    (tmp_path / "mnist").mkdir()
    for name, data in raw.items():
        (tmp_path / "mnist" / f"{name}.gz").write_bytes(gzip.compress(data))
    bad = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated") as e:
        ds.load_mnist(tmp_path, download=False)
    assert str(bad) in str(e.value)


# ------------------------------------------------------------------------------ downloads


def test_download_good_mirror(tmp_path, server, fake_mnist, capsys):
    raw, arrays = fake_mnist
    server.serve_idx("m", raw)
    check_fake_result(ds.load_mnist(tmp_path, mirrors=[server.url("m")], timeout=5), arrays)
    assert leftovers(tmp_path / "mnist") == sorted(f"{n}.gz" for n in NAMES)
    assert sorted(server.requests) == sorted(f"/m/{n}.gz" for n in NAMES)
    assert "download" in capsys.readouterr().err
    # Second load: from disk, no requests.
    server.requests.clear()
    check_fake_result(ds.load_mnist(tmp_path, mirrors=[server.url("m")], timeout=5), arrays)
    assert server.requests == []


def test_download_uses_module_mirrors_and_plain_progress_line(tmp_path, server, fake_mnist, monkeypatch, capsys):
    raw, arrays = fake_mnist
    server.serve_idx("m", raw)
    monkeypatch.setitem(ds.MIRRORS, "mnist", [server.url("m")])
    monkeypatch.setitem(sys.modules, "tqdm", None)  # tqdm "not installed"
    check_fake_result(ds.load_dataset("mnist", tmp_path), arrays)
    err = capsys.readouterr().err
    assert err.count("fastmlp: downloading") == 4 and "download done" in err


def test_download_only_missing_files(tmp_path, server, fake_mnist):
    raw, arrays = fake_mnist
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / NAMES[0]).write_bytes(raw[NAMES[0]])
    server.serve_idx("m", raw)
    check_fake_result(ds.load_mnist(tmp_path, mirrors=[server.url("m")], progress=False), arrays)
    assert sorted(server.requests) == sorted(f"/m/{n}.gz" for n in NAMES[1:])


def test_download_falls_through_bad_mirrors(tmp_path, server, fake_mnist):
    raw, arrays = fake_mnist
    wrong = {k: idx_bytes(np.zeros_like(a)) for k, a in arrays.items()}  # valid IDX, wrong content
    server.serve_idx("corrupt", wrong)
    server.serve_idx("drop", raw, lambda b: ("drop", b))
    server.serve_idx("cut", raw, lambda b: ("cut", b))
    server.serve_idx("good", raw)
    server.routes["/error/" + NAMES[0] + ".gz"] = 500
    mirrors = [server.url(p) for p in ("missing", "error", "corrupt", "drop", "cut", "good")]
    check_fake_result(ds.load_mnist(tmp_path, mirrors=mirrors, progress=False), arrays)
    assert leftovers(tmp_path / "mnist") == sorted(f"{n}.gz" for n in NAMES)
    first = [r for r in server.requests if r.endswith(NAMES[0] + ".gz")]
    assert first == [f"/{p}/{NAMES[0]}.gz" for p in ("missing", "error", "corrupt", "drop", "cut", "good")]


def test_all_mirrors_fail(tmp_path, server, fake_mnist):
    raw, arrays = fake_mnist
    server.serve_idx("corrupt", {k: v[:-1] + b"\x01" for k, v in raw.items()})
    server.serve_idx("drop", raw, lambda b: ("drop", b))
    server.serve_idx("cut", raw, lambda b: ("cut", b))
    server.serve_idx("stall", raw, lambda b: ("stall", 1.5))
    server.routes["/notgz/" + NAMES[0] + ".gz"] = b"<html>not found</html>"
    mirrors = [server.url(p) for p in ("missing", "corrupt", "drop", "cut", "stall", "notgz")]
    t = time.perf_counter()
    with pytest.raises(DatasetNotFoundError) as e:
        ds.load_mnist(tmp_path, mirrors=mirrors, timeout=0.5, progress=False)
    assert time.perf_counter() - t < 10
    msg = str(e.value)
    assert all(n in msg for n in NAMES), msg
    assert str(tmp_path / "mnist") in msg
    assert all(m + NAMES[0] + ".gz" in msg for m in mirrors)
    for why in ("404", "MD5", "closed after", "timed out"):
        assert why in msg, (why, msg)
    assert leftovers(tmp_path / "mnist") == []  # folder made, nothing partial left


def test_failure_after_some_files_keeps_the_good_ones(tmp_path, server, fake_mnist):
    raw, _ = fake_mnist
    server.serve_idx("m", {k: v for k, v in raw.items() if k != NAMES[2]})
    with pytest.raises(DatasetNotFoundError) as e:
        ds.load_mnist(tmp_path, mirrors=[server.url("m")], progress=False)
    assert NAMES[2] in str(e.value) and NAMES[0] not in str(e.value).split("\n")[0]
    assert leftovers(tmp_path / "mnist") == sorted(f"{n}.gz" for n in NAMES[:2])


def test_no_mirrors(tmp_path, fake_mnist):
    with pytest.raises(DatasetNotFoundError, match="no mirrors"):
        ds.load_mnist(tmp_path, mirrors=[])


def test_fashion_mnist_download(tmp_path, server, monkeypatch):
    raw, arrays = fake_idx_dataset(seed=3)
    monkeypatch.setitem(ds.CHECKSUMS, "fashion-mnist", {k: hashlib.md5(v).hexdigest() for k, v in raw.items()})
    monkeypatch.setitem(ds.SPLIT_SIZES, "fashion-mnist", (12, 5))
    server.serve_idx("f", raw)
    check_fake_result(ds.load_dataset("fashion_mnist", tmp_path, mirrors=[server.url("f")], progress=False), arrays)
    assert leftovers(tmp_path / "fashion-mnist") == sorted(f"{n}.gz" for n in NAMES)


def test_fashion_system_dir_fallback_and_status(tmp_path, monkeypatch):
    raw, arrays = fake_idx_dataset(seed=4)
    monkeypatch.setitem(ds.CHECKSUMS, "fashion-mnist", {k: hashlib.md5(v).hexdigest() for k, v in raw.items()})
    monkeypatch.setitem(ds.SPLIT_SIZES, "fashion-mnist", (12, 5))
    system = tmp_path / "system"
    system.mkdir()
    for name, data in raw.items():
        (system / f"{name}.gz").write_bytes(gzip.compress(data))
    data = tmp_path / "data"
    assert ds.dataset_status(data)["fashion-mnist"]["present"] is False
    monkeypatch.setitem(ds.SYSTEM_DIRS, "fashion-mnist", [system])
    st = ds.dataset_status(data)
    assert st["fashion-mnist"]["present"] and st["fashion-mnist"]["files"][NAMES[0]] == str(system / f"{NAMES[0]}.gz")
    check_fake_result(ds.load_fashion_mnist(data, download=False, verify=True), arrays)
    assert not ds.dataset_status(data)["mnist"]["present"]  # the system folder is for fashion only


def test_dataset_status(tmp_path, fake_mnist):
    raw, _ = fake_mnist
    st = ds.dataset_status(tmp_path)
    assert st["data_dir"] == str(tmp_path)
    assert {k: st[k]["present"] for k in ds.DATASETS} == {"mnist": False, "fashion-mnist": False, "quickdraw": False}
    assert st["mnist"]["missing"] == list(NAMES) and st["mnist"]["folder"] == str(tmp_path / "mnist")
    (tmp_path / "mnist").mkdir()
    for name, data in list(raw.items())[:3]:
        (tmp_path / "mnist" / name).write_bytes(data)
    assert ds.dataset_status(tmp_path)["mnist"]["missing"] == [NAMES[3]]
    (tmp_path / "mnist" / f"{NAMES[3]}.gz").write_bytes(gzip.compress(raw[NAMES[3]]))
    assert ds.dataset_status(tmp_path)["mnist"]["present"]
    (tmp_path / "quickdraw").mkdir()
    np.save(tmp_path / "quickdraw" / "cat.npy", np.zeros((2, 784), np.uint8))
    assert ds.dataset_status(tmp_path)["quickdraw"] == {
        "present": True, "folder": str(tmp_path / "quickdraw"), "categories": ["cat"]}


def test_load_dataset_names():
    with pytest.raises(ValueError) as e:
        ds.load_dataset("cifar10")
    assert "cifar10" in str(e.value) and all(n in str(e.value) for n in ds.DATASETS)
    with pytest.raises(ValueError, match="categories"):
        ds.load_dataset("quickdraw")


# ------------------------------------------------------------------------------ Quick, Draw!


def npy_bytes(a):
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=True)
    return buf.getvalue()


@pytest.fixture
def quickdraw_server(server):
    rng = np.random.default_rng(7)
    arrays = {"cat": rng.integers(0, 256, (30, 784), dtype=np.uint8),
              "hot air balloon": rng.integers(0, 256, (25, 784), dtype=np.uint8)}
    for name, a in arrays.items():
        server.routes[f"/qd/{urllib.parse.quote(name)}.npy"] = npy_bytes(a)
    return server, arrays


def test_quickdraw_download_and_split(tmp_path, quickdraw_server):
    server, arrays = quickdraw_server
    cats = ["hot air balloon", "cat"]
    kw = dict(max_per_class=20, test_fraction=0.25, mirrors=[server.url("qd")], progress=False)
    X_train, y_train, X_test, y_test = ds.load_quickdraw(cats, tmp_path, seed=1, **kw)
    assert leftovers(tmp_path / "quickdraw") == ["cat.npy", "hot air balloon.npy"]
    assert X_train.shape == (30, 784) and X_test.shape == (10, 784)
    assert X_train.dtype == np.float32 and X_train.flags.c_contiguous and y_train.dtype == np.int64
    assert np.bincount(y_train).tolist() == [15, 15] and np.bincount(y_test).tolist() == [5, 5]
    assert np.any(np.diff(y_train) < 0) and np.any(np.diff(y_train) > 0)  # classes are shuffled together
    for label, cat in enumerate(cats):
        rows = np.concatenate([X_train[y_train == label], X_test[y_test == label]]) * 255
        got = sorted(map(bytes, np.round(rows).astype(np.uint8)))
        assert got == sorted(map(bytes, arrays[cat][:20]))  # the first 20, each exactly once
    # Same seed -> same split, from disk (no more requests); another seed -> another split.
    n_requests = len(server.requests)
    again = ds.load_quickdraw(cats, tmp_path, seed=1, download=False, **kw)
    for a, b in zip((X_train, y_train, X_test, y_test), again):
        np.testing.assert_array_equal(a, b)
    assert len(server.requests) == n_requests
    other = ds.load_quickdraw(cats, tmp_path, seed=2, download=False, **kw)
    assert not np.array_equal(other[2], X_test)
    # All drawings when max_per_class=None.
    full = ds.load_dataset("quickdraw", tmp_path, categories=["cat"], max_per_class=None, download=False,
                           verify=True)
    assert len(full[0]) + len(full[2]) == 30 and set(full[1].tolist()) == {0}


@pytest.mark.parametrize("bad", [
    np.zeros((3, 784), np.float64),
    np.zeros((3, 28, 28), np.uint8),
    np.zeros((0, 784), np.uint8),
    np.array([{"a": 1}], dtype=object),
])
def test_quickdraw_rejects_bad_files(tmp_path, server, bad):
    server.routes["/bad/cat.npy"] = npy_bytes(bad)
    with pytest.raises(DatasetNotFoundError) as e:
        ds.load_quickdraw(["cat"], tmp_path, mirrors=[server.url("bad")], progress=False)
    assert "cat.npy" in str(e.value) and str(tmp_path / "quickdraw") in str(e.value)
    assert leftovers(tmp_path / "quickdraw") == []


def test_quickdraw_dropped_connection_falls_through(tmp_path, server):
    a = np.arange(5 * 784, dtype=np.uint32).astype(np.uint8).reshape(5, 784)
    server.routes["/drop/cat.npy"] = ("drop", npy_bytes(a))
    server.routes["/good/cat.npy"] = npy_bytes(a)
    out = ds.load_quickdraw(["cat"], tmp_path, mirrors=[server.url("drop"), server.url("good")], progress=False,
                            test_fraction=0.4)
    assert len(out[0]) == 3 and len(out[2]) == 2
    assert server.requests == ["/drop/cat.npy", "/good/cat.npy"]
    assert leftovers(tmp_path / "quickdraw") == ["cat.npy"]


def test_quickdraw_local_file_checked(tmp_path):
    (tmp_path / "quickdraw").mkdir()
    np.save(tmp_path / "quickdraw" / "cat.npy", np.zeros((4, 783), np.uint8))
    with pytest.raises(ValueError, match="784"):
        ds.load_quickdraw(["cat"], tmp_path, download=False)
    (tmp_path / "quickdraw" / "cat.npy").write_bytes(npy_bytes(np.zeros((4, 784), np.uint8))[:-10])
    with pytest.raises(ValueError, match="cat.npy"):
        ds.load_quickdraw(["cat"], tmp_path, download=False)
    with pytest.raises(DatasetNotFoundError, match="dog.npy"):
        ds.load_quickdraw(["dog"], tmp_path, download=False)


@pytest.mark.parametrize("cats,why", [
    ([], "empty"), (["cat", "cat"], "duplicate"), (["cat", 3], "strings"), ("cat", "list"),
    (["../etc"], "invalid"), (["a/b"], "invalid"), ([""], "invalid"), (None, "list"),
])
def test_quickdraw_bad_categories(tmp_path, cats, why):
    with pytest.raises(ValueError, match=why):
        ds.load_quickdraw(cats, tmp_path, download=False)


@pytest.mark.parametrize("kw,why", [
    ({"max_per_class": 1}, "max_per_class"), ({"max_per_class": 2.5}, "max_per_class"),
    ({"test_fraction": 0}, "test_fraction"), ({"test_fraction": 1.0}, "test_fraction"),
])
def test_quickdraw_bad_options(tmp_path, kw, why):
    with pytest.raises(ValueError, match=why):
        ds.load_quickdraw(["cat"], tmp_path, download=False, **kw)


# ------------------------------------------------------------------------------ import


def test_import_needs_only_numpy():
    code = ("import sys, fastmlp.datasets; "
            "bad = [m for m in ('numba', 'tqdm', 'fastmlp.network') if m in sys.modules]; "
            "assert not bad, bad")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, env=env, timeout=60)


# ------------------------------------------------------------------ hardening (issue 12)


def test_trickling_download_hits_the_overall_deadline(tmp_path, server, fake_mnist, monkeypatch):
    raw, _ = fake_mnist
    server.serve_idx("slow", raw, lambda b: ("trickle", b))
    monkeypatch.setattr(ds, "DOWNLOAD_DEADLINE", 0.5)
    t = time.perf_counter()
    with pytest.raises(DatasetNotFoundError, match="deadline"):
        ds.load_mnist(tmp_path / "data", mirrors=[server.url("slow")], timeout=5, progress=False)
    assert time.perf_counter() - t < 5
    # the folders the failed download created are gone again
    assert not (tmp_path / "data").exists()


def test_failed_download_keeps_a_folder_that_existed(tmp_path, fake_mnist):
    (tmp_path / "mnist").mkdir()
    with pytest.raises(DatasetNotFoundError):
        ds.load_mnist(tmp_path, mirrors=[], progress=False)
    assert (tmp_path / "mnist").is_dir()


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "raw"])
def test_idx_header_claiming_more_than_the_file_holds(tmp_path, gz, monkeypatch):
    # dimensions of 4 GB, 100 bytes of data: refused from the header alone
    header = bytes([0, 0, 0x08, 3]) + np.array([100000, 200, 200], ">u4").tobytes()
    data = header + bytes(100)
    path = tmp_path / ("x.gz" if gz else "x")
    path.write_bytes(gzip.compress(data) if gz else data)
    asked = _no_bulk_inflate(monkeypatch)
    with pytest.raises(ValueError, match="claims"):
        ds.read_idx(path)
    assert all(0 <= n < 1 << 20 for n in asked)  # never "read everything"


def _no_bulk_inflate(monkeypatch):
    """Fail on gzip.decompress (inflates everything at once); record GzipFile.read sizes."""
    real = gzip.GzipFile.read
    asked = []

    def spy(self, size=-1):
        asked.append(size)
        return real(self, size)

    def refuse(*a, **k):
        raise AssertionError("the whole gzip member was inflated at once")

    monkeypatch.setattr(gzip.GzipFile, "read", spy)
    monkeypatch.setattr(gzip, "decompress", refuse)
    return asked


def test_gzip_bomb_with_a_true_header_is_not_inflated_whole(tmp_path, monkeypatch):
    # a valid-looking 12-image header followed by 64 MB of zeros: trailing bytes
    header = bytes([0, 0, 0x08, 3]) + np.array([12, 28, 28], ">u4").tobytes()
    path = tmp_path / "bomb.gz"
    path.write_bytes(gzip.compress(header + bytes(12 * 784 + (64 << 20))))
    asked = _no_bulk_inflate(monkeypatch)
    with pytest.raises(ValueError, match="trailing"):
        ds.read_idx(path)
    assert all(0 <= n < 1 << 20 for n in asked)


def test_data_dir_pointing_at_the_mnist_folder_itself_gets_a_hint(tmp_path, fake_mnist, monkeypatch):
    raw, _ = fake_mnist
    for name, data in raw.items():
        (tmp_path / name).write_bytes(data)
    monkeypatch.setenv("FASTMLP_DATA", str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match="FASTMLP_DATA .*parent folder"):
        ds.load_mnist(download=False)
