"""Save and load networks: one ``.npz`` of arrays plus a JSON header, never pickle.

The header (format name and version, layer sizes, activations, cost, dtype, the training
History) is stored as UTF-8 bytes in a uint8 array, so ``np.load(allow_pickle=False)`` reads
everything and loading a file can never execute code. Files are written to a temporary name
in the target folder and renamed into place, so a crash leaves the old file or none.
"""

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

FORMAT = "fastmlp.network"
VERSION = 1


def save_network(net, path):
    path = Path(path)
    header = {
        "format": FORMAT,
        "version": VERSION,
        "layer_sizes": net.layer_sizes,
        "activations": net.activations,
        "cost": net.cost,
        "dtype": net.dtype.name,
        "history": net.history.to_dict(),
    }
    arrays = {"header": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)}
    for k, (W, b) in enumerate(zip(net.weights, net.biases)):
        arrays[f"W{k}"] = np.ascontiguousarray(W)
        arrays[f"b{k}"] = b
    atomic_write(path, lambda f: np.savez(f, **arrays))
    return path


def atomic_write(path, write):
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ValueError(f"cannot save to {path}: folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_header_and_arrays(path):
    """``(header dict, {name: array})`` from a saved network, or ValueError saying why not."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"model file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except ValueError as exc:
        if "pickle" in str(exc):
            raise ValueError(f"{path} holds pickled data; fastmlp never loads pickles") from None
        raise ValueError(f"{path} is not a readable fastmlp model: {exc}") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise ValueError(f"{path} is not a readable fastmlp model (truncated or corrupt?): "
                         f"{exc}") from None
    if not isinstance(arrays, dict) or "header" not in arrays:
        raise ValueError(f"{path} is not a fastmlp model: it has no header")
    raw = arrays.pop("header")
    try:
        if raw.dtype != np.uint8 or raw.ndim != 1:
            raise ValueError("header has the wrong type")
        header = json.loads(raw.tobytes().decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not a fastmlp model: unreadable header ({exc})") from None
    if header.get("format") != FORMAT:
        raise ValueError(f"{path} is not a fastmlp model (format {header.get('format')!r})")
    if header.get("version") != VERSION:
        raise ValueError(f"{path} has model format version {header.get('version')!r}; this "
                         f"fastmlp reads version {VERSION}")
    return header, arrays


def load_network(cls, path, backend="numba"):
    from .network import History

    header, arrays = read_header_and_arrays(path)
    try:
        net = cls(header["layer_sizes"], header["activations"], header["cost"], backend=backend,
                  dtype=header["dtype"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path} has an invalid header: {exc}") from None
    n_layers = len(net.layer_sizes) - 1
    expected = {f"W{k}" for k in range(n_layers)} | {f"b{k}" for k in range(n_layers)}
    if set(arrays) != expected:
        raise ValueError(f"{path} holds arrays {sorted(arrays)}; expected {sorted(expected)}")
    for k in range(n_layers):
        for name, target in ((f"W{k}", net.weights[k]), (f"b{k}", net.biases[k])):
            value = arrays[name]
            if value.shape != target.shape or value.dtype.kind != "f":
                raise ValueError(f"{path}: array {name} has shape {value.shape} and dtype "
                                 f"{value.dtype}; expected {target.shape} floats")
            if not np.isfinite(value).all():
                raise ValueError(f"{path}: array {name} contains NaN or infinite values")
            target[...] = value
    try:
        net.history = History.from_dict(header.get("history") or {})
    except TypeError as exc:
        raise ValueError(f"{path} has an invalid history: {exc}") from None
    return net
