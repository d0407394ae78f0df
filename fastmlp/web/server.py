"""The draw-a-digit server: standard-library ``http.server``, no framework.

Routes
------
``GET /``               the page (``static/index.html``)
``GET /static/<name>``  the page's own files; only plain names inside ``static/``
``GET /api/health``     ``{"status": "ok", "layer_sizes": [...] | null,
                        "test_accuracy": float | null}`` (the accuracy ``fastmlp train``
                        measured on the test set, from the model's ``.history.json``);
                        a network given as a layer list (convolutional, or with
                        BatchNorm, Dropout layers) adds ``"architecture"``: that list as
                        text, e.g. ``"[(1, 28, 28), Conv2D(8, 5, padding=2), ...]"``
``GET /api/history``    the model's training History as JSON (``{}`` when there is none)
``POST /api/predict``   ``{"pixels": [[...], ...]}`` -> ``{"label", "probabilities", "input",
                        "hint"}`` (+ ``"feature_maps"`` for a convolutional network)
``OPTIONS *``           204 with an ``Allow`` header

``pixels`` is a 2-D list (at most 1024 x 1024) of ink values in [0, 1], ink = 1; it goes
through :func:`fastmlp.images.to_mnist`, and ``input`` is the 28x28 image the network saw.
``hint`` is null, or a sentence saying why the answer means little: the drawing is unlike
MNIST's digits (:mod:`fastmlp.web.typicality`; :func:`serve` checks this when MNIST is on
disk) or no digit gets ``UNSURE_BELOW`` of the probability.

``feature_maps`` (convolutional networks only) holds the first convolution block's output:
the first conv layer's after its activation, or, when a BatchNorm follows the conv, the
BatchNorm's (conv -> BN -> activation). Compactly: ``{"layer": index in the layer list (0
is the input) of the layer whose output it is, "name" (the conv, its BatchNorm if any, the
activation), "channels": maps the layer has, "shape": [maps sent, height, width], "step": the
subsampling step (1 unless a map is wider than MAX_MAP_SIDE), "range": [[low, high], ...]
per map, "data": base64 of uint8 values, map after map, row-major}``; a value ``q`` stands
for ``low + q / 255 * (high - low)``, with ``low = min(0, min of the map)`` and ``high =
max(0, max of the map)`` (so 0 is black for ReLU maps). At most ``MAX_MAPS`` maps of at most
``MAX_MAP_SIDE`` x ``MAX_MAP_SIDE`` values are sent: the answer stays small and bounded.

Errors are JSON ``{"error": "..."}``: 400 malformed (not JSON, not an object, no
``pixels``, wrong rank, ragged, non-numeric, bad Content-Length, body shorter than its
Content-Length), 404 unknown path, 405 wrong method (TRACE included), 408 request line and
headers not received within ``HEADER_DEADLINE`` seconds or body not received within
``BODY_DEADLINE`` seconds, 411 no Content-Length, 413 body over 8 MiB or image over
1024 px a side (refused before the body is read), 422 well-formed but unusable (NaN/inf,
values outside [0, 1], no ink), 501 unknown method, 503 too many large requests at once
(retry), 500 the model failed. The server keeps serving after any of them.

Load: the listen backlog is ``LISTEN_BACKLOG`` (bursts of connections queue instead of
being reset), at most ``MAX_LARGE_BODIES`` bodies over ``LARGE_BODY_BYTES`` are read and
parsed at once (bounded memory: each may become a million-element Python list), the request
line and headers must arrive whole within ``HEADER_DEADLINE`` seconds and a body within
``BODY_DEADLINE`` seconds, however slowly they trickle (a connection that sends nothing is
closed at the header deadline without an answer).
"""

from __future__ import annotations

import base64
import io
import json
import math
import mimetypes
import os
import re
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np

from ..history import history_path as history_path_for
from ..images import SIZE, to_mnist

__all__ = ["make_server", "serve", "load_history", "MAX_BODY_BYTES", "MAX_SIDE", "BODY_DEADLINE",
           "HEADER_DEADLINE", "MAX_MAPS", "MAX_MAP_SIDE"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_BODY_BYTES = 8 * 1024 * 1024  #: requests with a larger Content-Length get 413, unread
MAX_SIDE = 1024  #: the largest accepted image height or width
BODY_DEADLINE = 10.0  #: seconds a client has to send a whole request body (else 408)
#: seconds a client has to send its request line and headers, all of them (else 408, or a
#: silent close when it sent nothing: an idle keep-alive connection)
HEADER_DEADLINE = 10.0
LISTEN_BACKLOG = 128  #: socketserver's default of 5 resets bursts of new connections
LARGE_BODY_BYTES = 256 * 1024  #: bodies above this share MAX_LARGE_BODIES slots
MAX_LARGE_BODIES = 4  #: large bodies read and parsed at once (each may cost ~100 MB)
MAX_MAPS = 32  #: feature maps sent per prediction (a wider first conv layer: its first 32)
MAX_MAP_SIDE = 56  #: larger maps are subsampled by a whole step to at most this many a side
UNSURE_BELOW = 0.5  #: a top probability below this gets the "unsure" hint
_CONTENT_LENGTH = re.compile(r"[0-9]{1,18}\Z")  # ASCII digits only: "²".isdigit() is True

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
    return _plain_history(history)


def _plain(value):
    """A number, string, bool or None as itself (NaN/inf as None); anything else: _SKIP."""
    if value is None or isinstance(value, (str, bool, np.bool_)):
        return bool(value) if isinstance(value, np.bool_) else value
    if isinstance(value, (int, float, np.integer, np.floating)):
        return _jsonable(value)
    return _SKIP


_SKIP = object()
_PER_EPOCH = ("loss", "accuracy", "val_loss", "val_accuracy", "seconds", "learning_rate")


def _plain_history(history: dict) -> dict:
    """What the page may read of a History: per-epoch lists of numbers, scalars, and one
    level of scalars inside dicts (the ``run`` record). Anything else -- nested structures,
    lists of strings, a thousand levels of brackets -- is dropped, never recursed into."""
    out = {}
    for key, value in history.items():
        if key in _PER_EPOCH and not isinstance(value, (list, tuple, np.ndarray)):
            continue
        if key == "run" and not isinstance(value, dict):
            continue
        if isinstance(value, np.ndarray):
            value = value.tolist() if value.ndim == 1 else None
        if isinstance(value, (list, tuple)):
            items = [_plain(v) for v in value]
            if all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
                   for v in items):
                out[str(key)] = items
        elif isinstance(value, dict):
            inner = {str(k): _plain(v) for k, v in value.items()}
            inner = {k: v for k, v in inner.items() if v is not _SKIP}
            # the run record's class names are a list of strings: keep those too
            names = value.get("classes")
            if isinstance(names, list) and all(isinstance(n, str) for n in names):
                inner["classes"] = list(names)
            out[str(key)] = inner
        else:
            plain = _plain(value)
            if plain is not _SKIP:
                out[str(key)] = plain
    return out


def load_history(model_path) -> dict:
    """The History saved beside a model file, or ``{}`` when there is none or it is unreadable."""
    from ..history import read_history_json

    try:
        return _history_dict(read_history_json(model_path))
    except (OSError, ValueError, TypeError, RecursionError):
        return {}


def _test_accuracy(history: dict):
    """``history["run"]["test_accuracy"]`` when it is a number in [0, 1], else None."""
    run = history.get("run") if isinstance(history, dict) else None
    value = run.get("test_accuracy") if isinstance(run, dict) else None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1:
        return float(value)
    return None


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


# --------------------------------------------------------------------------- CNN extras


def _has_layer_list(model) -> bool:
    """A fastmlp Network given as a layer list (``is_mlp`` False: a CNN, or a network with
    BatchNorm or Dropout layers); stand-ins and plain ``[int, ...]`` MLPs are not."""
    return getattr(model, "is_mlp", True) is False and callable(getattr(model, "forward", None))


def _architecture(model):
    """The layer list as text, the way it is written in Python, for a network given as a
    layer list; else None (a plain MLP's ``layer_sizes`` say it all)."""
    if not _has_layer_list(model):
        return None
    return "[" + ", ".join(repr(spec) for spec in model.layers) + "]"


class _FirstConv:
    """Where the first convolution block's output sits in ``model.forward``'s list — the
    conv layer's, or the BatchNorm's that follows it and applies the conv's activation —,
    its ``(C, H, W)`` shape and name (specs and activation)."""

    def __init__(self, model):
        from ..layers import plan

        self.index = None
        layers = plan(model.layers)
        for k, layer in enumerate(layers):
            if layer.kind == "conv":
                # Only layers without weights (pooling, dropout) can come before the first
                # convolution, so its activation is the first one.
                parts = [repr(layer.spec), list(model.activations)[0]]
                if k + 1 < len(layers) and layers[k + 1].kind == "batchnorm":
                    k += 1  # forward(x)[k] of the conv is its pre-activation
                    parts.insert(1, repr(layers[k].spec))
                self.index = k  # forward(x)[k] is layer k+1 of the list (0 is the input)
                self.shape = tuple(int(d) for d in layer.out_shape)
                self.name = ", ".join(parts)
                break

    def encode(self, output) -> dict:
        """The maps of one sample's flat layer output, as the bounded JSON record above."""
        channels, height, width = self.shape
        maps = np.asarray(output, dtype=np.float64).reshape(self.shape)[:MAX_MAPS]
        step = max(1, -(-max(height, width) // MAX_MAP_SIDE))  # ceil
        maps = np.nan_to_num(maps[:, ::step, ::step], nan=0.0, posinf=0.0, neginf=0.0)
        flat = maps.reshape(maps.shape[0], -1)
        low = np.minimum(flat.min(axis=1), 0.0)
        high = np.maximum(flat.max(axis=1), 0.0)
        span = high - low
        scale = np.divide(255.0, span, out=np.zeros_like(span), where=span > 0)
        q = np.rint((flat - low[:, None]) * scale[:, None]).clip(0, 255).astype(np.uint8)
        return {
            "layer": self.index + 1,
            "name": self.name,
            "channels": channels,
            "shape": [int(d) for d in maps.shape],
            "step": step,
            "range": [[float(a), float(b)] for a, b in zip(low, high)],
            "data": base64.b64encode(q.tobytes()).decode("ascii"),
        }


# --------------------------------------------------------------------------- server


class DigitServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer that holds the model, its History and a lock around predict."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address, model, history=None, quiet=True, digit_space=None):
        self.model = model
        self.digit_space = digit_space  # a typicality.DigitSpace, or None: no "unlike" hint
        if history is None:
            # A Network carries its own History (saved inside the .npz); stand-ins may not.
            try:
                history = _history_dict(getattr(model, "history", None))
            except (TypeError, ValueError, OSError, RecursionError):
                history = {}
        self.history = _history_dict(history)
        self.quiet = quiet
        self.predict_lock = threading.Lock()
        self.large_bodies = threading.BoundedSemaphore(MAX_LARGE_BODIES)
        self.body_deadline = BODY_DEADLINE  # seconds; an attribute so tests can shorten it
        self.header_deadline = HEADER_DEADLINE  # likewise
        sizes = getattr(model, "layer_sizes", None)
        self.layer_sizes = [int(s) for s in sizes] if sizes is not None else None
        self.test_accuracy = _test_accuracy(self.history)
        self.architecture = _architecture(model)
        first = _FirstConv(model) if self.architecture is not None else None
        self.first_conv = first if first is not None and first.index is not None else None
        super().__init__(address, DigitHandler)

    def hint(self, image, proba):
        """A sentence for the page when the answer means little, else None: the drawing is
        unlike MNIST's digits (see :mod:`fastmlp.web.typicality`), or no digit gets
        ``UNSURE_BELOW`` of the probability."""
        space = self.digit_space
        if space is not None and space.is_unlike(image):
            return (f"This drawing is unlike the handwritten digits the network learned from "
                    f"(farther from them than {space.percentile:g} % of MNIST's digits are). "
                    "It can only ever answer 0-9, so this answer means little.")
        if float(np.max(proba)) < UNSURE_BELOW:
            return (f"The network is unsure: no digit gets {UNSURE_BELOW:.0%} of the "
                    "probability.")
        return None

    def health(self) -> dict:
        """``/api/health``: an MLP's answer is exactly as before; a CNN adds its architecture."""
        info = {"status": "ok", "layer_sizes": self.layer_sizes,
                "test_accuracy": self.test_accuracy}
        if self.architecture is not None:
            info["architecture"] = self.architecture
        return info

    def server_bind(self):
        try:
            super().server_bind()
        except OSError as exc:
            import errno

            host, port = self.server_address[:2]
            if exc.errno == errno.EADDRINUSE:
                raise OSError(exc.errno, f"port {port} on {host} is already in use (another "
                              "fastmlp serve?); choose another with --port, or --port 0 for "
                              "any free one") from None
            if exc.errno in (errno.EADDRNOTAVAIL, errno.EACCES):
                raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}"
                              ) from None
            raise

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
        maps = None
        with self.predict_lock:
            if self.first_conv is not None:
                # One forward pass gives both: every layer's output, the last being predict_proba.
                outputs = self.model.forward(x)
                proba = outputs[-1]
                maps = self.first_conv.encode(outputs[self.first_conv.index][0])
            else:
                proba = self.model.predict_proba(x)
        proba = np.asarray(proba, dtype=np.float64).reshape(-1)
        if proba.size == 0 or not np.isfinite(proba).all():
            raise RuntimeError(f"the model returned unusable probabilities: {proba!r}")
        answer = {
            "label": int(np.argmax(proba)),
            "probabilities": [float(p) for p in proba],
            "input": np.round(image.astype(np.float64), 4).tolist(),
            "hint": self.hint(image, proba),
        }
        if maps is not None:
            answer["feature_maps"] = maps
        return answer


class _DeadlineReader(io.RawIOBase):
    """The connection's raw reader, under a deadline while one is set: each read waits at
    most until the deadline (and at most ``timeout`` seconds), so a client that trickles its
    request line and headers a byte at a time cannot hold a thread past the deadline.
    Counts the bytes read since the deadline was set, and whether a read timed out."""

    def __init__(self, sock, timeout):
        super().__init__()
        self._raw = sock.makefile("rb", buffering=0)
        self._sock = sock
        self._timeout = timeout
        self.deadline = None
        self.received = 0
        self.timed_out = False

    def start(self, seconds):
        self.deadline = time.monotonic() + seconds
        self.received = 0
        self.timed_out = False

    def stop(self):
        """No deadline from here on (the body has its own); reads wait ``timeout`` again."""
        if self.deadline is not None:
            self.deadline = None
            try:
                self._sock.settimeout(self._timeout)
            except OSError:
                pass

    def readable(self):
        return True

    def readinto(self, buffer):
        if self.deadline is None:
            return self._raw.readinto(buffer)
        left = self.deadline - time.monotonic()
        try:
            if left <= 0:
                raise TimeoutError("request line and headers not received in time")
            self._sock.settimeout(min(left, self._timeout))
            n = self._raw.readinto(buffer)
        except TimeoutError:
            self.timed_out = True
            raise
        self.received += n or 0
        return n

    def close(self):
        if not self.closed:
            self._raw.close()
        super().close()


class DigitHandler(BaseHTTPRequestHandler):
    server: DigitServer
    server_version = "fastmlp"
    sys_version = ""
    timeout = 15  # seconds a slow client may take per read; frees its thread afterwards

    def setup(self):
        super().setup()
        # The request line and headers, all of them, must arrive within the server's
        # header_deadline (HEADER_DEADLINE), as a body must within its own: http.server's
        # per-read timeout alone let a client sending a byte a second hold a thread forever.
        self.rfile.close()
        self._reader = _DeadlineReader(self.connection, self.timeout)
        self.rfile = io.BufferedReader(self._reader)

    def handle_one_request(self):
        # What send_error reads, should the deadline pass before the request line is parsed.
        self.command, self.requestline = None, ""
        self.request_version = self.default_request_version
        reader = self._reader
        reader.start(self.server.header_deadline)
        try:
            # A read that times out ends the request there, with close_connection set.
            super().handle_one_request()
        finally:
            reader.stop()
        if reader.timed_out and reader.received:
            # Part of a request came, the rest not in time: say so (then close). A client
            # that sent nothing at all (an idle keep-alive connection) is closed silently.
            self.send_error(408, f"request line and headers not received within "
                                 f"{self.server.header_deadline:g} s")

    def parse_request(self):
        try:
            return super().parse_request()  # reads the headers, under the deadline
        finally:
            self._reader.stop()  # the body has a deadline of its own (BODY_DEADLINE)

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

    def send_error(self, code, message=None, explain=None):
        """http.server's own errors (bad request line, unknown method, header too long) as
        JSON like every other error, not its HTML page."""
        self.close_connection = True
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "error"
        text = message or phrase
        if code == HTTPStatus.NOT_IMPLEMENTED and self.command:
            text = f"{self.command} is not supported; use GET, HEAD or POST"
        if self.request_version == "HTTP/0.9":
            # An unparseable request line leaves the 0.9 default, which would suppress the
            # status line; nobody speaks HTTP/0.9 to this server, so answer in 1.0.
            self.request_version = "HTTP/1.0"
        try:
            self._error(code, text)
        except OSError:
            pass

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
    do_TRACE = do_CONNECT = do_PUT

    def do_OPTIONS(self):
        self.close_connection = True  # a body we did not read may follow
        self.send_response(204)
        self.send_header("Allow", "GET, HEAD, POST, OPTIONS")
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.end_headers()

    def _get(self):
        path = self._route()
        if path in ("/", "/index.html"):
            return self._static("index.html")
        if path.startswith("/static/"):
            return self._static(path[len("/static/") :])
        if path == "/api/health":
            return self._json(200, self.server.health())
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
        length = self.headers.get("Content-Length", "").strip()
        large = _CONTENT_LENGTH.match(length) is not None and int(length) > LARGE_BODY_BYTES
        if not large:
            pixels = parse_pixels(self._read_body())
        else:
            # Bounded memory: only a few big bodies are held and parsed at once; the others
            # wait for a slot up to the body deadline, then get 503 (their bodies unread).
            if not self.server.large_bodies.acquire(timeout=self.server.body_deadline):
                raise RequestError(503, "too many large requests at once; retry shortly",
                                   close=True)
            try:
                pixels = parse_pixels(self._read_body())
            finally:
                self.server.large_bodies.release()
        self._json(200, self.server.predict(pixels))

    def _read_body(self) -> bytes:
        """Check Content-Length against the limit before reading a byte of the body."""
        if self.headers.get("Transfer-Encoding"):
            raise RequestError(411, "send the body with a Content-Length, not chunked", close=True)
        length = self.headers.get("Content-Length")
        if length is None:
            raise RequestError(411, "Content-Length header is required", close=True)
        length = length.strip()
        if not _CONTENT_LENGTH.match(length):
            raise RequestError(400, f"Content-Length must be a whole number, got {length[:40]!r}", close=True)
        n = int(length)
        if n > MAX_BODY_BYTES:
            raise RequestError(
                413, f"body is {n} bytes; the limit is {MAX_BODY_BYTES} bytes", close=True
            )
        if n == 0:
            raise RequestError(400, 'body is empty; send {"pixels": [[...]]}')
        return self._read_exactly(n)

    def _read_exactly(self, n: int) -> bytes:
        """``n`` bytes of body within ``BODY_DEADLINE`` seconds in all (408 otherwise)."""
        allowed = self.server.body_deadline
        deadline = time.monotonic() + allowed
        chunks, got = [], 0
        try:
            while got < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                self.connection.settimeout(min(left, self.timeout))
                chunk = self.rfile.read1(min(n - got, 1 << 16))
                if not chunk:
                    raise RequestError(400, f"body ended after {got} of {n} bytes", close=True)
                chunks.append(chunk)
                got += len(chunk)
        except TimeoutError:
            raise RequestError(408, f"body not received in time: {got} of {n} bytes in "
                               f"{allowed:g} s", close=True) from None
        finally:
            try:
                self.connection.settimeout(self.timeout)
            except OSError:
                pass
        return b"".join(chunks)


def make_server(model, host: str = "127.0.0.1", port: int = 8000, history=None, quiet: bool = True,
                digit_space=None):
    """A ready, not yet running, server for ``model`` (anything with ``predict_proba``).

    ``history`` is a dict of per-epoch lists, a History object, a path to its JSON, or None
    (then ``model.history`` is used when the model has one). ``digit_space`` (a
    :class:`fastmlp.web.typicality.DigitSpace`, or None) lets answers say when a drawing is
    unlike a digit (``hint``); :func:`serve` builds one from MNIST when it can.
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
    shape = getattr(model, "input_shape", None)
    if shape is not None and tuple(int(d) for d in shape) != (1, SIZE, SIZE):
        raise ValueError(
            f"the page sends one 28x28 image, shape (1, {SIZE}, {SIZE}), but this model takes "
            f"images of shape {tuple(shape)}"
        )
    return DigitServer((host, int(port)), model, history=history, quiet=quiet,
                       digit_space=digit_space)


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
    digit_space = None
    try:  # the dataset the model was trained on, when its History says
        run = _history_dict(history if history is not None else
                            getattr(model, "history", None)).get("run")
    except (TypeError, ValueError, OSError, RecursionError):
        run = None
    if not isinstance(run, dict) or run.get("dataset", "mnist") == "mnist":
        from .typicality import DigitSpace

        digit_space = DigitSpace.from_mnist()  # None without MNIST on disk: no such hint
    server = make_server(model, host=host, port=port, history=history, quiet=quiet,
                         digit_space=digit_space)
    print(f"fastmlp: serving the draw-a-digit page at {server.url}  (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return server
