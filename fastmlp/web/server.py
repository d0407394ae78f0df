"""The draw-a-digit server: standard-library ``http.server``, no framework.

Routes
------
``GET /``               the page (``static/index.html``)
``GET /static/<name>``  the page's own files; only plain names inside ``static/``
``GET /api/health``     ``{"status": "ok", "layer_sizes": [...] | null}``
``GET /api/history``    the model's training History as JSON (``{}`` when there is none)
``POST /api/predict``   ``{"pixels": [[...], ...]}`` -> ``{"label", "probabilities", "input"}``

``pixels`` is a 2-D list (at most 1024 x 1024) of ink values in [0, 1], ink = 1; it goes
through :func:`fastmlp.images.to_mnist`, and ``input`` is the 28x28 image the network saw.

Errors are JSON ``{"error": "..."}``: 400 malformed (not JSON, not an object, no
``pixels``, wrong rank, ragged, non-numeric, bad Content-Length), 404 unknown path,
405 wrong method, 411 no Content-Length, 413 body over 8 MiB or image over 1024 px a side
(refused before the body is read), 422 well-formed but unusable (NaN/inf, values outside
[0, 1], no ink), 500 the model failed. The server keeps serving after any of them.
"""

from __future__ import annotations

import json
import math
import mimetypes
import os
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np

from ..images import SIZE, to_mnist

__all__ = ["make_server", "serve", "load_history", "MAX_BODY_BYTES", "MAX_SIDE"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_BODY_BYTES = 8 * 1024 * 1024  #: requests with a larger Content-Length get 413, unread
MAX_SIDE = 1024  #: the largest accepted image height or width

_STATIC_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
    ".json": "application/json",
}
_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


class RequestError(Exception):
    """A client error: becomes a JSON ``{"error": message}`` response with ``status``."""

    def __init__(self, status: int, message: str, close: bool = False):
        super().__init__(message)
        self.status = int(status)
        self.message = message
        self.close = close


# --------------------------------------------------------------------------- JSON helpers


def _jsonable(obj):
    """Plain JSON types only; NaN/inf become null (browsers reject bare NaN)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)


def _history_dict(history) -> dict:
    """Accept a dict, a History-like object, a path to its JSON, or None."""
    if history is None:
        return {}
    if isinstance(history, (str, os.PathLike)):
        with open(history, encoding="utf-8") as f:
            history = json.load(f)
    elif not isinstance(history, dict):
        for attr in ("to_dict", "as_dict"):
            if callable(getattr(history, attr, None)):
                history = getattr(history, attr)()
                break
        else:
            if isinstance(getattr(history, "history", None), dict):
                history = history.history
            elif hasattr(history, "__dict__"):
                history = {k: v for k, v in vars(history).items() if not k.startswith("_")}
    if not isinstance(history, dict):
        raise TypeError(f"history must be a dict, a History or a JSON path, got {type(history).__name__}")
    return _jsonable(history)


def history_path_for(model_path) -> Path:
    """``runs/model.npz`` -> ``runs/model.history.json`` (where ``save`` puts the History)."""
    p = Path(model_path)
    stem = p.name[:-4] if p.name.endswith(".npz") else p.name
    return p.with_name(stem + ".history.json")


def load_history(model_path) -> dict:
    """The History saved beside a model file, or ``{}`` when there is none or it is unreadable."""
    path = history_path_for(model_path)
    try:
        return _history_dict(path)
    except (OSError, ValueError, TypeError):
        return {}


# --------------------------------------------------------------------------- validation


def parse_pixels(body: bytes) -> np.ndarray:
    """Validate a predict request body; return the pixels as float64 ``(h, w)``.

    Raises :class:`RequestError` (400/413/422) naming what is wrong.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError(400, "body is not UTF-8 text") from None

    def _no_constants(name):
        raise ValueError(f"{name} is not allowed (JSON has no NaN or Infinity)")

    try:
        payload = json.loads(text, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:
        raise RequestError(400, f"body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise RequestError(
            400, f'body must be a JSON object like {{"pixels": [[...]]}}, got {type(payload).__name__}'
        )
    if "pixels" not in payload:
        raise RequestError(400, 'body has no "pixels" field (a 2-D list of ink values 0..1)')
    pixels = payload["pixels"]
    shape_hint = "pixels must be a 2-D list: a list of rows, each a list of numbers"
    if not isinstance(pixels, list):
        raise RequestError(400, f"{shape_hint}; got {type(pixels).__name__}")
    if not pixels:
        raise RequestError(400, "pixels is empty (no rows)")
    if not all(isinstance(row, list) for row in pixels):
        raise RequestError(400, f"{shape_hint}; got a 1-D list (wrong rank)")
    height, width = len(pixels), len(pixels[0])
    if height > MAX_SIDE or width > MAX_SIDE:
        raise RequestError(
            413, f"image is {height} x {width}; at most {MAX_SIDE} x {MAX_SIDE} is accepted"
        )
    for i, row in enumerate(pixels):
        if len(row) != width:
            raise RequestError(
                400, f"pixels is ragged: row 0 has {width} values but row {i} has {len(row)}"
            )
    if width == 0:
        raise RequestError(400, "pixels is empty (rows have no values)")
    for i, row in enumerate(pixels):
        for v in row:
            t = type(v)
            if t is float or t is int:
                continue
            if t is list:
                raise RequestError(400, f"{shape_hint}; got nested lists deeper than 2-D (wrong rank)")
            raise RequestError(
                400, f"pixels must be numbers; row {i} holds {json.dumps(v)[:40]} ({t.__name__})"
            )
    try:
        arr = np.array(pixels, dtype=np.float64)
    except (OverflowError, ValueError) as exc:
        raise RequestError(400, f"pixels could not be read as numbers: {exc}") from None
    if not np.isfinite(arr).all():
        raise RequestError(422, "pixels must be finite (got a value that overflows to infinity)")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0.0 or hi > 1.0:
        raise RequestError(
            422, f"pixels must lie in [0, 1] (ink = 1); got values from {lo:g} to {hi:g}"
        )
    return arr


# --------------------------------------------------------------------------- server


class DigitServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer that holds the model, its History and a lock around predict."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, model, history=None, quiet=True):
        self.model = model
        if history is None:
            # A Network carries its own History (saved inside the .npz); stand-ins may not.
            try:
                history = _history_dict(getattr(model, "history", None))
            except (TypeError, ValueError, OSError):
                history = {}
        self.history = _history_dict(history)
        self.quiet = quiet
        self.predict_lock = threading.Lock()
        sizes = getattr(model, "layer_sizes", None)
        self.layer_sizes = [int(s) for s in sizes] if sizes is not None else None
        super().__init__(address, DigitHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}/"

    def predict(self, pixels: np.ndarray) -> dict:
        try:
            image = to_mnist(pixels)
        except ValueError as exc:
            raise RequestError(422, str(exc)) from None
        x = np.ascontiguousarray(image.reshape(1, SIZE * SIZE), dtype=np.float32)
        with self.predict_lock:
            proba = self.model.predict_proba(x)
        proba = np.asarray(proba, dtype=np.float64).reshape(-1)
        if proba.size == 0 or not np.isfinite(proba).all():
            raise RuntimeError(f"the model returned unusable probabilities: {proba!r}")
        return {
            "label": int(np.argmax(proba)),
            "probabilities": [float(p) for p in proba],
            "input": np.round(image.astype(np.float64), 4).tolist(),
        }


class DigitHandler(BaseHTTPRequestHandler):
    server: DigitServer
    server_version = "fastmlp"
    sys_version = ""
    timeout = 15  # seconds a slow client may take per read; frees its thread afterwards

    # ----------------------------------------------------------------- responses
    def _send(self, status: int, body: bytes, content_type: str, extra=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        for k, v in extra:
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj, extra=()):
        body = json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8")
        self._send(status, body, "application/json", [("Cache-Control", "no-store"), *extra])

    def _error(self, status: int, message: str, extra=()):
        self._json(status, {"error": message}, extra)

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        if not self.server.quiet:
            super().log_message(format, *args)

    # ----------------------------------------------------------------- routing
    def _route(self):
        return unquote(urlsplit(self.path).path)

    def _dispatch(self, handler):
        try:
            handler()
        except RequestError as exc:
            if exc.close:
                self.close_connection = True
            self._error(exc.status, exc.message)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # noqa: BLE001 - keep serving whatever the model does
            self.close_connection = True
            self.log_error("internal error: %r", exc)
            try:
                self._error(500, f"internal error: {type(exc).__name__}: {exc}")
            except OSError:
                pass

    def do_GET(self):
        self._dispatch(self._get)

    def do_HEAD(self):
        self._dispatch(self._get)

    def do_POST(self):
        self._dispatch(self._post)

    def _not_allowed(self, allow: str):
        self.close_connection = True  # a body we did not read may follow
        self._error(405, f"{self.command} is not allowed here; use {allow}", [("Allow", allow)])

    do_PUT = do_DELETE = do_PATCH = lambda self: self._not_allowed("GET, HEAD, POST")  # noqa: E731

    def _get(self):
        path = self._route()
        if path in ("/", "/index.html"):
            return self._static("index.html")
        if path.startswith("/static/"):
            return self._static(path[len("/static/") :])
        if path == "/api/health":
            return self._json(200, {"status": "ok", "layer_sizes": self.server.layer_sizes})
        if path == "/api/history":
            return self._json(200, self.server.history)
        if path == "/api/predict":
            return self._not_allowed("POST")
        raise RequestError(404, f"no such page: {path}")

    def _static(self, name: str):
        # Only plain file names directly inside static/: no '/', '\\', '..', or leading dot.
        if not _STATIC_NAME.match(name) or ".." in name:
            raise RequestError(404, "no such file")
        root = STATIC_DIR.resolve()
        file = (root / name).resolve()
        if file.parent != root or not file.is_file():
            raise RequestError(404, "no such file")
        content_type = _TYPES.get(file.suffix) or mimetypes.guess_type(file.name)[0]
        body = file.read_bytes()
        self._send(
            200,
            body,
            content_type or "application/octet-stream",
            [("Cache-Control", "no-cache"), ("Content-Security-Policy", _CSP)],
        )

    def _post(self):
        path = self._route()
        if path != "/api/predict":
            if path in ("/", "/index.html", "/api/health", "/api/history") or path.startswith("/static/"):
                return self._not_allowed("GET, HEAD")
            self.close_connection = True
            raise RequestError(404, f"no such page: {path}")
        body = self._read_body()
        pixels = parse_pixels(body)
        self._json(200, self.server.predict(pixels))

    def _read_body(self) -> bytes:
        """Check Content-Length against the limit before reading a byte of the body."""
        if self.headers.get("Transfer-Encoding"):
            raise RequestError(411, "send the body with a Content-Length, not chunked", close=True)
        length = self.headers.get("Content-Length")
        if length is None:
            raise RequestError(411, "Content-Length header is required", close=True)
        length = length.strip()
        if not length.isdigit():
            raise RequestError(400, f"Content-Length must be a whole number, got {length[:40]!r}", close=True)
        n = int(length)
        if n > MAX_BODY_BYTES:
            raise RequestError(
                413, f"body is {n} bytes; the limit is {MAX_BODY_BYTES} bytes", close=True
            )
        if n == 0:
            raise RequestError(400, 'body is empty; send {"pixels": [[...]]}')
        body = self.rfile.read(n)
        if len(body) != n:
            raise RequestError(400, f"body ended after {len(body)} of {n} bytes", close=True)
        return body


def make_server(model, host: str = "127.0.0.1", port: int = 8000, history=None, quiet: bool = True):
    """A ready, not yet running, server for ``model`` (anything with ``predict_proba``).

    ``history`` is a dict of per-epoch lists, a History object, a path to its JSON, or None
    (then ``model.history`` is used when the model has one).
    Port 0 picks a free port: read it from ``server.server_address[1]`` (or ``server.url``).
    Run it with ``server.serve_forever()`` (in a thread for tests); stop with
    ``server.shutdown(); server.server_close()``.
    """
    if not callable(getattr(model, "predict_proba", None)):
        raise TypeError(f"model must have a predict_proba method, got {type(model).__name__}")
    sizes = getattr(model, "layer_sizes", None)
    if sizes is not None and len(sizes) and int(sizes[0]) != SIZE * SIZE:
        raise ValueError(
            f"the page sends 28x28 = {SIZE * SIZE} pixels but this model takes {int(sizes[0])} inputs"
        )
    return DigitServer((host, int(port)), model, history=history, quiet=quiet)


def serve(model_path=None, host: str = "127.0.0.1", port: int = 8000, *, quiet: bool = True,
          model=None, history=None):
    """Load ``model_path`` (a ``Network.save`` file) and serve the page until Ctrl-C.

    The training-curve plot shows the History saved beside the model (``model.history.json``)
    if there is one, else the History stored in the model file itself.
    A model object may be passed instead of a path.
    """
    if model is None:
        if model_path is None:
            raise ValueError(
                "serve needs a trained model: serve('model.npz') "
                "(make one with `fastmlp train ... --save model.npz`)"
            )
        if not Path(model_path).exists() and Path(str(model_path) + ".npz").exists():
            model_path = str(model_path) + ".npz"
        if not Path(model_path).exists():
            raise FileNotFoundError(f"no such model file: {os.fspath(model_path)!r}")
        from ..network import Network

        model = Network.load(model_path)
        if history is None:
            history = load_history(model_path) or None  # None: fall back to model.history
    server = make_server(model, host=host, port=port, history=history, quiet=quiet)
    print(f"fastmlp: serving the draw-a-digit page at {server.url}  (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return server
