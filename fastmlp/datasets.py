"""Datasets: an IDX reader; MNIST, Fashion-MNIST and Quick, Draw! loaders; download + verify + cache.

Only numpy and the standard library are imported here.

Where the files live (``resolve_data_dir``): the ``data_dir`` argument, else the ``FASTMLP_DATA``
environment variable, else the user cache folder (``$XDG_CACHE_HOME/fastmlp`` or
``~/.cache/fastmlp``; ``~/Library/Caches/fastmlp`` on macOS; ``%LOCALAPPDATA%\\fastmlp`` on
Windows). Inside it::

    mnist/            train-images-idx3-ubyte[.gz]  train-labels-idx1-ubyte[.gz]
    fashion-mnist/    t10k-images-idx3-ubyte[.gz]   t10k-labels-idx1-ubyte[.gz]
    quickdraw/        <category>.npy

Missing MNIST / Fashion-MNIST files are downloaded from the mirrors in ``MIRRORS`` (tried in
order). A download is accepted only if the MD5 of its *decompressed* content matches
``CHECKSUMS``; it is written to a temporary file in the destination folder and moved into place
with ``os.replace``, so a failed or corrupt download never leaves a file behind. Files already
present are checked by their header and size on every load (cheap) and by MD5 only with
``verify=True`` (reading 47 MB to hash it on every load would be slow).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path

import numpy as np

__all__ = [
    "DatasetNotFoundError",
    "DATASETS",
    "IDX_FILES",
    "CHECKSUMS",
    "MIRRORS",
    "read_idx",
    "resolve_data_dir",
    "load_mnist",
    "load_fashion_mnist",
    "load_quickdraw",
    "load_dataset",
    "dataset_status",
]


class DatasetNotFoundError(ValueError):
    """The files of a dataset are not on disk and could not be downloaded."""


DATASETS = ("mnist", "fashion-mnist", "quickdraw")

#: The four standard IDX files, without ``.gz``.
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

#: MD5 of the *decompressed* files (a re-compressed .gz differs byte-wise, its content does not).
#: Fashion-MNIST's README publishes the MD5s of its .gz files (train-images 8d4fb7e6...,
#: train-labels 25c81989..., t10k-images bef4ecab..., t10k-labels bb300cfd...); the values
#: below are of the decompressed content, which is what a re-compressed copy (Debian's) keeps.
CHECKSUMS = {
    "mnist": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}

#: Number of (train, test) images each IDX dataset must have; images are 28x28.
SPLIT_SIZES = {"mnist": (60000, 10000), "fashion-mnist": (60000, 10000)}
IMAGE_SHAPE = (28, 28)
N_CLASSES = 10

#: Base URLs tried in order; ``<base><file>.gz`` (IDX) or ``<base><category>.npy`` (Quick, Draw!).
MIRRORS = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ],
    "fashion-mnist": [
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        # Keras's copy: the same four .gz files under the same names.
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
    ],
    "quickdraw": [
        "https://storage.googleapis.com/quickdraw_dataset/full/numpy_bitmap/",
    ],
}

#: Read-only system folders searched when a file is not in the data dir (Debian's
#: ``dataset-fashion-mnist`` package installs the four .gz files here).
SYSTEM_DIRS = {"fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")]}

#: Seconds without progress before a download attempt gives up and tries the next mirror.
TIMEOUT = 30.0
#: Seconds one file's download may take in all, however steadily it trickles.
DOWNLOAD_DEADLINE = 600.0
#: gzip cannot expand data more than ~1032 times; an IDX header claiming more is a lie.
_GZIP_MAX_RATIO = 1100

_CHUNK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_TITLES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "quickdraw": "Quick, Draw!"}

# IDX type codes (third byte of the magic number) -> big-endian numpy dtype.
_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


# ----------------------------------------------------------------------------------------- IDX


def _read_maybe_gzip(path: Path, max_bytes=None) -> bytes:
    """The file's content, decompressed if gzipped. The IDX header is read first and at most
    the size it announces plus one byte is decompressed, so a small gzip that inflates to
    gigabytes (or a header claiming an absurd size) is refused without using the memory."""
    with open(path, "rb") as f:
        gz = f.read(2) == _GZIP_MAGIC
    size = path.stat().st_size
    try:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
            head = f.read(4)
            if len(head) < 4 or head[0] or head[1] or head[2] not in _IDX_DTYPES or not head[3]:
                return head + f.read(1 << 16)  # not IDX: read_idx says why from the start
            dims = f.read(4 * head[3])
            if len(dims) < 4 * head[3]:
                return head + dims
            count = 1
            for d in np.frombuffer(dims, dtype=">u4"):
                count *= int(d)
            expected = count * _IDX_DTYPES[head[2]].itemsize
            limit = _GZIP_MAX_RATIO * size if gz else size
            if max_bytes is not None:
                limit = min(limit, max_bytes)
            if expected > limit:
                raise ValueError(
                    f"{path}: IDX header claims {expected:,} bytes of data (dimensions "
                    f"{tuple(int(d) for d in np.frombuffer(dims, dtype='>u4'))}), more than "
                    f"this {'gzip ' if gz else ''}file can hold or than expected"
                    + (f" ({max_bytes:,} bytes)" if max_bytes is not None else ""))
            return head + dims + f.read(expected + 1)  # one more byte shows trailing data
    except EOFError as e:
        raise ValueError(f"{path}: truncated gzip data ({e})") from None
    except (gzip.BadGzipFile, zlib.error) as e:
        raise ValueError(f"{path}: corrupt gzip data ({e})") from None


def read_idx(path, max_bytes=None) -> np.ndarray:
    """Read an IDX file (gzipped or raw; detected from its content) into a numpy array.

    Validates the magic number (two zero bytes, a known type code, 1 or more dimensions), the
    header length, and that the payload is exactly ``prod(dims) * itemsize`` bytes. Anything
    else raises ``ValueError`` naming the file and what is wrong. The result is writable and in
    native byte order, with shape ``dims``. ``max_bytes`` bounds the payload the header may
    announce (checked before it is read or decompressed).
    """
    path = Path(path)
    data = _read_maybe_gzip(path, max_bytes)
    if len(data) < 4:
        raise ValueError(f"{path}: not an IDX file: {len(data)} bytes, shorter than the 4-byte magic number")
    if data[0] != 0 or data[1] != 0:
        raise ValueError(
            f"{path}: not an IDX file: magic number starts with 0x{data[0]:02x}{data[1]:02x}, expected 0x0000"
        )
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise ValueError(
            f"{path}: unknown IDX data type code 0x{code:02x} "
            f"(known: {', '.join(f'0x{c:02x}' for c in _IDX_DTYPES)})"
        )
    if ndim == 0:
        raise ValueError(f"{path}: IDX header says 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header: {len(data)} bytes, {ndim} dimensions need {header}")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    count = 1
    for d in dims:
        count *= d
    expected = count * dtype.itemsize
    got = len(data) - header
    if got != expected:
        what = "truncated" if got < expected else "has trailing bytes"
        raise ValueError(
            f"{path}: IDX payload {what}: {got} bytes after the header, dimensions {dims} of "
            f"{dtype.itemsize}-byte items need {expected}"
        )
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def _write_idx(path, array, compress=None) -> None:
    """Write ``array`` as an IDX file (gzipped if ``compress`` or the name ends in .gz). For tests."""
    path = Path(path)
    array = np.asarray(array)
    codes = {v.newbyteorder("=").str.lstrip("<>|="): k for k, v in _IDX_DTYPES.items()}
    key = array.dtype.newbyteorder("=").str.lstrip("<>|=")
    if key not in codes:
        raise ValueError(f"dtype {array.dtype} has no IDX type code")
    code = codes[key]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + np.ascontiguousarray(array, dtype=_IDX_DTYPES[code]).tobytes()
    if compress is None:
        compress = path.suffix == ".gz"
    path.write_bytes(gzip.compress(payload, mtime=0) if compress else payload)


# ---------------------------------------------------------------------------------- locations


def _user_cache_dir() -> Path:
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA")
        root = Path(base) if base else Path.home() / "AppData" / "Local"
    elif sys.platform == "darwin":
        root = Path.home() / "Library" / "Caches"
    else:
        base = os.environ.get("XDG_CACHE_HOME")
        # The XDG spec says relative paths are invalid and must be ignored.
        root = Path(base) if base and os.path.isabs(base) else Path.home() / ".cache"
    return root / "fastmlp"


def resolve_data_dir(data_dir=None) -> Path:
    """The data folder: ``data_dir`` if given, else ``$FASTMLP_DATA``, else the user cache folder.

    The folder is not created here.
    """
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    env = os.environ.get("FASTMLP_DATA")
    if env:
        return Path(env).expanduser()
    return _user_cache_dir()


def _find_file(folders, name):
    """First existing ``name`` (raw preferred) or ``name.gz`` in ``folders``, else None."""
    for folder in folders:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _idx_folders(dataset, root: Path):
    return [root / dataset, *[Path(p) for p in SYSTEM_DIRS.get(dataset, ())]]


def dataset_status(data_dir=None) -> dict:
    """Which datasets are on disk, without reading them.

    Returns ``{"data_dir": str, "mnist": {...}, "fashion-mnist": {...}, "quickdraw": {...}}``;
    for the IDX datasets ``{"present": bool, "folder": str, "files": {name: path or None},
    "missing": [names]}``, for Quick, Draw! ``{"present": bool, "folder": str,
    "categories": [names]}``.
    """
    root = resolve_data_dir(data_dir)
    status: dict = {"data_dir": str(root)}
    for dataset in ("mnist", "fashion-mnist"):
        files = {}
        for name in IDX_FILES:
            found = _find_file(_idx_folders(dataset, root), name)
            files[name] = None if found is None else str(found)
        missing = [n for n, p in files.items() if p is None]
        status[dataset] = {
            "present": not missing,
            "folder": str(root / dataset),
            "files": files,
            "missing": missing,
        }
    qd = root / "quickdraw"
    cats = sorted(p.stem for p in qd.glob("*.npy") if p.is_file()) if qd.is_dir() else []
    status["quickdraw"] = {"present": bool(cats), "folder": str(qd), "categories": cats}
    return status


# ---------------------------------------------------------------------------------- download


class _DownloadError(Exception):
    pass


class _Progress:
    """tqdm on stderr if installed, otherwise one line at the start and one at the end."""

    def __init__(self, url, total, enabled):
        self.bar = None
        self.enabled = enabled
        self.n = 0
        if not enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            size = f" ({total / 1e6:.1f} MB)" if total else ""
            print(f"fastmlp: downloading {url}{size} ...", file=sys.stderr, flush=True)
        else:
            self.bar = tqdm(
                total=total, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                desc=url.rsplit("/", 1)[-1], leave=False,
            )

    def update(self, n):
        self.n += n
        if self.bar is not None:
            self.bar.update(n)

    def close(self, ok):
        if self.bar is not None:
            self.bar.close()
        if self.enabled:
            word = "done" if ok else "failed"
            print(f"fastmlp: download {word} ({self.n / 1e6:.1f} MB)", file=sys.stderr, flush=True)


def _md5_of_content(path: Path):
    """(md5 hex, byte count) of the file's content, decompressed if it is gzipped."""
    with open(path, "rb") as f:
        is_gz = f.read(2) == _GZIP_MAGIC
    h = hashlib.md5()
    n = 0
    opener = gzip.open if is_gz else open
    with opener(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


def _fetch(url, folder: Path, final_name, check, timeout, progress) -> Path:
    """Download ``url`` into ``folder`` atomically; ``check(tmp_path)`` returns the final name
    (or raises). On any failure nothing is left in ``folder`` and ``_DownloadError`` is raised."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{final_name}.", suffix=".part")
    tmp = Path(tmp)
    out = os.fdopen(fd, "wb")
    ok = False
    bar = None
    try:
        req = urllib.request.Request(url, headers={"User-Agent": "fastmlp"})
        with out, urllib.request.urlopen(req, timeout=timeout) as resp:
            status = getattr(resp, "status", 200)
            if status != 200:
                raise _DownloadError(f"HTTP status {status}")
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            bar = _Progress(url, total, progress)
            received = 0
            started = time.monotonic()
            # read1: return what has arrived, so the deadline is checked even while a
            # server trickles bytes slower than the per-read timeout
            read = getattr(resp, "read1", resp.read)
            while chunk := read(_CHUNK):
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
                if time.monotonic() - started > DOWNLOAD_DEADLINE:
                    raise _DownloadError(f"too slow: {received} bytes in "
                                         f"{DOWNLOAD_DEADLINE:g} s (the deadline)")
            if total is not None and received != total:
                raise _DownloadError(f"connection closed after {received} of {total} bytes")
            if received == 0:
                raise _DownloadError("empty response")
        name = check(tmp)
        dest = folder / name
        os.replace(tmp, dest)
        ok = True
        return dest
    except _DownloadError:
        raise
    except urllib.error.HTTPError as e:
        raise _DownloadError(f"HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise _DownloadError(f"{e.reason}") from None
    except (OSError, http.client.HTTPException, EOFError, zlib.error, ValueError) as e:
        raise _DownloadError(f"{type(e).__name__}: {e}") from None
    finally:
        if bar is not None:
            bar.close(ok)
        if not ok:
            out.close()
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass


def _check_idx_download(expected_md5, name):
    def check(tmp: Path) -> str:
        md5, _ = _md5_of_content(tmp)
        if md5 != expected_md5:
            raise _DownloadError(f"MD5 of decompressed content is {md5}, expected {expected_md5}")
        read_idx(tmp)  # header / size sanity (cannot fail once the MD5 matches a valid file)
        with open(tmp, "rb") as f:
            gz = f.read(2) == _GZIP_MAGIC
        return f"{name}.gz" if gz else name

    return check


def _prepare_folder(folder: Path, title, missing, tried):
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DatasetNotFoundError(
            _missing_message(title, missing, folder, tried, extra=f"Cannot create {folder}: {e}")
        ) from None


def _missing_message(title, missing, folder, tried, extra=None):
    lines = [
        f"{title}: missing {', '.join(missing)}.",
        f"Put them (as .gz or raw) in {folder}",
        "(or choose another data folder with data_dir= / --data-dir or the FASTMLP_DATA environment variable).",
    ]
    if tried:
        lines.append("Download attempts failed:")
        lines.extend(f"  {url}: {why}" for url, why in tried)
    if extra:
        lines.append(extra)
    return "\n".join(lines)


def _download_idx(dataset, folder: Path, names, mirrors, timeout, progress):
    """Download the missing IDX files ``names`` into ``folder``; returns {name: path}."""
    title = _TITLES[dataset]
    mirrors = list(MIRRORS[dataset] if mirrors is None else mirrors)
    remaining = list(names)
    created = _missing_ancestors(folder)
    _prepare_folder(folder, title, remaining, [])
    try:
        return _download_each(dataset, folder, names, mirrors, timeout, progress, remaining)
    except BaseException:
        _remove_if_empty(created)  # a failed download leaves no empty folders behind
        raise


def _missing_ancestors(folder: Path):
    """``folder`` and its parents that do not exist yet, deepest first."""
    out = []
    for p in (folder, *folder.parents):
        if p.exists():
            break
        out.append(p)
    return out


def _remove_if_empty(folders):
    for p in folders:
        try:
            p.rmdir()  # only succeeds when empty
        except OSError:
            break


def _download_each(dataset, folder, names, mirrors, timeout, progress, remaining):
    title = _TITLES[dataset]
    paths = {}
    for name in names:
        tried = []
        for base in mirrors:
            url = base.rstrip("/") + "/" + name + ".gz"
            try:
                paths[name] = _fetch(url, folder, name, _check_idx_download(CHECKSUMS[dataset][name], name),
                                     timeout, progress)
                break
            except _DownloadError as e:
                tried.append((url, str(e)))
        else:
            if not mirrors:
                tried.append(("(no mirrors)", "nothing to try"))
            raise DatasetNotFoundError(_missing_message(title, remaining, folder, tried))
        remaining.remove(name)
    return paths


# ----------------------------------------------------------------------------------- loaders


def _verify_md5(dataset, name, path: Path):
    expected = CHECKSUMS[dataset][name]
    md5, _ = _md5_of_content(path)
    if md5 != expected:
        raise ValueError(
            f"{path}: MD5 of the decompressed content is {md5}, expected {expected} for "
            f"{_TITLES[dataset]} {name}; delete the file to download it again"
        )


def _load_idx_dataset(dataset, data_dir, download, verify, mirrors, timeout, progress):
    root = resolve_data_dir(data_dir)
    folder = root / dataset
    paths = {name: _find_file(_idx_folders(dataset, root), name) for name in IDX_FILES}
    missing = [name for name, p in paths.items() if p is None]
    if verify:  # files downloaded below are always checked; these were already on disk
        for name, path in paths.items():
            if path is not None:
                _verify_md5(dataset, name, path)
    if missing and any(_find_file([root], name) for name in IDX_FILES):
        # FASTMLP_DATA=/data/mnist instead of /data: the files are in root itself
        source = "FASTMLP_DATA" if data_dir in (None, "") and os.environ.get("FASTMLP_DATA") \
            else "the data folder"
        raise DatasetNotFoundError(
            f"{_TITLES[dataset]}: {source} {root} holds IDX files itself, but they are looked "
            f"for in {folder}; point {source} at the parent folder ({root.parent}), which "
            f"holds {root.name}/")
    if missing:
        if not download:
            extra = "Or pass download=True to fetch them."
            if dataset == "fashion-mnist":
                extra += " On Debian/Ubuntu, `apt install dataset-fashion-mnist` also provides them."
            raise DatasetNotFoundError(_missing_message(_TITLES[dataset], missing, folder, [], extra=extra))
        paths.update(_download_idx(dataset, folder, missing, mirrors,
                                   TIMEOUT if timeout is None else timeout, progress))

    n_train, n_test = SPLIT_SIZES[dataset]
    out = []
    for split, n in (("train", n_train), ("t10k", n_test)):
        img_path, lab_path = paths[f"{split}-images-idx3-ubyte"], paths[f"{split}-labels-idx1-ubyte"]
        # bounds for the headers (8: the widest IDX type), so the dtype/shape checks below
        # word the error, and a lying header is refused before decompression
        images = read_idx(img_path, max_bytes=8 * n * IMAGE_SHAPE[0] * IMAGE_SHAPE[1])
        labels = read_idx(lab_path, max_bytes=8 * n)
        if images.dtype != np.uint8 or images.shape != (n, *IMAGE_SHAPE):
            raise ValueError(
                f"{img_path}: expected {n} uint8 images of {IMAGE_SHAPE[0]}x{IMAGE_SHAPE[1]} "
                f"(shape {(n, *IMAGE_SHAPE)}), got {images.dtype} array of shape {images.shape}"
            )
        if labels.dtype != np.uint8 or labels.shape != (n,):
            raise ValueError(
                f"{lab_path}: expected {n} uint8 labels (one per image), got {labels.dtype} array of shape {labels.shape}"
            )
        if labels.max(initial=0) >= N_CLASSES:
            raise ValueError(f"{lab_path}: labels must be in 0..{N_CLASSES - 1}, found {int(labels.max())}")
        X = images.reshape(n, -1).astype(np.float32)
        X /= np.float32(255.0)
        out += [X, labels.astype(np.int64)]
    return tuple(out)


def load_mnist(data_dir=None, download=True, *, verify=False, mirrors=None, timeout=None, progress=True):
    """MNIST as ``(X_train, y_train, X_test, y_test)``.

    ``X``: float32 in [0, 1], shape (n, 784), C-contiguous; ``y``: int64 labels 0..9; 60000
    training and 10000 test samples. Missing files are downloaded (``download=True``) from
    ``mirrors`` (default ``MIRRORS["mnist"]``) with a ``timeout`` in seconds. ``verify=True``
    also checks the MD5 of files that were already on disk.
    """
    return _load_idx_dataset("mnist", data_dir, download, verify, mirrors, timeout, progress)


def load_fashion_mnist(data_dir=None, download=True, *, verify=False, mirrors=None, timeout=None, progress=True):
    """Fashion-MNIST as ``(X_train, y_train, X_test, y_test)``; same layout as ``load_mnist``.

    Also finds the files of Debian's ``dataset-fashion-mnist`` package in
    ``/usr/share/datasets/fashion-mnist`` when they are not in the data folder.
    """
    return _load_idx_dataset("fashion-mnist", data_dir, download, verify, mirrors, timeout, progress)


def _check_categories(categories):
    if isinstance(categories, (str, bytes)):
        raise ValueError(f"categories must be a list of category names, e.g. ['cat', 'dog'], not {categories!r}")
    try:
        cats = list(categories)
    except TypeError:
        raise ValueError(f"categories must be a list of category names, got {type(categories).__name__}") from None
    if not cats:
        raise ValueError("categories is empty: give at least one Quick, Draw! category, e.g. ['cat', 'dog']")
    seen = set()
    for c in cats:
        if not isinstance(c, str):
            raise ValueError(f"category names must be strings, got {c!r} ({type(c).__name__})")
        if not c.strip() or c != c.strip() or c.startswith(".") or any(ch in c for ch in "/\\\0"):
            raise ValueError(f"invalid Quick, Draw! category name {c!r}")
        if c in seen:
            raise ValueError(f"duplicate category {c!r} in categories")
        seen.add(c)
    return cats


def _open_quickdraw(path: Path):
    """Memory-map a Quick, Draw! bitmap file and check dtype/shape; ValueError if it is wrong."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"{path}: not a valid .npy file ({e})") from None
    if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8 or arr.ndim != 2 or arr.shape[1] != 784 or len(arr) == 0:
        raise ValueError(
            f"{path}: expected a non-empty uint8 array of shape (n, 784), got "
            f"{getattr(arr, 'dtype', type(arr).__name__)} array of shape {getattr(arr, 'shape', '?')}"
        )
    return arr


def load_quickdraw(categories, data_dir=None, download=True, max_per_class=10000, test_fraction=1 / 7, seed=0,
                   *, verify=False, mirrors=None, timeout=None, progress=True):
    """Quick, Draw! 28x28 bitmaps of ``categories`` as ``(X_train, y_train, X_test, y_test)``.

    Reads ``<data_dir>/quickdraw/<category>.npy`` (downloaded if missing). Takes the first
    ``max_per_class`` drawings of each category (all if None), splits each category into test
    (``round(n * test_fraction)``, at least one) and train at random with ``seed``, and shuffles
    each split. Labels are the index of the category in ``categories``. No checksums are
    published for these files; their dtype (uint8), shape (n, 784) and size are always checked
    instead, so ``verify`` is accepted (for symmetry with the other loaders) and adds nothing.
    """
    del verify
    cats = _check_categories(categories)
    if max_per_class is not None and (isinstance(max_per_class, bool) or not isinstance(max_per_class, (int, np.integer))
                                      or max_per_class < 2):
        raise ValueError(f"max_per_class must be an integer >= 2 or None, got {max_per_class!r}")
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction!r}")
    root = resolve_data_dir(data_dir)
    folder = root / "quickdraw"
    mirrors = list(MIRRORS["quickdraw"] if mirrors is None else mirrors)
    timeout = TIMEOUT if timeout is None else timeout

    missing = [c for c in cats if not (folder / f"{c}.npy").is_file()]
    if missing and not download:
        raise DatasetNotFoundError(_missing_message(
            _TITLES["quickdraw"], [f"{c}.npy" for c in missing], folder, [],
            extra="Or pass download=True to fetch them."))
    for i, c in enumerate(missing):
        still = [f"{m}.npy" for m in missing[i:]]
        _prepare_folder(folder, _TITLES["quickdraw"], still, [])
        tried = []
        for base in mirrors:
            url = base.rstrip("/") + "/" + urllib.parse.quote(c) + ".npy"

            def check(tmp, c=c):
                _open_quickdraw(tmp)
                return f"{c}.npy"

            try:
                _fetch(url, folder, f"{c}.npy", check, timeout, progress)
                break
            except _DownloadError as e:
                tried.append((url, str(e)))
        else:
            raise DatasetNotFoundError(_missing_message(_TITLES["quickdraw"], still, folder, tried or
                                                        [("(no mirrors)", "nothing to try")]))

    rng = np.random.default_rng(seed)
    train_parts, test_parts = [], []
    for label, c in enumerate(cats):
        arr = _open_quickdraw(folder / f"{c}.npy")
        n = len(arr) if max_per_class is None else min(len(arr), int(max_per_class))
        if n < 2:
            raise ValueError(f"{folder / f'{c}.npy'}: only {n} drawing(s); need at least 2 to split")
        data = np.array(arr[:n])  # copy out of the memory map
        n_test = min(max(1, int(round(n * float(test_fraction)))), n - 1)
        order = rng.permutation(n)
        test_parts.append((data[order[:n_test]], label))
        train_parts.append((data[order[n_test:]], label))

    def assemble(parts):
        X = np.concatenate([p for p, _ in parts])
        y = np.concatenate([np.full(len(p), lab, dtype=np.int64) for p, lab in parts])
        order = rng.permutation(len(y))
        Xf = X[order].astype(np.float32)
        Xf /= np.float32(255.0)
        return Xf, y[order]

    X_train, y_train = assemble(train_parts)
    X_test, y_test = assemble(test_parts)
    return X_train, y_train, X_test, y_test


_LOADERS = {"mnist": load_mnist, "fashion-mnist": load_fashion_mnist, "quickdraw": load_quickdraw}


def load_dataset(name, data_dir=None, **kw):
    """``load_mnist`` / ``load_fashion_mnist`` / ``load_quickdraw`` by name (``fashion_mnist``
    is accepted too); ``kw`` goes to the loader (``categories=`` is required for quickdraw)."""
    key = str(name).strip().lower().replace("_", "-")
    if key not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    if key == "quickdraw" and "categories" not in kw:
        raise ValueError("quickdraw needs categories=[...], e.g. load_dataset('quickdraw', categories=['cat', 'dog'])")
    return _LOADERS[key](data_dir=data_dir, **kw)
