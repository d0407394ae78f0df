"""save / load: exact round trips, real .npz files read with allow_pickle=False, atomic writes,
and a clear ValueError (never code execution) for every kind of bad file."""

import io as _io
import json
import os
import pickle
import stat
import sys
import zipfile

import numpy as np
import pytest

import fastmlp.io as fio
from fastmlp import Network

BACKENDS = ["numba", "numpy"]
DTYPES = ["float32", "float64"]

_rng = np.random.default_rng(99)
X = _rng.random((30, 6)).astype(np.float32)
Y = np.arange(30) % 3


def trained(backend="numpy", dtype="float32", sizes=(6, 7, 5, 3), **kwargs):
    net = Network(list(sizes), backend=backend, dtype=dtype, seed=1, **kwargs)
    if net.cost == "cross_entropy":
        net.fit(X, Y, epochs=2, batch_size=8, learning_rate=0.1, verbose=False,
                validation_data=(X[:10], Y[:10]))
    return net


@pytest.fixture
def saved(tmp_path):
    """A valid model file and the network it holds."""
    net = trained()
    path = tmp_path / "model.npz"
    net.save(path)
    return path, net


def arrays_of(path):
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def header_of(path):
    return json.loads(arrays_of(path)["header"].tobytes().decode())


def write_npz(path, arrays, **kwargs):
    with open(path, "wb") as f:
        np.savez(f, **arrays, **kwargs)


def rewrite(path, header=None, **changes):
    """Rewrite a saved model with a new header (dict or raw bytes) and changed arrays
    (``name=None`` removes one)."""
    arrays = arrays_of(path)
    if header is not None:
        raw = header if isinstance(header, bytes) else json.dumps(header).encode()
        arrays["header"] = np.frombuffer(raw, dtype=np.uint8)
    for name, value in changes.items():
        if value is None:
            arrays.pop(name)
        else:
            arrays[name] = value
    write_npz(path, arrays)


# --- round trips ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_round_trip_is_exact(tmp_path, backend, dtype):
    net = trained(backend, dtype)
    path = tmp_path / "model.npz"
    assert net.save(path) == path
    back = Network.load(path, backend=backend)
    assert back.layer_sizes == net.layer_sizes
    assert back.activations == net.activations
    assert back.cost == net.cost
    assert back.dtype == net.dtype and back.backend == backend
    assert back.history.to_dict() == net.history.to_dict()
    assert back.history.epochs == 2 and len(back.history.val_loss) == 2
    for a, b in zip(back.weights + back.biases, net.weights + net.biases):
        assert a.dtype == net.dtype
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(back.predict_proba(X), net.predict_proba(X))
    np.testing.assert_array_equal(back.predict(X), net.predict(X))
    assert back.evaluate(X, Y) == net.evaluate(X, Y)
    # The loaded network trains on, and its history keeps growing from where it was.
    back.fit(X, Y, epochs=1, batch_size=8, verbose=False)
    assert back.history.epochs == 3


@pytest.mark.parametrize("dtype", DTYPES)
def test_load_into_the_other_backend(tmp_path, dtype):
    net = trained("numba", dtype)
    net.save(tmp_path / "m.npz")
    back = Network.load(tmp_path / "m.npz", backend="numpy")
    assert back.backend == "numpy"
    for a, b in zip(back.weights + back.biases, net.weights + net.biases):
        np.testing.assert_array_equal(a, b)
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(back.predict_proba(X), net.predict_proba(X), rtol=tol, atol=tol)


@pytest.mark.parametrize("activations, cost", [
    (["sigmoid", "tanh", "identity"], "mse"),
    (["identity", "relu", "softmax"], "cross_entropy"),
    (["tanh", "sigmoid", "softmax"], "mse"),
])
def test_round_trip_other_architectures(tmp_path, activations, cost):
    net = Network([6, 7, 5, 3], activations=activations, cost=cost, backend="numpy", seed=4)
    net.save(tmp_path / "m.npz")
    back = Network.load(tmp_path / "m.npz", backend="numpy")
    assert (back.activations, back.cost) == (activations, cost)
    np.testing.assert_array_equal(back.predict_proba(X), net.predict_proba(X))
    assert back.history.epochs == 0


def test_file_is_a_plain_npz(saved):
    path, net = saved
    assert zipfile.is_zipfile(path)
    arrays = arrays_of(path)  # allow_pickle=False: no object arrays anywhere
    assert set(arrays) == {"header", "W0", "b0", "W1", "b1", "W2", "b2"}
    assert arrays["header"].dtype == np.uint8
    header = header_of(path)
    assert header["format"] == "fastmlp.network" and header["version"] == 1
    assert header["layer_sizes"] == [6, 7, 5, 3]
    assert header["activations"] == ["relu", "relu", "softmax"]
    assert header["cost"] == "cross_entropy" and header["dtype"] == "float32"
    assert header["history"]["loss"] == net.history.loss
    for k, (W, b) in enumerate(zip(net.weights, net.biases)):
        assert arrays[f"W{k}"].shape == (net.layer_sizes[k + 1], net.layer_sizes[k])
        np.testing.assert_array_equal(arrays[f"W{k}"], W)
        np.testing.assert_array_equal(arrays[f"b{k}"], b)


def test_save_keeps_the_exact_name(tmp_path):
    net = trained()
    net.save(tmp_path / "model.bin")  # np.savez would append ".npz" to a bare path
    assert os.listdir(tmp_path) == ["model.bin"]
    Network.load(str(tmp_path / "model.bin"), backend="numpy")


def test_relative_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trained().save("model.npz")
    assert Network.load("model.npz", backend="numpy").layer_sizes == [6, 7, 5, 3]


def test_save_overwrites(saved):
    path, net = saved
    other = Network([2, 3], backend="numpy", seed=0)
    other.save(path)
    assert Network.load(path, backend="numpy").layer_sizes == [2, 3]
    assert os.listdir(path.parent) == [path.name]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
def test_new_file_gets_umask_permissions_and_replaced_file_keeps_its_mode(tmp_path):
    umask = os.umask(0o022)
    try:
        net = trained()
        net.save(tmp_path / "m.npz")
        assert stat.S_IMODE(os.stat(tmp_path / "m.npz").st_mode) == 0o644
        os.chmod(tmp_path / "m.npz", 0o640)
        net.save(tmp_path / "m.npz")
        assert stat.S_IMODE(os.stat(tmp_path / "m.npz").st_mode) == 0o640
    finally:
        os.umask(umask)


def test_history_with_numpy_scalars_saves(tmp_path):
    net = trained()
    net.history.best_epoch = np.int64(1)
    net.history.loss[0] = np.float32(net.history.loss[0])
    net.save(tmp_path / "m.npz")
    back = Network.load(tmp_path / "m.npz", backend="numpy")
    assert back.history.best_epoch == 1
    assert back.history.loss[0] == pytest.approx(float(net.history.loss[0]))


# --- atomic writes -------------------------------------------------------------------------

class Boom(Exception):
    pass


@pytest.mark.parametrize("error", [Boom, KeyboardInterrupt, OSError])
def test_failed_write_leaves_old_file_and_no_temp_files(saved, monkeypatch, error):
    path, net = saved
    before = path.read_bytes()

    def half_write(file, **arrays):
        file.write(b"PK\x03\x04 half a model")
        file.flush()
        raise error("disk on fire")

    monkeypatch.setattr(np, "savez", half_write)
    other = Network([6, 2], backend="numpy", seed=0)
    with pytest.raises(error, match="disk on fire"):
        other.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == [path.name]
    assert Network.load(path, backend="numpy").layer_sizes == net.layer_sizes


def test_failed_rename_leaves_no_temp_file(saved, monkeypatch):
    path, _ = saved
    before = path.read_bytes()

    def no_rename(src, dst):
        raise OSError("rename refused")

    monkeypatch.setattr(fio.os, "replace", no_rename)
    with pytest.raises(OSError, match="rename refused"):
        Network([6, 2], backend="numpy", seed=0).save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == [path.name]


def test_failed_first_write_leaves_nothing(tmp_path, monkeypatch):
    def fail(file, **arrays):
        raise Boom("no")

    monkeypatch.setattr(np, "savez", fail)
    with pytest.raises(Boom):
        trained().save(tmp_path / "new.npz")
    assert os.listdir(tmp_path) == []


# --- bad paths -----------------------------------------------------------------------------

def test_save_into_missing_folder(tmp_path):
    with pytest.raises(ValueError, match=r"folder .*nope.* does not exist"):
        trained().save(tmp_path / "nope" / "model.npz")
    assert not (tmp_path / "nope").exists()


def test_save_onto_a_folder(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(ValueError, match=r"is a folder"):
        trained().save(tmp_path / "d")
    assert os.listdir(tmp_path / "d") == [] and os.listdir(tmp_path) == ["d"]


@pytest.mark.parametrize("path", [None, 3, b"", "", ["m.npz"]], ids=repr)
def test_save_bad_path_type(path):
    with pytest.raises(ValueError, match=r"cannot save: path must be a file name"):
        trained().save(path)


@pytest.mark.parametrize("path", [None, 3, "", ["m.npz"]], ids=repr)
def test_load_bad_path_type(path):
    with pytest.raises(ValueError, match=r"cannot load: path must be a file name"):
        Network.load(path)


def test_save_refuses_non_finite_weights(tmp_path):
    net = trained()
    net.weights[1][2, 3] = np.nan
    with pytest.raises(ValueError, match=r"W1 contains NaN or infinite.*diverge"):
        net.save(tmp_path / "m.npz")
    assert os.listdir(tmp_path) == []


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model file .*missing\.npz does not exist"):
        Network.load(tmp_path / "missing.npz")


def test_load_a_folder(tmp_path):
    with pytest.raises(ValueError, match=r"is a folder, not a file"):
        Network.load(tmp_path)


def test_load_bad_backend_is_blamed_on_the_argument(saved):
    path, _ = saved
    with pytest.raises(ValueError, match=r"^unknown backend 'torch'; choose one of: numba"):
        Network.load(path, backend="torch")


# --- bad files -----------------------------------------------------------------------------

def _truncated(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[:keep] if keep >= 0 else data[:len(data) + keep])


BAD_FILES = {
    # name: (make(path) -> None, message pattern)
    "empty": (lambda p: p.write_bytes(b""), r"is empty"),
    "random-bytes": (lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096)),
                     r"not an \.npz \(zip\) archive"),
    "text": (lambda p: p.write_text("W0 = [[1, 2], [3, 4]]\n"), r"not an \.npz \(zip\) archive"),
    "json": (lambda p: p.write_text(json.dumps({"format": "fastmlp.network"})),
             r"not an \.npz \(zip\) archive"),
    "pickled-dict": (lambda p: p.write_bytes(pickle.dumps({"W0": np.ones((2, 2))})),
                     r"looks like a Python pickle.*never loads pickles"),
    "pickle-protocol-0": (lambda p: p.write_bytes(pickle.dumps({"a": 1}, protocol=0)),
                          r"not an \.npz \(zip\) archive"),
    "bare-npy": (lambda p: np.save(p, np.ones(3)), r"single \.npy array, not a fastmlp model"),
    "object-npy": (lambda p: np.save(p, np.array([{}, 1], dtype=object), allow_pickle=True),
                   r"single \.npy array"),
    "npz-with-object-array": (
        lambda p: write_npz(p, {"header": np.frombuffer(b"{}", np.uint8),
                                "W0": np.array([{"a": 1}], dtype=object)}, allow_pickle=True),
        r"pickled Python objects; fastmlp never loads pickles"),
    "npz-with-object-header": (
        lambda p: write_npz(p, {"header": np.array([{"format": "fastmlp.network"}], object)},
                            allow_pickle=True),
        r"pickled Python objects"),
    "empty-zip": (lambda p: zipfile.ZipFile(p, "w").close(), r"has no header"),
    "zip-of-text": (lambda p: _zip_with(p, "header.npy", b"not an npy"),
                    r"not a readable fastmlp model"),
    "npz-without-header": (lambda p: write_npz(p, {"W0": np.ones((3, 6))}), r"has no header"),
    "other-npz": (lambda p: write_npz(p, {"x": np.arange(5)}), r"has no header"),
}


def _zip_with(path, name, data):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(name, data)


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_bad_file(tmp_path, kind):
    make, match = BAD_FILES[kind]
    path = tmp_path / "model.npz"
    make(path)
    if not path.exists():  # np.save appended ".npy"
        (tmp_path / "model.npz.npy").rename(path)
    with pytest.raises(ValueError, match=match):
        Network.load(path)


@pytest.mark.parametrize("keep", [1, 3, 4, 10, 30, 100, 500, -1, -10, -22, -23, -100, -500,
                                  "half"])
def test_truncated_file(saved, keep):
    path, _ = saved
    if keep == "half":
        keep = path.stat().st_size // 2
    _truncated(path, keep)
    with pytest.raises(ValueError, match=r"fastmlp model|is empty"):
        Network.load(path, backend="numpy")


def test_every_truncation_and_bit_flip_is_a_value_error_or_the_same_model(saved):
    """Fuzz: no corruption gets through as a crash or as a silently different network."""
    path, net = saved
    good = path.read_bytes()
    rng = np.random.default_rng(0)
    cuts = sorted(set(rng.integers(1, len(good), 60).tolist()))
    flips = sorted(set(rng.integers(0, len(good), 300).tolist()))
    outcomes = {"error": 0, "same": 0}
    for cut in cuts:
        path.write_bytes(good[:cut])
        with pytest.raises(ValueError):
            Network.load(path, backend="numpy")
        outcomes["error"] += 1
    for pos in flips:
        data = bytearray(good)
        data[pos] ^= 0xFF
        path.write_bytes(bytes(data))
        try:
            back = Network.load(path, backend="numpy")
        except ValueError:
            outcomes["error"] += 1
            continue
        # Loaded despite the flipped byte (zip metadata numpy never reads): it must be the
        # same network, since every array and the header are CRC-checked.
        for a, b in zip(back.weights + back.biases, net.weights + net.biases):
            np.testing.assert_array_equal(a, b)
        assert back.history.to_dict() == net.history.to_dict()
        outcomes["same"] += 1
    assert outcomes["error"] > len(cuts)


# --- bad headers and arrays ----------------------------------------------------------------

def _header_change(**changes):
    def make(path):
        header = header_of(path)
        for key, value in changes.items():
            if value is _DROP:
                header.pop(key)
            else:
                header[key] = value
        rewrite(path, header)
    return make


_DROP = object()

BAD_CONTENT = {
    "version-2": (_header_change(version=2), r"format version 2; this fastmlp reads version 1"),
    "version-0": (_header_change(version=0), r"format version 0"),
    "version-str": (_header_change(version="1"), r"format version '1'"),
    "version-true": (_header_change(version=True), r"format version True"),
    "version-missing": (_header_change(version=_DROP), r"format version None"),
    "other-format": (_header_change(format="keras"), r"not a fastmlp model \(format 'keras'\)"),
    "format-missing": (_header_change(format=_DROP), r"not a fastmlp model \(format None\)"),
    "header-not-json": (lambda p: rewrite(p, b"{this is not json"), r"unreadable header"),
    "header-not-utf8": (lambda p: rewrite(p, b"\xff\xfe\x00garbage"), r"unreadable header"),
    "header-json-list": (lambda p: rewrite(p, b"[1, 2, 3]"), r"not a JSON object"),
    "header-json-string": (lambda p: rewrite(p, b'"fastmlp.network"'), r"not a JSON object"),
    "header-empty": (lambda p: rewrite(p, b""), r"unreadable header"),
    "header-float-array": (lambda p: _replace_header_array(p, np.zeros(8)), r"not bytes"),
    "header-2d": (lambda p: _replace_header_array(
        p, np.frombuffer(json.dumps(header_of(p)).encode(), np.uint8).reshape(1, -1)),
        r"not bytes"),
    "sizes-missing": (_header_change(layer_sizes=_DROP), r"invalid header: missing layer_sizes"),
    "sizes-str": (_header_change(layer_sizes="6,7,5,3"), r"layer_sizes '6,7,5,3'"),
    "sizes-zero": (_header_change(layer_sizes=[6, 0, 5, 3]), r"layer_sizes \[6, 0, 5, 3\]"),
    "sizes-float": (_header_change(layer_sizes=[6, 7.5, 5, 3]), r"positive integers"),
    "sizes-bool": (_header_change(layer_sizes=[6, True, 5, 3]), r"positive integers"),
    "sizes-one": (_header_change(layer_sizes=[6]), r"at least two"),
    "sizes-mismatch-arrays": (_header_change(layer_sizes=[6, 7, 5, 4]),
                              r"array W2 has shape \(3, 5\).*expected shape \(4, 5\)"),
    "sizes-huge": (_header_change(layer_sizes=[10**6, 10**6, 10**6, 3]),
                   r"array W0 has shape \(7, 6\).*expected shape \(1000000, 1000000\)"),
    "sizes-fewer-layers": (_header_change(layer_sizes=[6, 7, 3], activations=["relu", "softmax"]),
                           r"holds arrays .*W2.*need \['W0', 'W1', 'b0', 'b1'\]"),
    "activations-unknown": (_header_change(activations=["relu", "gelu", "softmax"]),
                            r"invalid header: unknown activation 'gelu'"),
    "activations-count": (_header_change(activations=["relu", "softmax"]),
                          r"invalid header: activations must list one name per"),
    "activations-not-list": (_header_change(activations=3), r"activations 3 is not a list"),
    "activations-not-names": (_header_change(activations=[1, 2, 3]), r"not a list of names"),
    "cost-unknown": (_header_change(cost="hinge"), r"invalid header: unknown cost 'hinge'"),
    "cost-mismatch": (_header_change(cost="cross_entropy",
                                     activations=["relu", "relu", "sigmoid"]),
                      r"invalid header: cost 'cross_entropy' needs a 'softmax'"),
    "dtype-unknown": (_header_change(dtype="float16"), r"dtype 'float16' is not one of"),
    "dtype-missing": (_header_change(dtype=_DROP), r"missing dtype"),
    "history-list": (_header_change(history=[1, 2]), r"invalid history: list"),
    "history-strings": (_header_change(history={"loss": ["a", "b"]}),
                        r"invalid history: loss is not a list of numbers"),
    "history-best-epoch": (_header_change(history={"best_epoch": "3"}),
                           r"best_epoch '3' is not an integer"),
    "missing-array": (lambda p: rewrite(p, W1=None), r"holds arrays \['W0', 'W2', 'b0', 'b1', "
                                                     r"'b2'\].*need"),
    "extra-array": (lambda p: rewrite(p, W9=np.ones(2)), r"holds arrays .*W9"),
    "W-transposed": (lambda p: rewrite(p, W1=arrays_of(p)["W1"].T.copy()),
                     r"array W1 has shape \(7, 5\).*expected shape \(5, 7\)"),
    "b-2d": (lambda p: rewrite(p, b0=arrays_of(p)["b0"].reshape(1, -1)),
             r"array b0 has shape \(1, 7\).*expected shape \(7,\)"),
    "W-int": (lambda p: rewrite(p, W0=np.ones((7, 6), dtype=np.int64)),
              r"array W0 .*dtype int64.*of floats"),
    "W-complex": (lambda p: rewrite(p, W0=np.ones((7, 6), dtype=complex)),
                  r"array W0 .*complex.*of floats"),
    "W-str": (lambda p: rewrite(p, W0=np.full((7, 6), "1.0")), r"array W0 .*of floats"),
    "nan-weight": (lambda p: rewrite(p, W2=_with_nan(arrays_of(p)["W2"])),
                   r"array W2 contains NaN or infinite"),
    "inf-bias": (lambda p: rewrite(p, b1=np.full(5, np.inf, np.float32)),
                 r"array b1 contains NaN or infinite"),
    "float64-overflowing-float32": (lambda p: rewrite(p, b1=np.full(5, 1e300)),
                                    r"array b1 contains NaN or infinite values \(as float32\)"),
}


def _with_nan(a):
    a = a.copy()
    a[1, 1] = np.nan
    return a


def _replace_header_array(path, header):
    arrays = arrays_of(path)
    arrays["header"] = header
    write_npz(path, arrays)


@pytest.mark.parametrize("kind", list(BAD_CONTENT))
def test_bad_content(saved, kind):
    path, _ = saved
    make, match = BAD_CONTENT[kind]
    make(path)
    with pytest.raises(ValueError, match=match):
        Network.load(path, backend="numpy")


def test_float64_arrays_into_float32_model_are_cast(saved):
    path, net = saved
    arrays = arrays_of(path)
    rewrite(path, **{k: v.astype(np.float64) for k, v in arrays.items() if k != "header"})
    back = Network.load(path, backend="numpy")
    assert back.dtype == np.float32
    for a, b in zip(back.weights + back.biases, net.weights + net.biases):
        np.testing.assert_array_equal(a, b)


def test_unknown_header_keys_are_ignored(saved):
    path, net = saved
    header = header_of(path)
    header["comment"] = "written by a newer fastmlp"
    header["history"]["future_metric"] = [1, 2]
    rewrite(path, header)
    back = Network.load(path, backend="numpy")
    np.testing.assert_array_equal(back.predict_proba(X), net.predict_proba(X))


# --- loading never executes code -----------------------------------------------------------

class _Payload:
    """Unpickling this creates ``marker``: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _payload_npy(marker):
    buffer = _io.BytesIO()
    np.save(buffer, np.array([_Payload(marker)], dtype=object), allow_pickle=True)
    return buffer.getvalue()


def _evil_whole_pickle(path, marker):
    path.write_bytes(pickle.dumps(_Payload(marker)))


def _evil_npy_file(path, marker):
    path.write_bytes(_payload_npy(marker))


def _model_bytes(path):
    """What save() writes, as bytes (written to ``path`` first, then overwritten)."""
    Network([6, 7, 5, 3], backend="numpy", seed=1).save(path)
    return path.read_bytes()


def _rebuilt(path, replace=None, extra=None):
    """The saved model at ``path`` with member ``name.npy`` -> bytes replaced or added."""
    good = _model_bytes(path)
    with zipfile.ZipFile(_io.BytesIO(good)) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, (replace or {}).get(info.filename, src.read(info)))
        for name, data in (extra or {}).items():
            dst.writestr(name, data)


def _evil_npz_member(name):
    return lambda path, marker: _rebuilt(path, replace={f"{name}.npy": _payload_npy(marker)})


def _evil_extra_member(path, marker):
    _rebuilt(path, extra={"zz_extra.npy": _payload_npy(marker)})


def _evil_pickle_inside_zip(path, marker):
    # A member that is a bare pickle, not an .npy: numpy must not fall back to unpickling it.
    _rebuilt(path, replace={"W0.npy": pickle.dumps(_Payload(marker))})


EVIL = {
    "whole-file-pickle": _evil_whole_pickle,
    "whole-file-object-npy": _evil_npy_file,
    "object-array-as-W0": _evil_npz_member("W0"),
    "object-array-as-header": _evil_npz_member("header"),
    "object-array-extra-member": _evil_extra_member,
    "pickle-as-npz-member": _evil_pickle_inside_zip,
}


def test_payload_is_live(tmp_path):
    """The payload really runs code when unpickled, so the tests below prove something."""
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(_Payload(marker)))
    assert marker.exists()
    marker.unlink()
    np.load(_io.BytesIO(_payload_npy(marker)), allow_pickle=True)
    assert marker.exists()


def test_rebuilt_model_loads(tmp_path):
    """The zip rewriting used below keeps a good model good: only the payload breaks it."""
    _rebuilt(tmp_path / "m.npz")
    assert Network.load(tmp_path / "m.npz", backend="numpy").layer_sizes == [6, 7, 5, 3]


@pytest.mark.parametrize("kind", list(EVIL))
def test_loading_never_executes_code(tmp_path, kind):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.npz"
    EVIL[kind](path, marker)
    with pytest.raises(ValueError, match=r"pickle|not a readable|single \.npy|holds arrays|"
                                         r"unexpected member"):
        Network.load(path, backend="numpy")
    assert not marker.exists()
    # Nor through the lower-level reader that other tools (CLI, server) use.
    with pytest.raises(ValueError):
        fio.read_header_and_arrays(path)
    assert not marker.exists()


# --- hardening: special files, killed saves, resource bombs, clear messages ---------------


def _fifo(path):
    os.mkfifo(path)
    return path


def _socket(path):
    import socket

    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()
    return path


@pytest.mark.parametrize("make, fragment", [(_fifo, "named pipe"), (_socket, "socket")],
                         ids=["fifo", "socket"])
def test_save_refuses_special_files(tmp_path, make, fragment):
    target = make(tmp_path / "target.npz")
    with pytest.raises(ValueError, match=fragment):
        trained().save(target)
    mode = os.lstat(target).st_mode
    assert not stat.S_ISREG(mode)  # still the special file, not replaced
    assert sorted(os.listdir(tmp_path)) == ["target.npz"]


def test_save_through_a_symlink_to_a_regular_file_is_fine(tmp_path):
    real = tmp_path / "real.npz"
    trained(sizes=(6, 7, 3)).save(real)
    link = tmp_path / "link.npz"
    link.symlink_to(real)
    new = trained(sizes=(6, 5, 4, 3))
    new.save(link)
    assert link.is_symlink() and os.readlink(link) == str(real), "the link was replaced"
    saved = Network.load(real, backend="numpy")  # the target holds the new model
    assert saved.layer_sizes == [6, 5, 4, 3]
    np.testing.assert_array_equal(saved._params, new._params)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.npz", "real.npz"]


def test_killed_save_leaves_a_temporary_file_that_the_next_save_removes(tmp_path):
    import subprocess

    # A process that exists no more (it ran and exited): its pid is free.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f".m.npz.{dead}.0123456789ab.tmp"
    stale.write_bytes(b"half a model")
    live = tmp_path / ".m.npz.1.0123456789ab.tmp"  # pid 1 is alive: not ours to delete
    live.write_bytes(b"someone else's")
    other = tmp_path / ".x.npz.99999999.0123456789ab.tmp"  # another target's
    other.write_bytes(b"")
    trained().save(tmp_path / "m.npz")
    assert sorted(os.listdir(tmp_path)) == sorted(["m.npz", live.name, other.name])


def _zip_members(path, members):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def _npy_bytes(array):
    buf = _io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _zero_bomb(n):
    """An .npy member claiming n float32 zeros: deflates to almost nothing."""
    return _npy_bytes(np.zeros(n // 4, dtype=np.float32))


BOMBS = {
    # a valid model plus a 64 MiB extra member (the issue: 2 GiB, same shape of attack)
    "extra-member": (lambda saved: {**_members(saved), "junk.npy": _zero_bomb(64 << 20)},
                     "unexpected member 'junk.npy'"),
    "huge-weight": (lambda saved: {**_members(saved), "W0.npy": _zero_bomb(64 << 20)},
                    "member 'W0.npy' claims"),
    "huge-header": (lambda saved: {**_members(saved),
                                   "header.npy": _zero_bomb(64 << 20)}, "member 'header.npy' claims"),
}


def _members(path):
    with zipfile.ZipFile(path) as z:
        return {name: z.read(name) for name in z.namelist()}


@pytest.mark.parametrize("make, fragment", list(BOMBS.values()), ids=list(BOMBS))
def test_zip_bombs_are_refused_from_the_directory(saved, tmp_path, monkeypatch, make, fragment):
    path, _ = saved
    bomb = _zip_members(tmp_path / "bomb.npz", make(path))
    assert bomb.stat().st_size < 1 << 20

    def no_decompressing(*args, **kwargs):
        raise AssertionError("np.load was called on a zip bomb")

    monkeypatch.setattr(fio.np, "load", no_decompressing)
    with pytest.raises(ValueError, match=fragment):
        Network.load(bomb, backend="numpy")


def _npy_claiming(shape, descr="<f4"):
    """The bytes of an .npy header claiming ``shape``, with no data after it."""
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape!r}, }}"
    header += " " * (117 - len(header)) + "\n"  # 10 + 118 bytes: numpy's 64-byte alignment
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode()


def _claim_size(path, member, size):
    """Make the zip directory (central and local headers) say ``member`` holds ``size``
    bytes uncompressed."""
    data = bytearray(path.read_bytes())
    name = member.encode()
    for signature, field in ((b"PK\x01\x02", 24), (b"PK\x03\x04", 22)):
        at = 0
        while (at := data.find(signature, at)) >= 0:
            name_at = at + (46 if signature == b"PK\x01\x02" else 30)
            if data[name_at:name_at + len(name)] == name:
                data[at + field:at + field + 4] = size.to_bytes(4, "little")
            at += 4
    path.write_bytes(bytes(data))


def _no_np_load(monkeypatch):
    def no_decompressing(*args, **kwargs):
        raise AssertionError("np.load was called: array data read before the checks")

    monkeypatch.setattr(fio.np, "load", no_decompressing)


@pytest.mark.parametrize("header, fragment", [
    ({"format": "fastmlp.network", "version": 1}, "missing layer_sizes"),  # names no layers
    ({"format": "fastmlp.network", "version": 1, "layers": "?"}, "missing layer_sizes"),
    (b"{not json", "unreadable header"),
], ids=["no-layers", "layers-garbage", "header-not-json"])
def test_header_without_layers_refuses_a_huge_member_unread(tmp_path, monkeypatch, header,
                                                            fragment):
    """A header that does not bound the arrays: the file is refused for its header, and no
    member's data is decompressed (the issue: a 4 MB file with a 4 GiB W0.npy took 37 s)."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path = _zip_members(tmp_path / "m.npz", {
        "header.npy": _npy_bytes(np.frombuffer(raw, np.uint8)),
        # 3.75 GiB of float32, claimed alike by its .npy header and the zip directory
        "W0.npy": _npy_claiming(((0xF0000000 - 128) // 4,)),
        "b0.npy": _npy_bytes(np.zeros(3, np.float32))})
    _claim_size(path, "W0.npy", 0xF0000000)
    assert zipfile.ZipFile(path).getinfo("W0.npy").file_size == 0xF0000000
    _no_np_load(monkeypatch)
    with pytest.raises(ValueError, match=fragment):
        Network.load(path, backend="numpy")


def test_npy_header_claiming_more_than_its_member_holds_is_refused_unread(saved, tmp_path,
                                                                          monkeypatch):
    """A valid header, but W0.npy's own header claims (10**6, 10**6) floats in a 128-byte
    member: refused from the .npy header, before numpy allocates the claimed shape."""
    path, _ = saved
    members = _members(path)
    members["W0.npy"] = _npy_claiming((10**6, 10**6))
    bad = _zip_members(tmp_path / "bad.npz", members)
    _no_np_load(monkeypatch)
    with pytest.raises(ValueError, match=r"member 'W0.npy' claims shape \(1000000, 1000000\)"
                                         r".*truncated or corrupt"):
        Network.load(bad, backend="numpy")


def test_read_header_reads_no_array(saved, monkeypatch):
    path, net = saved
    _no_np_load(monkeypatch)
    header = fio.read_header(path)
    assert header["layer_sizes"] == [6, 7, 5, 3]
    assert header["activations"] == list(net.activations)


def test_oversized_npy_header_is_not_called_a_pickle(saved, tmp_path):
    path, _ = saved
    members = _members(path)
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }"
    header = header + " " * (12000 - len(header)) + "\n"  # numpy reads at most 10000
    raw = b"\x93NUMPY\x02\x00" + len(header).to_bytes(4, "little") + header.encode()
    members["b1.npy"] = raw + np.zeros(3, np.float32).tobytes()
    bad = _zip_members(tmp_path / "bad.npz", members)
    with pytest.raises(ValueError, match="header is larger") as info:
        Network.load(bad, backend="numpy")
    assert "pickle" not in str(info.value)


def test_load_symlink_loop_and_folder_and_dangling_link(tmp_path):
    (tmp_path / "a.npz").symlink_to(tmp_path / "b.npz")
    (tmp_path / "b.npz").symlink_to(tmp_path / "a.npz")
    with pytest.raises(ValueError, match="symbolic link loop"):
        Network.load(tmp_path / "a.npz")
    (tmp_path / "dir.npz").mkdir()
    with pytest.raises(ValueError, match="is a folder"):
        Network.load(tmp_path / "dir.npz")
    (tmp_path / "dangling.npz").symlink_to(tmp_path / "gone.npz")
    with pytest.raises(FileNotFoundError, match="link to a file that does not exist"):
        Network.load(tmp_path / "dangling.npz")


def test_load_fifo_does_not_hang(tmp_path):
    fifo = _fifo(tmp_path / "pipe.npz")
    with pytest.raises(ValueError, match="not a regular file"):
        Network.load(fifo)
