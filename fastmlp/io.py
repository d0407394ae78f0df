"""Save and load networks: one ``.npz`` of arrays plus a JSON header, never pickle.

The header (format name and version, layer sizes, activations, cost, dtype, the training
History) is stored as UTF-8 bytes in a uint8 array, so ``np.load(allow_pickle=False)`` reads
everything and loading a file can never execute code. Files are written to a temporary name
in the target folder and renamed into place, so a crash leaves the old file or none.

Loading checks everything before it builds anything: the file must be a zip archive (a
pickle, a bare ``.npy`` or random bytes is refused before numpy parses it), the header must
be a JSON object of the current format, and every array must have the shape the header's
layer sizes call for and hold only finite floats. Bad files raise ValueError saying why; a
missing one raises FileNotFoundError. Nothing is decompressed before the zip directory (each
member's size), every member's own .npy header (its shape and dtype, which must fit in that
size) and the JSON header (whose layers give every array's exact shape) have been checked, so
a small file claiming a huge member costs nothing to refuse, whatever its header says.

Saving refuses a target that exists and is not a regular file (a FIFO, a device, a socket):
``os.replace`` would silently swap it for a regular file. Temporary files carry the writer's
process id; one left by a killed process is removed by the next save of the same file.
"""

import errno
import json
import math
import numbers
import os
import re
import secrets
import stat
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

FORMAT = "fastmlp.network"
VERSION = 1
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first local header / an empty zip
_NPY_MAGIC = b"\x93NUMPY"
_HISTORY_LISTS = ("loss", "accuracy", "val_loss", "val_accuracy", "seconds", "learning_rate")
MAX_HEADER_BYTES = 16 * 1024 * 1024  #: the JSON header member (a History of 10^5 epochs fits)
_NPY_OVERHEAD = 16384  # an .npy member's own header: numpy writes ~128 bytes, reads <= 10000


def _as_path(path, verb):
    if isinstance(path, (str, os.PathLike)) and str(os.fspath(path)):
        return Path(path)
    raise ValueError(f"cannot {verb}: path must be a file name (str or os.PathLike), got "
                     f"{path!r}")


def json_default(value):
    """``json.dumps(..., default=json_default)``: numpy scalars (which a callback or schedule
    may have put into a History) as Python numbers, paths as strings."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# A BatchNorm's arrays in a model file, bn<k>_<name>, in BatchNormParams.FIELDS' order.
_BN_ARRAYS = ("gamma", "beta", "mean", "var")


def save_network(net, path):
    from . import layers

    path = _as_path(path, "save")
    arrays = {}
    named = [(name, value) for k, (W, b) in enumerate(zip(net.weights, net.biases))
             for name, value in ((f"W{k}", W), (f"b{k}", b))]
    named += [(f"bn{k}_{short}", getattr(bn, field)) for k, bn in enumerate(net.batch_norms)
              for short, field in zip(_BN_ARRAYS, bn.FIELDS)]
    for name, value in named:
        if not np.isfinite(value).all():
            # load() refuses such a file, so refuse to write it in the first place.
            raise ValueError(f"cannot save to {path}: {name} contains NaN or infinite "
                             "values (did training diverge?)")
        arrays[name] = np.ascontiguousarray(value)
    header = {
        "format": FORMAT,
        "version": VERSION,
        "layer_sizes": [int(s) for s in net.layer_sizes],
        # a convolutional network's layers (the sizes above are then each layer's width)
        **({} if net.is_mlp else {"layers": layers.to_json(net.layers)}),
        "activations": list(net.activations),
        "cost": net.cost,
        "dtype": net.dtype.name,
        "history": net.history.to_dict(),
    }
    try:
        text = json.dumps(header, default=json_default)
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
    if path.is_symlink():
        # Write the link's target (the rename below would replace the link itself with a
        # regular file and leave the target holding the old contents).
        path = path.resolve()
    folder = path.parent
    if not folder.is_dir():
        raise ValueError(f"cannot save to {path}: folder {folder} does not exist")
    if path.is_dir():
        raise ValueError(f"cannot save to {path}: it is a folder")
    _check_target(path)
    _remove_stale_temporaries(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = folder / f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp"
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


def _check_target(path):
    """A save may create ``path`` or replace a regular file (or a link to one), nothing else;
    ValueError otherwise (``check_save_target``: the same check, for callers that want to
    fail before a long computation rather than at its end)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ValueError(f"cannot save to {path}: it is a symbolic link loop") from None
        raise ValueError(f"cannot save to {path}: {exc.strerror}") from None
    if stat.S_ISDIR(mode):
        raise ValueError(f"cannot save to {path}: it is a folder")
    if not stat.S_ISREG(mode):
        kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else
                "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else
                "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
        raise ValueError(f"cannot save to {path}: it is {kind}; saving would replace it with "
                         "a regular file. Choose a new file name or a regular file")


check_save_target = _check_target


def _remove_stale_temporaries(path):
    """Delete ``.<name>.<pid>.<hex>.tmp`` files beside ``path`` whose writer is gone (killed
    mid-save: SIGKILL runs no cleanup). Another live process's temporary file is kept."""
    pattern = re.compile(re.escape(f".{path.name}.") + r"(\d+)\.[0-9a-f]{12}\.tmp\Z")
    try:
        names = os.listdir(path.parent)
    except OSError:
        return
    for name in names:
        match = pattern.match(name)
        if match is None or _process_alive(int(match.group(1))):
            continue
        try:
            os.unlink(path.parent / name)
        except OSError:
            pass


def _process_alive(pid):
    if pid == os.getpid():
        return False  # ours, from an earlier save that this process no longer runs
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, OverflowError):
        return True  # exists (another user's), or we cannot tell: keep its file
    return True


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
                UnicodeDecodeError, IndexError, AttributeError, zlib.error, struct.error)


def _zip_directory(path, what):
    """The archive's members as its central directory lists them (nothing decompressed)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.infolist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
        raise ValueError(f"{path} is not a readable {what} (truncated or corrupt?): "
                         f"{type(exc).__name__}: {exc}") from None


def _member_name(info):
    return info.filename[:-4] if info.filename.endswith(".npy") else info.filename


def check_zip_members(path, limits, what="fastmlp model"):
    """Refuse an .npz whose zip directory lists an unexpected member or one larger than its
    limit, before anything is decompressed. ``limits`` maps member names (without ``.npy``)
    to their largest allowed uncompressed size in bytes, or is a callable ``name -> bytes or
    None`` (None: the member is not expected). Returns the directory's entries."""
    get = limits if callable(limits) else limits.get
    infos = _zip_directory(path, what)
    for info in infos:
        limit = get(_member_name(info))
        if limit is None:
            raise ValueError(f"{path} is not a {what}: unexpected member {info.filename!r}")
        if info.file_size > limit:
            raise ValueError(f"{path} is not a {what}: member {info.filename!r} claims "
                             f"{info.file_size} bytes uncompressed, at most {limit} expected")
    return infos


def _npy_preamble(archive, info):
    """``(shape, dtype, data offset)`` of one .npy member, from its own header alone: a few
    hundred bytes decompressed (numpy refuses headers over 10,000 bytes)."""
    fmt = np.lib.format
    with archive.open(info) as f:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = fmt.read_array_header_2_0(f)
        else:
            raise ValueError(f".npy format version {version[0]}.{version[1]} is not one "
                             "numpy writes for numbers")
        try:
            offset = f.tell()
        except (OSError, AttributeError):  # pragma: no cover - an unseekable archive
            offset = 0
    return tuple(shape), dtype, offset


def scan_npy_members(path, infos, what="fastmlp model"):
    """``{name: (shape, dtype)}`` of every member in ``infos`` (from :func:`check_zip_members`),
    read from each member's own .npy header, before any array data is decompressed.

    ValueError for a member that is not an .npy array, one of Python objects (loading it
    would unpickle), one whose header is larger than numpy reads safely, and one whose shape
    needs more bytes than the zip directory says it holds (numpy would allocate the claimed
    shape before finding the data missing)."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
        raise ValueError(f"{path} is not a readable {what} (truncated or corrupt?): "
                         f"{type(exc).__name__}: {exc}") from None
    members = {}
    with archive:
        for info in infos:
            name = _member_name(info)
            if not info.filename.endswith(".npy"):
                raise ValueError(f"{path} is not a readable {what}: member {name!r} is not a "
                                 "numpy array")
            try:
                shape, dtype, offset = _npy_preamble(archive, info)
            except ValueError as exc:
                text = str(exc)
                if "max_header_size" in text or "Header info length" in text:
                    raise ValueError(f"{path} is not a readable {what}: an array's .npy header "
                                     "is larger than numpy reads safely (corrupt or hostile "
                                     "file)") from None
                raise ValueError(f"{path} is not a readable {what}: member {info.filename!r} "
                                 f"is not an .npy array ({text})") from None
            except _READ_ERRORS as exc:
                raise ValueError(f"{path} is not a readable {what} (truncated or corrupt?): "
                                 f"{type(exc).__name__}: {exc}") from None
            if dtype.hasobject:
                raise ValueError(f"{path} holds pickled Python objects; fastmlp never loads "
                                 "pickles (unpickling can run arbitrary code)")
            count = 1
            for n in shape:
                count *= n
            need = offset + count * dtype.itemsize
            if min(shape, default=0) < 0 or need > info.file_size:
                raise ValueError(f"{path} is not a readable {what}: member {info.filename!r} "
                                 f"claims shape {shape} of {dtype} ({need:,} bytes) but holds "
                                 f"{info.file_size:,} bytes: truncated or corrupt")
            members[name] = (shape, dtype)
    return members


def _model_member_limit(name):
    """Before the header is read: the header is bounded; W<k>/b<k> by the largest network a
    header could describe is not knowable yet, so they are checked again after it."""
    if name == "header":
        return MAX_HEADER_BYTES + _NPY_OVERHEAD
    if re.fullmatch(r"[Wb](0|[1-9][0-9]{0,5})", name) or re.fullmatch(
            r"bn(0|[1-9][0-9]{0,5})_(gamma|beta|mean|var)", name):
        return 1 << 62
    return None


def read_npz(path, limits, what="fastmlp model"):
    """``{name: array}`` for every array in the .npz at ``path``, with allow_pickle=False,
    once the zip directory (:func:`check_zip_members`, ``limits``) and every member's .npy
    header (:func:`scan_npy_members`) have been checked: a damaged or hostile file is
    refused before any array data is decompressed."""
    infos = check_zip_members(path, limits, what)
    scan_npy_members(path, infos, what)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except ValueError as exc:
        if "pickle" in str(exc):
            raise ValueError(f"{path} holds pickled Python objects; fastmlp never loads "
                             "pickles (unpickling can run arbitrary code)") from None
        raise ValueError(f"{path} is not a readable {what}: {exc}") from None
    except _READ_ERRORS as exc:
        raise ValueError(f"{path} is not a readable {what} (truncated or corrupt?): "
                         f"{type(exc).__name__}: {exc}") from None
    for name, value in arrays.items():
        # NpzFile hands back the raw bytes of any member that is not an .npy array.
        if not isinstance(value, np.ndarray):
            raise ValueError(f"{path} is not a readable {what}: member {name!r} is not a "
                             "numpy array")
    return arrays


def _read_header(path):
    """``(header dict, {member: (shape, dtype)})`` of a saved network: its zip directory,
    every member's .npy header and the (bounded) JSON header member -- no array data."""
    path = _as_path(path, "load")
    check_readable_file(path, "model file")
    _check_magic(path)
    infos = _zip_directory(path, "fastmlp model")
    if "header.npy" not in [info.filename for info in infos]:
        raise ValueError(f"{path} is not a fastmlp model: it has no header")
    check_zip_members(path, _model_member_limit)
    members = scan_npy_members(path, infos)
    shape, dtype = members["header"]
    try:
        if dtype != np.uint8 or len(shape) != 1:
            raise ValueError(f"header is a {dtype} array of shape {shape}, not bytes")
        try:
            with zipfile.ZipFile(path) as archive, archive.open("header.npy") as f:
                # at most MAX_HEADER_BYTES: check_zip_members bounded the member's size
                raw = np.lib.format.read_array(f, allow_pickle=False)
        except _READ_ERRORS as exc:
            raise OSError(f"{path} is not a readable fastmlp model (truncated or corrupt?): "
                          f"{type(exc).__name__}: {exc}") from None
        header = json.loads(raw.tobytes().decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except OSError as exc:
        raise ValueError(str(exc)) from None
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(f"{path} is not a fastmlp model: unreadable header ({exc})") from None
    if header.get("format") != FORMAT:
        raise ValueError(f"{path} is not a fastmlp model (format {header.get('format')!r})")
    version = header.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version != VERSION:
        raise ValueError(f"{path} has model format version {version!r}; this fastmlp reads "
                         f"version {VERSION}")
    return header, members


def read_header(path):
    """The JSON header of a saved network (layers, activations, History...), checked as
    :func:`read_header_and_arrays` checks it, without reading any array: for listing
    models. ValueError saying what is wrong; FileNotFoundError for a missing file."""
    header, _ = _read_header(path)
    _header_fields(path, header)
    return header


def read_header_and_arrays(path):
    """``(header dict, {name: array})`` from a saved network, or ValueError saying why not.

    Everything is checked before any array is decompressed: the zip directory, each
    member's .npy header, then the JSON header, whose layers give every array's exact shape
    (a header that does not describe a network is refused there and then, whatever sizes
    the other members claim)."""
    path = _as_path(path, "load")
    header, members = _read_header(path)
    _header_fields(path, header)
    expected = _expected_arrays(path, header)
    present = sorted(name for name in members if name != "header")
    if present != sorted(expected):
        raise ValueError(f"{path} holds arrays {present}; its layers need {sorted(expected)}")
    limits = {"header": MAX_HEADER_BYTES + _NPY_OVERHEAD}
    for name, shape in expected.items():
        # float64 is the widest dtype load accepts
        limits[name] = 8 * math.prod(shape) + _NPY_OVERHEAD
    check_zip_members(path, limits.get)
    for name, shape in expected.items():
        got, dtype = members[name]
        if got != shape or dtype.kind != "f":
            raise ValueError(f"{path}: array {name} has shape {got} and dtype {dtype}; "
                             f"expected shape {shape} of floats")
    arrays = read_npz(path, limits.get)
    arrays.pop("header")
    return header, arrays


def check_readable_file(path, what="file"):
    """FileNotFoundError if ``path`` does not exist, ValueError if it is a folder, a symlink
    loop, a FIFO or a device (reading a FIFO would wait forever), else nothing."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            raise FileNotFoundError(f"{what} {path} is a symbolic link to a file that does not "
                                    "exist") from None
        raise FileNotFoundError(f"{what} {path} does not exist") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ValueError(f"{what} {path} is a symbolic link loop") from None
        raise ValueError(f"cannot read {what} {path}: {exc.strerror}") from None
    if stat.S_ISDIR(mode):
        raise ValueError(f"{what} {path} is a folder, not a file")
    if not stat.S_ISREG(mode):
        raise ValueError(f"{what} {path} is not a regular file (a pipe, device or socket)")


def _expected_arrays(path, header):
    """``{"W0": shape, "b0": shape, ...}`` that a header's layers need (ValueError if the
    layers themselves are invalid): ``layers`` for a convolutional network, else
    ``layer_sizes``."""
    from . import layers

    if "layers" in header:
        try:
            plan = layers.plan(layers.from_json(header["layers"]))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path} has an invalid header: layers: {exc}") from None
        weighted = [layer for layer in plan if layer.has_weights]
        expected = {}
        for k, layer in enumerate(weighted):
            expected[f"W{k}"], expected[f"b{k}"] = layer.weight_shape, (layer.out_shape[0],)
        norms = [layer for layer in plan if layer.kind == "batchnorm"]
        for k, layer in enumerate(norms):
            for short in _BN_ARRAYS:
                expected[f"bn{k}_{short}"] = (layer.out_shape[0],)
        return expected
    sizes = header["layer_sizes"]
    if (not isinstance(sizes, list) or len(sizes) < 2 or len(sizes) > 10**6
            or not all(type(n) is int and n >= 1 for n in sizes)):
        raise ValueError(f"{path} has an invalid header: layer_sizes {sizes!r} is not a list "
                         "of at least two positive integers")
    return {name: shape for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]))
            for name, shape in ((f"W{k}", (n_out, n_in)), (f"b{k}", (n_out,)))}


MAX_STEP = 2**53  #: the largest update count a training state may hold (exact as a float)


def _shown(value):
    return f"a {type(value).__name__}" if not isinstance(value, numbers.Number) else repr(value)


def check_training_state(state, n_params, dtype="float32"):
    """Raise ValueError naming the first thing wrong with a ``Network.training_state()``
    dict (from a checkpoint, perhaps damaged or hand-edited), before any of it is applied.

    ``n_params`` is the length of the network's flat parameter vector: every optimizer
    array and early stopping's best parameters must be 1-D of that length, finite, and
    convertible to ``dtype``. Scalars must be the plain types ``training_state`` writes.
    With an optimizer, its state must hold what the compiled loop reads: ``state1``,
    ``state2`` (Adam's: no negative value) and ``step``, an integer in 0 .. 2**53.
    """
    from ._checks import OPTIMIZERS

    def fail(what):
        raise ValueError(f"invalid training state: {what}")

    def is_int(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))

    def check_params(name, v):
        if not isinstance(v, np.ndarray) or v.dtype.kind not in "fiu":
            fail(f"{name} is {type(v).__name__}, not an array of numbers")
        if v.shape != (n_params,):
            fail(f"{name} has shape {v.shape}; the network has {n_params} parameters")
        with np.errstate(over="ignore", invalid="ignore"):
            if not np.isfinite(v.astype(dtype, copy=False)).all():
                fail(f"{name} contains NaN or infinite values (as {np.dtype(dtype).name})")

    if not isinstance(state, dict):
        fail(f"a {type(state).__name__}, not a dict")
    for key in ("optimizer", "state", "rng", "dropout_key"):
        if key not in state:
            fail(f"no {key!r}")
    name = state["optimizer"]
    if name is not None and (not isinstance(name, str) or name not in OPTIMIZERS):
        fail(f"optimizer {name!r} is not one of {', '.join(OPTIMIZERS)}")
    values = state["state"]
    if not isinstance(values, dict):
        fail(f"'state' is a {type(values).__name__}, not a dict")
    if name is not None:
        # what the compiled loop reads: velocity / first moment, second moment, updates made
        missing = [k for k in ("state1", "state2", "step") if k not in values]
        if missing:
            fail(f"the {name} optimizer's state has no {' or '.join(map(repr, missing))}")
    for key, v in values.items():
        if not isinstance(key, str):
            fail(f"optimizer state key {key!r} is not a string")
        if key == "step" and not is_int(v):
            fail(f"optimizer state 'step' is {_shown(v)}, not an integer count")
        if isinstance(v, np.ndarray):
            check_params(f"optimizer state {key!r}", v)
        elif is_int(v):
            if v < 0:
                fail(f"optimizer state {key!r} is {v}, a negative count")
            if v > MAX_STEP:
                fail(f"optimizer state {key!r} is {v}, more than 2**53")
        elif isinstance(v, (float, np.floating)):
            if not math.isfinite(v):
                fail(f"optimizer state {key!r} is {v}")
        else:
            fail(f"optimizer state {key!r} is a {type(v).__name__}, not an array or number")
    if name == "adam" and isinstance(values.get("state2"), np.ndarray):
        with np.errstate(invalid="ignore"):
            if (values["state2"] < 0).any():
                fail("optimizer state 'state2' (Adam's running mean of squared gradients) has "
                     "negative values")
    rng = state["rng"]
    if not isinstance(rng, dict) or rng.get("bit_generator") != "PCG64":
        fail("'rng' is not the state of numpy's PCG64 generator")
    inner = rng.get("state")
    if (not isinstance(inner, dict) or set(inner) != {"state", "inc"}
            or not all(is_int(v) and 0 <= v < 2**128 for v in inner.values())):
        fail("'rng' state must hold integers 'state' and 'inc' in 0 .. 2**128-1")
    if rng.get("has_uint32") not in (0, 1) or isinstance(rng.get("has_uint32"), bool):
        fail("'rng' has_uint32 must be 0 or 1")
    if not is_int(rng.get("uinteger")) or not 0 <= rng["uinteger"] < 2**32:
        fail("'rng' uinteger must be an integer in 0 .. 2**32-1")
    key = state["dropout_key"]
    if not is_int(key) or not 0 <= key < 2**63:
        fail(f"dropout_key {key!r} is not an integer in 0 .. 2**63-1")
    best = state.get("early_stopping")
    if best is not None:
        if not isinstance(best, dict) or not {"best_loss", "since_best", "best_params"} <= set(best):
            fail("'early_stopping' must be None or a dict with best_loss, since_best and "
                 "best_params")
        loss = best["best_loss"]
        if (not isinstance(loss, (int, float, np.number)) or isinstance(loss, bool)
                or math.isnan(loss)):
            fail(f"early stopping's best_loss {loss!r} is not a number")
        if not is_int(best["since_best"]) or not 0 <= best["since_best"] <= MAX_STEP:
            fail(f"early stopping's since_best {best['since_best']!r} is not a count")
        if best["best_params"] is not None:
            check_params("early stopping's best parameters", best["best_params"])


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
    from .history import History

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
    from . import layers

    backend = check.choice("backend", backend, check.BACKENDS)  # the caller's mistake
    header, arrays = read_header_and_arrays(path)
    sizes, activations, cost, dtype = _header_fields(path, header)
    # Shapes and values first, so a lying header never makes us allocate a huge network.
    expected = _expected_arrays(path, header)
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
    spec = layers.from_json(header["layers"]) if "layers" in header else sizes
    try:
        net = cls(spec, activations, cost, backend=backend, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path} has an invalid header: {exc}") from None
    for k in range(len(net.weights)):
        net.weights[k][...] = values[f"W{k}"]
        net.biases[k][...] = values[f"b{k}"]
    for k, bn in enumerate(net.batch_norms):
        for short, field in zip(_BN_ARRAYS, bn.FIELDS):
            if short == "var" and (values[f"bn{k}_var"] < 0).any():
                raise ValueError(f"{path}: array bn{k}_var (a running variance) holds "
                                 "negative values")
            setattr(bn, field, values[f"bn{k}_{short}"])
    net.history = history
    return net
