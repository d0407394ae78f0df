"""Save and load networks: one ``.npz`` of arrays plus a JSON header, never pickle.

The header (format name and version, layer sizes, activations, cost, dtype, the training
History) is stored as UTF-8 bytes in a uint8 array, so ``np.load(allow_pickle=False)`` reads
everything and loading a file can never execute code. Files are written to a temporary name
in the target folder and renamed into place, so a crash leaves the old file or none.

Loading checks everything before it builds anything: the file must be a zip archive (a
pickle, a bare ``.npy`` or random bytes is refused before numpy parses it), the header must
be a JSON object of the current format, and every array must have the shape the header's
layer sizes call for and hold only finite floats. Bad files raise ValueError saying why.
"""

import json
import numbers
import os
import secrets
import stat
import zipfile
from pathlib import Path

import numpy as np

FORMAT = "fastmlp.network"
VERSION = 1
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first local header / an empty zip
_NPY_MAGIC = b"\x93NUMPY"
_HISTORY_LISTS = ("loss", "accuracy", "val_loss", "val_accuracy", "seconds", "learning_rate")


def _as_path(path, verb):
    if isinstance(path, (str, os.PathLike)) and str(os.fspath(path)):
        return Path(path)
    raise ValueError(f"cannot {verb}: path must be a file name (str or os.PathLike), got "
                     f"{path!r}")


def _json_default(value):
    # numpy scalars that a callback or schedule may have put into the History.
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def save_network(net, path):
    path = _as_path(path, "save")
    arrays = {}
    for k, (W, b) in enumerate(zip(net.weights, net.biases)):
        for name, value in ((f"W{k}", W), (f"b{k}", b)):
            if not np.isfinite(value).all():
                # load() refuses such a file, so refuse to write it in the first place.
                raise ValueError(f"cannot save to {path}: {name} contains NaN or infinite "
                                 "values (did training diverge?)")
            arrays[name] = np.ascontiguousarray(value)
    header = {
        "format": FORMAT,
        "version": VERSION,
        "layer_sizes": [int(s) for s in net.layer_sizes],
        "activations": list(net.activations),
        "cost": net.cost,
        "dtype": net.dtype.name,
        "history": net.history.to_dict(),
    }
    try:
        text = json.dumps(header, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cannot save to {path}: the history is not plain numbers ({exc})"
                         ) from None
    arrays = {"header": np.frombuffer(text.encode("utf-8"), dtype=np.uint8), **arrays}
    atomic_write(path, lambda f: np.savez(f, **arrays))
    return path


def atomic_write(path, write):
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it into place.

    On any error (or Ctrl-C) the temporary file is removed and ``path`` is left as it was. A
    new file gets the usual permissions (0o666 less the umask); a replaced one keeps its mode.
    """
    path = _as_path(path, "save")
    folder = path.parent
    if not folder.is_dir():
        raise ValueError(f"cannot save to {path}: folder {folder} does not exist")
    if path.is_dir():
        raise ValueError(f"cannot save to {path}: it is a folder")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = folder / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            # os.open applies the umask to 0o666, as open() would; mkstemp would give 0o600.
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - 100 collisions of 48 random bits
        raise FileExistsError(f"cannot create a temporary file in {folder}")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
        except OSError:
            pass  # no old file (or a file system without modes): keep the umask's mode
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(folder)


def _fsync_folder(folder):
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _check_magic(path):
    """Refuse anything that is not a zip archive before numpy looks at it."""
    try:
        with open(path, "rb") as f:
            start = f.read(8)
    except OSError as exc:
        raise ValueError(f"cannot read model file {path}: {exc}") from None
    if not start:
        raise ValueError(f"{path} is empty; it is not a fastmlp model")
    if start[:4] in _ZIP_MAGIC:
        return
    if start.startswith(_NPY_MAGIC):
        raise ValueError(f"{path} is a single .npy array, not a fastmlp model (.npz archive)")
    if start[:1] == b"\x80":
        raise ValueError(f"{path} looks like a Python pickle; fastmlp never loads pickles "
                         "(unpickling can run arbitrary code)")
    raise ValueError(f"{path} is not a fastmlp model: not an .npz (zip) archive")


# Everything numpy and zipfile raise on a corrupt archive or a malformed .npy member.
_READ_ERRORS = (OSError, EOFError, zipfile.BadZipFile, KeyError, ValueError, TypeError,
                SyntaxError, NotImplementedError, RuntimeError, OverflowError, MemoryError,
                UnicodeDecodeError, IndexError, AttributeError)


def _read_archive(path):
    """``{name: array}`` for every array in the .npz at ``path``, with allow_pickle=False."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except ValueError as exc:
        if "pickle" in str(exc):
            raise ValueError(f"{path} holds pickled Python objects; fastmlp never loads "
                             "pickles (unpickling can run arbitrary code)") from None
        raise ValueError(f"{path} is not a readable fastmlp model: {exc}") from None
    except _READ_ERRORS as exc:
        raise ValueError(f"{path} is not a readable fastmlp model (truncated or corrupt?): "
                         f"{type(exc).__name__}: {exc}") from None
    for name, value in arrays.items():
        # NpzFile hands back the raw bytes of any member that is not an .npy array.
        if not isinstance(value, np.ndarray):
            raise ValueError(f"{path} is not a readable fastmlp model: member {name!r} is not "
                             "a numpy array")
    return arrays


def read_header_and_arrays(path):
    """``(header dict, {name: array})`` from a saved network, or ValueError saying why not."""
    path = _as_path(path, "load")
    if not path.exists():
        raise ValueError(f"model file {path} does not exist")
    if not path.is_file():
        raise ValueError(f"model file {path} is not a regular file")
    _check_magic(path)
    arrays = _read_archive(path)
    if "header" not in arrays:
        raise ValueError(f"{path} is not a fastmlp model: it has no header")
    raw = arrays.pop("header")
    try:
        if raw.dtype != np.uint8 or raw.ndim != 1:
            raise ValueError(f"header is a {raw.dtype} array of shape {raw.shape}, not bytes")
        header = json.loads(raw.tobytes().decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(f"{path} is not a fastmlp model: unreadable header ({exc})") from None
    if header.get("format") != FORMAT:
        raise ValueError(f"{path} is not a fastmlp model (format {header.get('format')!r})")
    version = header.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version != VERSION:
        raise ValueError(f"{path} has model format version {version!r}; this fastmlp reads "
                         f"version {VERSION}")
    return header, arrays


def _header_fields(path, header):
    """layer_sizes, activations, cost, dtype from a header, type-checked (names are checked
    by the Network constructor)."""
    from ._checks import DTYPES

    missing = [k for k in ("layer_sizes", "activations", "cost", "dtype") if k not in header]
    if missing:
        raise ValueError(f"{path} has an invalid header: missing {', '.join(missing)}")
    sizes, activations = header["layer_sizes"], header["activations"]
    if (not isinstance(sizes, list) or len(sizes) < 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1
                       for s in sizes)):
        raise ValueError(f"{path} has an invalid header: layer_sizes {sizes!r} is not a list "
                         "of at least two positive integers")
    if not isinstance(activations, list) or not all(isinstance(a, str) for a in activations):
        raise ValueError(f"{path} has an invalid header: activations {activations!r} is not a "
                         "list of names")
    dtype = header["dtype"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise ValueError(f"{path} has an invalid header: dtype {dtype!r} is not one of "
                         f"{', '.join(DTYPES)}")
    return sizes, activations, header["cost"], dtype


def _history(path, data):
    from .network import History

    if data is None:
        return History()
    if not isinstance(data, dict):
        raise ValueError(f"{path} has an invalid history: {type(data).__name__}, not an object")
    for key in _HISTORY_LISTS:
        values = data.get(key, [])
        if not isinstance(values, list) or not all(
                isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
            raise ValueError(f"{path} has an invalid history: {key} is not a list of numbers")
    best = data.get("best_epoch")
    if best is not None and (isinstance(best, bool) or not isinstance(best, int)):
        raise ValueError(f"{path} has an invalid history: best_epoch {best!r} is not an "
                         "integer")
    return History.from_dict({k: (list(v) if isinstance(v, list) else v)
                              for k, v in data.items()})


def load_network(cls, path, backend="numba"):
    from . import _checks as check
    from .network import BACKENDS

    backend = check.choice("backend", backend, BACKENDS)  # the caller's mistake, not the file's
    header, arrays = read_header_and_arrays(path)
    sizes, activations, cost, dtype = _header_fields(path, header)
    # Shapes and values first, so a lying header never makes us allocate a huge network.
    expected = {}
    for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        expected[f"W{k}"], expected[f"b{k}"] = (n_out, n_in), (n_out,)
    if set(arrays) != set(expected):
        raise ValueError(f"{path} holds arrays {sorted(arrays)}; layer sizes {sizes} need "
                         f"{sorted(expected)}")
    values = {}
    for name, shape in expected.items():
        value = arrays[name]
        if value.shape != shape or value.dtype.kind != "f":
            raise ValueError(f"{path}: array {name} has shape {value.shape} and dtype "
                             f"{value.dtype}; expected shape {shape} of floats")
        with np.errstate(over="ignore", invalid="ignore"):
            value = value.astype(dtype, copy=False)
        if not np.isfinite(value).all():
            raise ValueError(f"{path}: array {name} contains NaN or infinite values (as "
                             f"{dtype})")
        values[name] = value
    history = _history(path, header.get("history"))
    try:
        net = cls(sizes, activations, cost, backend=backend, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path} has an invalid header: {exc}") from None
    for k in range(len(sizes) - 1):
        net.weights[k][...] = values[f"W{k}"]
        net.biases[k][...] = values[f"b{k}"]
    net.history = history
    return net
