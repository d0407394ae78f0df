"""fastmlp.web.server: the draw-a-digit HTTP API, with a stand-in model."""

import http.client
import json
import socket
import threading
import time

import numpy as np
import pytest

from fastmlp.images import to_mnist
from fastmlp.web.server import (
    MAX_BODY_BYTES,
    MAX_SIDE,
    history_path_for,
    load_history,
    make_server,
    serve,
)


class StandIn:
    """Anything with predict_proba will do: always says 7, and records what it was given."""

    layer_sizes = [784, 16, 10]

    def __init__(self):
        self.seen = []

    def predict_proba(self, X):
        self.seen.append(X)
        p = np.full((X.shape[0], 10), 0.02, dtype=np.float32)
        p[:, 7] = 0.82
        return p


class Broken(StandIn):
    def predict_proba(self, X):
        raise RuntimeError("kaboom")


HISTORY = {"loss": [0.9, 0.4], "accuracy": [0.8, 0.9], "val_loss": [0.5, float("nan")],
           "val_accuracy": [0.85, 0.91], "seconds": [1.5, 1.25]}


def start(model, **kwargs):
    server = make_server(model, port=0, **kwargs)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


@pytest.fixture(scope="module")
def app():
    model = StandIn()
    server, thread = start(model, history=HISTORY)
    yield server, model
    server.shutdown()
    server.server_close()
    thread.join(5)


def request(server, method, path, body=None, headers=None, length="auto"):
    """Send a request exactly as given (no automatic Content-Length); return (status, json|bytes, headers)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        if body is not None and length == "auto":
            conn.putheader("Content-Length", str(len(body)))
        elif length not in (None, "auto"):
            conn.putheader("Content-Length", str(length))
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        conn.endheaders()
        if body:
            try:
                conn.send(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server may answer and close before reading an oversized body
        resp = conn.getresponse()
        raw = resp.read()
        ctype = resp.getheader("Content-Type", "")
        data = json.loads(raw) if ctype.startswith("application/json") else raw
        return resp.status, data, dict(resp.getheaders())
    finally:
        conn.close()


def predict(server, payload):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return request(server, "POST", "/api/predict", body, {"Content-Type": "application/json"})


def healthy(server):
    status, data, _ = request(server, "GET", "/api/health")
    return status == 200 and data["status"] == "ok"


def stroke(h=140, w=140):
    """A thick diagonal-ish stroke: something with ink, like the page sends."""
    a = np.zeros((h, w))
    for i in range(h // 5, h - h // 5):
        j = w // 2 + (i - h // 2) // 4
        a[i, max(0, j - 6) : j + 6] = 1.0
    return a


# ----------------------------------------------------------------------------- happy paths


def test_predict_happy_path(app):
    server, model = app
    pixels = stroke()
    status, data, headers = predict(server, {"pixels": pixels.round(3).tolist()})
    assert status == 200, data
    assert headers["Content-Type"] == "application/json"
    assert data["label"] == 7
    assert len(data["probabilities"]) == 10
    assert sum(data["probabilities"]) == pytest.approx(1.0, abs=1e-5)
    seen = np.array(data["input"])
    assert seen.shape == (28, 28)
    np.testing.assert_allclose(seen, to_mnist(pixels.round(3)), atol=1e-4)
    X = model.seen[-1]
    assert X.shape == (1, 784) and X.dtype == np.float32 and X.flags.c_contiguous


def test_predict_accepts_any_size_and_ints(app):
    server, _ = app
    for shape in [(28, 28), (5, 3), (300, 120)]:
        status, data, _ = predict(server, {"pixels": stroke(*shape).astype(int).tolist()})
        assert status == 200, (shape, data)


def test_predict_largest_image(app):
    server, _ = app
    pixels = np.zeros((MAX_SIDE, MAX_SIDE), dtype=int)
    pixels[200:800, 500:540] = 1
    status, data, _ = predict(server, {"pixels": pixels.tolist()})
    assert status == 200, data


def test_health_and_history(app):
    server, _ = app
    status, data, _ = request(server, "GET", "/api/health")
    assert status == 200 and data == {"status": "ok", "layer_sizes": [784, 16, 10],
                                      "test_accuracy": None}
    status, data, _ = request(server, "GET", "/api/history")
    assert status == 200
    assert data["loss"] == [0.9, 0.4] and data["val_loss"] == [0.5, None]  # NaN -> null


def test_page_and_static(app):
    server, _ = app
    status, body, headers = request(server, "GET", "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    html = body.decode()
    for element_id in ("pad", "clear", "prediction", "probs", "seen", "curves"):
        assert f'id="{element_id}"' in html
    assert "http://" not in html and "https://" not in html  # nothing from a CDN
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    for name, kind in [("app.js", "text/javascript"), ("style.css", "text/css")]:
        status, body, headers = request(server, "GET", f"/static/{name}")
        assert status == 200 and headers["Content-Type"].startswith(kind) and body
    status, body, headers = request(server, "HEAD", "/static/app.js")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0


@pytest.mark.parametrize(
    "path",
    [
        "/static/../server.py",
        "/static/..%2fserver.py",
        "/static/%2e%2e/%2e%2e/images.py",
        "/static/%2E%2E%2F__init__.py",
        "/static/..\\server.py",
        "/static//etc/passwd",
        "/static/%2fetc%2fpasswd",
        "/static/.hidden",
        "/static/",
        "/static/nope.js",
        "/static/app.js%00.png",
        "/../../etc/passwd",
    ],
)
def test_static_traversal_refused(app, path):
    server, _ = app
    status, data, _ = request(server, "GET", path)
    assert status == 404 and "error" in data
    assert healthy(server)


# ----------------------------------------------------------------------------- bad bodies

BAD_BODIES = [
    (b"hello", 400, "not valid JSON"),
    (b"\xff\xfe\x00", 400, "UTF-8"),
    (b"[1, 2, 3]", 400, "JSON object"),
    (b'"pixels"', 400, "JSON object"),
    (b"null", 400, "JSON object"),
    (b"{}", 400, '"pixels"'),
    (b'{"pixel": [[1]]}', 400, '"pixels"'),
    (b'{"pixels": 5}', 400, "2-D"),
    (b'{"pixels": "abc"}', 400, "2-D"),
    (b'{"pixels": []}', 400, "empty"),
    (b'{"pixels": [[], []]}', 400, "empty"),
    (b'{"pixels": [0, 1, 0]}', 400, "rank"),
    (b'{"pixels": [[0, 1], 1]}', 400, "rank"),
    (b'{"pixels": [[[0, 1]], [[1, 0]]]}', 400, "rank"),
    (b'{"pixels": [[0, 1], [1]]}', 400, "ragged"),
    (b'{"pixels": [["a", 1]]}', 400, "numbers"),
    (b'{"pixels": [[null, 1]]}', 400, "numbers"),
    (b'{"pixels": [[true, 1]]}', 400, "numbers"),
    (b'{"pixels": [[{}, 1]]}', 400, "numbers"),
    (b'{"pixels": [[NaN, 1]]}', 400, "NaN"),
    (b'{"pixels": [[Infinity, 1]]}', 400, "Infinity"),
    (b'{"pixels": [[1e999, 1]]}', 422, "finite"),
    (b'{"pixels": [[2, 1]]}', 422, "[0, 1]"),
    (b'{"pixels": [[-0.5, 1]]}', 422, "[0, 1]"),
    (b'{"pixels": [[0, 0], [0, 0]]}', 422, "no ink"),
    (b'{"pixels": [[1, 1], [1, 1]]}', 422, "no ink"),
    (b'{"pixels": [' + b"[1]," * MAX_SIDE + b"[1]]}", 413, "at most"),
    (b'{"pixels": [[' + b"1," * MAX_SIDE + b"1]]}", 413, "at most"),
    (b'{"pixels": [[1]]' + b"]" * 100, 400, "not valid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, 400, "not valid JSON"),  # deep nesting, no crash
]


@pytest.mark.parametrize("body, code, words", BAD_BODIES, ids=[repr(b[:30]) for b, _, _ in BAD_BODIES])
def test_bad_bodies(app, body, code, words):
    server, _ = app
    status, data, headers = predict(server, body)
    assert status == code, data
    assert headers["Content-Type"] == "application/json"
    assert isinstance(data, dict) and words in data["error"], data
    assert healthy(server)


def test_missing_content_length_is_411(app):
    server, _ = app
    status, data, _ = request(server, "POST", "/api/predict", body=None, length=None)
    assert status == 411 and "Content-Length" in data["error"]
    status, data, _ = request(
        server, "POST", "/api/predict", body=b"5\r\n{}...\r\n0\r\n\r\n", length=None,
        headers={"Transfer-Encoding": "chunked"},
    )
    assert status == 411
    assert healthy(server)


def test_bad_content_length(app):
    server, _ = app
    for value in ["abc", "-5", "1.5", ""]:
        status, data, _ = request(server, "POST", "/api/predict", body=b"{}", length=None,
                                  headers={"Content-Length": value})
        assert status == 400, value
        assert "Content-Length" in data["error"]
    status, data, _ = request(server, "POST", "/api/predict", body=None, length=0)
    assert status == 400 and "empty" in data["error"]
    assert healthy(server)


def test_oversized_body_refused_before_reading(app):
    server, _ = app
    # Announce a body over the limit but send only a few bytes: the server must answer
    # 413 from the header alone instead of waiting for (or buffering) the rest.
    t0 = time.perf_counter()
    status, data, headers = request(server, "POST", "/api/predict", body=b'{"pixels": [[',
                                    length=MAX_BODY_BYTES + 1)
    assert status == 413 and "limit" in data["error"]
    assert time.perf_counter() - t0 < 2
    assert headers.get("Connection") == "close"
    assert healthy(server)


def test_truncated_body(app):
    server, _ = app
    conn = socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=5)
    conn.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"pix")
    conn.shutdown(socket.SHUT_WR)  # client gives up mid-body
    reply = b""
    while chunk := conn.recv(65536):  # the reply may arrive in several pieces
        reply += chunk
    conn.close()
    assert reply.startswith(b"HTTP/1.0 400") and b"ended after" in reply
    assert healthy(server)


@pytest.mark.parametrize(
    "method, path, code",
    [("GET", "/api/predict", 405), ("POST", "/", 405), ("POST", "/api/health", 405),
     ("PUT", "/api/predict", 405), ("DELETE", "/", 405), ("GET", "/nope", 404),
     ("POST", "/nope", 404)],
)
def test_wrong_method_or_path(app, method, path, code):
    server, _ = app
    status, data, _ = request(server, method, path, body=b"{}" if method != "GET" else None)
    assert status == code and "error" in data
    assert healthy(server)


def test_concurrent_requests(app):
    server, _ = app
    body = {"pixels": stroke(60, 60).tolist()}
    results = []

    def worker():
        results.append(predict(server, body)[0])

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [200] * 8


# ----------------------------------------------------------------------------- construction


def test_model_failure_is_500_and_server_survives():
    server, thread = start(Broken())
    try:
        status, data, _ = predict(server, {"pixels": stroke(30, 30).tolist()})
        assert status == 500 and "kaboom" in data["error"]
        assert healthy(server)
        status, data, _ = request(server, "GET", "/api/history")
        assert status == 200 and data == {}
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_make_server_checks_model():
    with pytest.raises(TypeError, match="predict_proba"):
        make_server(object(), port=0)

    class WrongSize(StandIn):
        layer_sizes = [100, 10]

    with pytest.raises(ValueError, match="784"):
        make_server(WrongSize(), port=0)


def test_history_from_file_and_helpers(tmp_path):
    model_path = tmp_path / "model.npz"
    assert history_path_for(model_path) == tmp_path / "model.history.json"
    assert history_path_for(tmp_path / "model") == tmp_path / "model.history.json"
    assert load_history(model_path) == {}
    (tmp_path / "model.history.json").write_text(json.dumps({"loss": [1.0, 0.5]}))
    assert load_history(model_path) == {"loss": [1.0, 0.5]}
    (tmp_path / "model.history.json").write_text("{not json")
    assert load_history(model_path) == {}

    class HistoryLike:
        def to_dict(self):
            return {"loss": [np.float32(0.25)]}

    server = make_server(StandIn(), port=0, history=HistoryLike())
    try:
        assert server.history == {"loss": [0.25]}
        assert server.url.startswith("http://127.0.0.1:")
    finally:
        server.server_close()


def test_history_defaults_to_the_models_own():
    class WithHistory(StandIn):
        class history:  # like Network.history: an object with to_dict()
            @staticmethod
            def to_dict():
                return {"loss": [0.5], "val_accuracy": [], "best_epoch": None}

    server = make_server(WithHistory(), port=0)
    try:
        assert server.history == {"loss": [0.5], "val_accuracy": [], "best_epoch": None}
    finally:
        server.server_close()
    server = make_server(WithHistory(), port=0, history={"loss": [1.0]})  # explicit wins
    try:
        assert server.history == {"loss": [1.0]}
    finally:
        server.server_close()


def test_serve_needs_a_model(tmp_path):
    with pytest.raises(ValueError, match="model"):
        serve(None, port=0)
    with pytest.raises(FileNotFoundError):
        serve(tmp_path / "absent.npz", port=0)


# ------------------------------------------------- raw requests: every client error is 4xx JSON


def raw_exchange(server, data, shut=True, timeout=20):
    """Send ``data`` as is on a fresh connection; return (status, parsed JSON or None, raw)."""
    conn = socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=timeout)
    try:
        conn.sendall(data)
        if shut:
            conn.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    finally:
        conn.close()
    head, _, body = reply.partition(b"\r\n\r\n")
    status = int(head.split()[1]) if head.startswith(b"HTTP/") else None
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    return status, data, reply


SMALL_BODY = json.dumps({"pixels": stroke(28, 28).tolist()}).encode()

# one row per case: raw request, expected status, fragment of the JSON error (None: no body)
RAW_CASES = [
    # http.server decodes headers as latin-1: byte 0xb2 is "²", and "²".isdigit() is True
    ("superscript-two", b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: \xb2\r\n\r\n",
     400, "whole number"),
    ("superscript-one-two", b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1\xb9\r\n\r\n",
     400, "whole number"),
    ("options", b"OPTIONS /api/predict HTTP/1.1\r\nHost: x\r\n\r\n", 204, None),
    ("trace", b"TRACE / HTTP/1.1\r\nHost: x\r\n\r\n", 405, "not allowed"),
    ("unknown-method", b"BREW / HTTP/1.1\r\nHost: x\r\n\r\n", 501, "not supported"),
    ("garbage-request-line", b"\x00\x01\x02 nonsense\r\n\r\n", 400, ""),
]


@pytest.mark.parametrize("name, data, code, fragment", RAW_CASES, ids=[c[0] for c in RAW_CASES])
def test_raw_requests(app, name, data, code, fragment):
    server, _ = app
    status, body, reply = raw_exchange(server, data)
    assert status == code, reply[:300]
    if fragment is not None:
        assert b"text/html" not in reply and body is not None and fragment in body["error"], reply
    assert healthy(server)


def test_body_shorter_than_content_length_times_out_with_408():
    server, thread = start(StandIn())
    server.body_deadline = 0.5
    try:
        t0 = time.perf_counter()
        # the client keeps the connection open but never sends the rest of its body
        status, body, reply = raw_exchange(
            server, b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{\"pi",
            shut=False)
        assert status == 408 and "in time" in body["error"], reply
        assert time.perf_counter() - t0 < 5
        assert healthy(server)
    finally:
        server.shutdown()
        server.server_close()


def test_trickled_body_hits_the_deadline():
    """1 byte every 0.2 s: each read succeeds, but the whole body has a deadline."""
    server, thread = start(StandIn())
    server.body_deadline = 1.0
    conn = socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=10)
    try:
        conn.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        t0 = time.perf_counter()
        reply = b""
        conn.settimeout(0.2)
        while time.perf_counter() - t0 < 8:
            try:
                conn.sendall(b" ")
            except OSError:
                pass
            try:
                chunk = conn.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            if not chunk:
                break
            reply += chunk
        assert reply.startswith(b"HTTP/1.0 408") or reply.startswith(b"HTTP/1.1 408"), reply
        assert time.perf_counter() - t0 < 5
    finally:
        conn.close()
        server.shutdown()
        server.server_close()


def test_listen_backlog_and_large_body_slots():
    from fastmlp.web import server as module

    server, thread = start(StandIn())
    try:
        assert server.request_queue_size >= 128  # socketserver's default 5 resets bursts
        # every large-body slot taken: the next large request waits, then gets 503
        for _ in range(module.MAX_LARGE_BODIES):
            server.large_bodies.acquire()
        server.body_deadline = 0.3
        big = b"{\"pixels\": [[" + b"0," * (module.LARGE_BODY_BYTES // 2) + b"1]]}"
        status, data, _ = predict(server, big)
        assert status == 503 and "retry" in data["error"]
        for _ in range(module.MAX_LARGE_BODIES):
            server.large_bodies.release()
        status, data, _ = predict(server, big)
        assert status == 413  # now read and parsed: one row is wider than MAX_SIDE
    finally:
        server.shutdown()
        server.server_close()


def test_health_reports_the_test_accuracy():
    history = dict(HISTORY, run={"test_accuracy": 0.9812, "dataset": "mnist",
                                 "classes": [str(i) for i in range(10)],
                                 "recipe": {"hidden": [8]}})
    server, thread = start(StandIn(), history=history)
    try:
        status, data, _ = request(server, "GET", "/api/health")
        assert status == 200 and data["test_accuracy"] == pytest.approx(0.9812)
        status, data, _ = request(server, "GET", "/api/history")
        assert data["run"]["test_accuracy"] == pytest.approx(0.9812)
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("content", [
    "[" * 100000 + "]" * 100000,
    '{"loss": "abc", "accuracy": [[1, 2]], "run": [1]}',
    '{"loss": [0.5, {"x": 1}], "run": {"test_accuracy": "high", "dataset": {"a": "' + "[" * 5000 + '"}}}',
    '"just a string"',
])
def test_damaged_history_json_does_not_stop_serving(tmp_path, content):
    (tmp_path / "m.history.json").write_text(content)
    history = load_history(tmp_path / "m.npz")
    assert isinstance(history, dict)
    server, thread = start(StandIn(), history=history)
    try:
        assert healthy(server)
        status, data, _ = request(server, "GET", "/api/history")
        assert status == 200 and isinstance(data, dict)
        assert not isinstance(data.get("loss", []), str)
    finally:
        server.shutdown()
        server.server_close()


def test_port_in_use_is_one_clear_message():
    server, thread = start(StandIn())
    try:
        with pytest.raises(OSError, match="already in use.*--port"):
            make_server(StandIn(), port=server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------- convolutional networks: the first conv maps


def decode_maps(fm):
    """The feature_maps record back to float maps ``(n, h, w)`` (to within one 255th step)."""
    import base64

    q = np.frombuffer(base64.b64decode(fm["data"]), dtype=np.uint8)
    assert q.size == int(np.prod(fm["shape"]))
    q = q.reshape(fm["shape"]).astype(np.float64)
    low, high = np.array(fm["range"]).T
    return low[:, None, None] + q / 255 * (high - low)[:, None, None]


def serve_saved(net, folder):
    """``net`` saved to ``folder``, loaded back and served on 127.0.0.1 until the generator
    is closed: yields ``(server, model)`` (a fixture's body)."""
    from fastmlp.network import Network

    path = folder / "model.npz"
    net.save(path)
    model = Network.load(path)
    server, thread = start(model, history=load_history(path) or None)
    assert server.server_address[0] == "127.0.0.1"
    yield server, model
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture(scope="module")
def cnn_app(tmp_path_factory):
    """A tiny CNN saved to a tmp folder, loaded back and served on 127.0.0.1."""
    from fastmlp import Conv2D, MaxPool2D
    from fastmlp.network import Network

    net = Network([(1, 28, 28), Conv2D(3, 3, padding=1), MaxPool2D(2), Conv2D(4, 3), 10],
                  seed=0)
    yield from serve_saved(net, tmp_path_factory.mktemp("cnn"))


CNN_ARCHITECTURES = {  # what /api/health says of each served CNN
    "cnn_app": "[(1, 28, 28), Conv2D(3, 3, padding=1), MaxPool2D(2), Conv2D(4, 3), 10]",
    "bn_cnn_app": "[(1, 28, 28), Dropout(0.1), Conv2D(3, 3, padding=1), BatchNorm(), "
                  "AvgPool2D(2), Dropout(0.25), Conv2D(4, 3), BatchNorm(eps=0.001), 10]",
}


@pytest.fixture(params=list(CNN_ARCHITECTURES))
def any_cnn_app(request):
    """``(architecture, server, model)`` for each served CNN."""
    return (CNN_ARCHITECTURES[request.param], *request.getfixturevalue(request.param))


def test_cnn_health_names_the_architecture(any_cnn_app):
    architecture, server, model = any_cnn_app
    status, data, _ = request(server, "GET", "/api/health")
    assert status == 200
    assert data["architecture"] == architecture
    assert data["layer_sizes"] == model.layer_sizes and data["status"] == "ok"


def test_cnn_predict_returns_the_first_conv_maps(cnn_app):
    server, model = cnn_app
    pixels = stroke()
    status, data, _ = predict(server, {"pixels": pixels.round(3).tolist()})
    assert status == 200, data
    fm = data["feature_maps"]
    assert fm["layer"] == 1 and fm["channels"] == 3 and fm["step"] == 1
    assert fm["shape"] == [3, 28, 28] and len(fm["range"]) == 3
    assert fm["name"] == "Conv2D(3, 3, padding=1), relu"
    x = to_mnist(pixels.round(3)).reshape(1, 784).astype(np.float32)
    outputs = model.forward(x)
    expected = outputs[0].reshape(3, 28, 28)
    spans = np.array([hi - lo for lo, hi in fm["range"]])
    assert (spans > 0).all()  # an untrained ReLU layer still fires somewhere on a stroke
    np.testing.assert_allclose(decode_maps(fm), expected, rtol=0,
                               atol=spans.max() / 255 * 0.5 + 1e-6)
    for (lo, hi), m in zip(fm["range"], expected):
        assert lo == pytest.approx(min(0.0, m.min()), abs=1e-6)
        assert hi == pytest.approx(max(0.0, m.max()), abs=1e-6)
    np.testing.assert_allclose(data["probabilities"], model.predict_proba(x)[0], atol=1e-6)
    assert data["label"] == int(np.argmax(model.predict_proba(x)[0]))
    assert np.array(data["input"]).shape == (28, 28)


def serve_briefly(model, pixels):
    """Start a server for ``model``, send one predict, stop it; return (status, data, body size)."""
    server, thread = start(model)
    try:
        body = json.dumps({"pixels": pixels.round(3).tolist()}).encode()
        status, data, headers = request(server, "POST", "/api/predict", body,
                                        {"Content-Type": "application/json"})
        return status, data, int(headers["Content-Length"])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_cnn_maps_of_a_later_conv_layer_with_negative_values():
    """The first *conv* layer, wherever it sits (here after a pool); tanh maps go below 0."""
    from fastmlp import Conv2D, MaxPool2D
    from fastmlp.network import Network

    net = Network([(1, 28, 28), MaxPool2D(2), Conv2D(2, 3), 8, 10],
                  activations=["tanh", "relu", "softmax"], seed=1)
    status, data, _ = serve_briefly(net, stroke())
    assert status == 200, data
    fm = data["feature_maps"]
    assert fm["layer"] == 2 and fm["shape"] == [2, 12, 12] and fm["channels"] == 2
    assert fm["name"] == "Conv2D(2, 3), tanh"
    x = to_mnist(stroke().round(3)).reshape(1, 784).astype(np.float32)
    expected = net.forward(x)[1].reshape(2, 12, 12)
    assert min(lo for lo, _ in fm["range"]) < 0  # tanh of negative sums where weights are < 0
    spans = np.array([hi - lo for lo, hi in fm["range"]])
    np.testing.assert_allclose(decode_maps(fm), expected, atol=spans.max() / 255 * 0.5 + 1e-6)


def test_cnn_maps_are_bounded():
    """A wide, padded first layer: at most MAX_MAPS maps, subsampled to <= MAX_MAP_SIDE."""
    from fastmlp import Conv2D
    from fastmlp.network import Network
    from fastmlp.web.server import MAX_MAP_SIDE, MAX_MAPS

    net = Network([(1, 28, 28), Conv2D(MAX_MAPS + 8, 3, padding=20), 10], seed=2)  # 66 x 66
    status, data, size = serve_briefly(net, stroke())
    assert status == 200, data
    fm = data["feature_maps"]
    step = -(-66 // MAX_MAP_SIDE)
    assert fm["channels"] == MAX_MAPS + 8 and fm["step"] == step == 2
    assert fm["shape"] == [MAX_MAPS, 33, 33]
    x = to_mnist(stroke().round(3)).reshape(1, 784).astype(np.float32)
    expected = net.forward(x)[0].reshape(MAX_MAPS + 8, 66, 66)[:MAX_MAPS, ::step, ::step]
    spans = np.array([hi - lo for lo, hi in fm["range"]])
    np.testing.assert_allclose(decode_maps(fm), expected, atol=spans.max() / 255 * 0.5 + 1e-6)
    # 32 maps of 56 x 56 bytes in base64, plus the 28x28 input and the rest: well under 200 kB
    assert size < 200_000


def test_cnn_flat_maps_scale_from_zero_and_dead_maps_are_zero_not_nan():
    from fastmlp import Conv2D, MaxPool2D
    from fastmlp.network import Network

    net = Network([(1, 28, 28), Conv2D(2, 5), MaxPool2D(2), 10], seed=3)
    net.weights[0][...] = 0.0
    net.biases[0][...] = [0.0, 1.5]  # map 0: all 0 (dead); map 1: 1.5 everywhere
    status, data, _ = serve_briefly(net, stroke())
    assert status == 200, data
    fm = data["feature_maps"]
    assert fm["range"] == [[0.0, 0.0], [0.0, 1.5]]  # the range always holds 0
    maps = decode_maps(fm)
    assert not maps[0].any()
    np.testing.assert_allclose(maps[1], 1.5)


def test_mlp_network_responses_have_no_cnn_fields():
    from fastmlp.network import Network

    net = Network([784, 8, 10], seed=0)
    server, thread = start(net)
    try:
        status, data, _ = request(server, "GET", "/api/health")
        assert status == 200 and data == {"status": "ok", "layer_sizes": [784, 8, 10],
                                          "test_accuracy": None}
        status, data, _ = predict(server, {"pixels": stroke().round(3).tolist()})
        assert status == 200 and set(data) == {"label", "probabilities", "input", "hint"}
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_make_server_refuses_a_cnn_of_another_image_shape():
    from fastmlp import Conv2D
    from fastmlp.network import Network

    net = Network([(1, 14, 56), Conv2D(2, 3), 10], seed=0)  # 784 inputs, but not 28 x 28
    with pytest.raises(ValueError, match=r"\(1, 14, 56\)"):
        make_server(net, port=0)


# ----------------------------------------------------------------------------- slow headers


def _trickle(server, data, every, limit):
    """Send ``data`` a byte every ``every`` seconds on a fresh connection, reading whatever
    comes back, for at most ``limit`` seconds; return (reply, seconds until the server
    answered or closed, or None if it never did)."""
    conn = socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=10)
    conn.settimeout(every)
    t0 = time.perf_counter()
    reply, closed_at = b"", None
    try:
        for byte in data:
            if time.perf_counter() - t0 > limit:
                break
            try:
                conn.sendall(bytes([byte]))
            except OSError:
                closed_at = time.perf_counter() - t0
                break
            try:
                chunk = conn.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                chunk = b""
            reply += chunk
            if not chunk or reply:
                closed_at = time.perf_counter() - t0
                break
        if closed_at is not None:
            conn.settimeout(2)
            try:
                while chunk := conn.recv(65536):
                    reply += chunk
            except OSError:
                pass
    finally:
        conn.close()
    return reply, closed_at


def test_trickled_headers_hit_the_header_deadline():
    """A client sending its request line and headers a byte every 0.1 s (each read
    succeeds, so a per-read timeout never fires) gets 408 at the header deadline."""
    server, thread = start(StandIn())
    server.header_deadline = 0.6
    try:
        request_head = (b"GET /api/health HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 200
                        + b"\r\n\r\n")
        reply, seconds = _trickle(server, request_head, every=0.1, limit=6)
        assert seconds is not None and seconds < 3, (seconds, reply)
        assert reply.startswith(b"HTTP/1.0 408") or reply.startswith(b"HTTP/1.1 408"), reply
        assert b"headers not received" in reply and b"text/html" not in reply, reply
        assert healthy(server)
    finally:
        server.shutdown()
        server.server_close()


def test_trickled_request_line_hits_the_header_deadline():
    server, thread = start(StandIn())
    server.header_deadline = 0.5
    try:
        reply, seconds = _trickle(server, b"GET /" + b"a" * 300 + b" HTTP/1.1\r\n\r\n",
                                  every=0.1, limit=6)
        assert seconds is not None and seconds < 3, (seconds, reply)
        assert b" 408 " in reply.split(b"\r\n")[0], reply
    finally:
        server.shutdown()
        server.server_close()


def test_idle_connection_is_closed_silently_at_the_header_deadline():
    """A connection that sends nothing (an idle keep-alive) is closed, with no answer."""
    server, thread = start(StandIn())
    server.header_deadline = 0.5
    conn = socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=5)
    try:
        t0 = time.perf_counter()
        assert conn.recv(100) == b""
        assert time.perf_counter() - t0 < 3
    finally:
        conn.close()
        server.shutdown()
        server.server_close()


def test_keep_alive_requests_each_get_the_header_deadline():
    """The deadline is per request: a second request on the same connection, sent after a
    pause shorter than the deadline, is answered as usual."""
    server, thread = start(StandIn())
    server.header_deadline = 1.0
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
    try:
        for _ in range(2):
            conn.request("GET", "/api/health")
            resp = conn.getresponse()
            assert resp.status == 200 and json.loads(resp.read())["status"] == "ok"
            time.sleep(0.6)
    finally:
        conn.close()
        server.shutdown()
        server.server_close()


# --------------------------------------- BatchNorm, AvgPool2D and Dropout layers in the network


def bn_statistics(net, X):
    """Running statistics near what each BatchNorm sees for inputs like X, γ and β away from
    1 and 0: a trained network's, not the initial ones."""
    rng = np.random.default_rng(0)
    rows = [k for k, layer in enumerate(net._layers) if layer.kind == "batchnorm"]
    for bn, k in zip(net.batch_norms, rows):
        c = bn.gamma.size
        z = net.forward(X)[k - 1].reshape(len(X), c, -1).astype(np.float64)
        bn.running_mean = z.mean(axis=(0, 2))
        bn.running_var = z.var(axis=(0, 2)) * rng.uniform(0.5, 2, c)
        bn.gamma = rng.uniform(0.5, 1.5, c)
        bn.beta = rng.normal(0, 0.5, c)


@pytest.fixture(scope="module")
def bn_cnn_app(tmp_path_factory):
    """A CNN with conv -> BN -> ReLU blocks, both poolings and dropout, saved and loaded."""
    from fastmlp import AvgPool2D, BatchNorm, Conv2D, Dropout
    from fastmlp.network import Network

    net = Network([(1, 28, 28), Dropout(0.1), Conv2D(3, 3, padding=1), BatchNorm(),
                   AvgPool2D(2), Dropout(0.25), Conv2D(4, 3), BatchNorm(eps=1e-3), 10], seed=0)
    bn_statistics(net, np.stack([to_mnist(stroke(60 + 7 * k, 140)).reshape(784)
                                 for k in range(8)]).astype(np.float32))
    yield from serve_saved(net, tmp_path_factory.mktemp("bn"))


def test_bn_cnn_maps_are_the_blocks_output(bn_cnn_app):
    """conv -> BN -> ReLU: the maps are the BatchNorm's output (the block's), not the conv's
    pre-activation; the layer index and the name say so."""
    server, model = bn_cnn_app
    pixels = stroke()
    status, data, _ = predict(server, {"pixels": pixels.round(3).tolist()})
    assert status == 200, data
    fm = data["feature_maps"]
    assert fm["layer"] == 3 and fm["channels"] == 3 and fm["shape"] == [3, 28, 28]
    assert fm["name"] == "Conv2D(3, 3, padding=1), BatchNorm(), relu"
    x = to_mnist(pixels.round(3)).reshape(1, 784).astype(np.float32)
    outputs = model.forward(x)
    expected = outputs[2].reshape(3, 28, 28)  # the BatchNorm's row: after BN and ReLU
    assert expected.min() == 0 and not np.allclose(expected, outputs[1].reshape(3, 28, 28))
    spans = np.array([hi - lo for lo, hi in fm["range"]])
    assert (spans > 0).all()
    np.testing.assert_allclose(decode_maps(fm), expected, rtol=0,
                               atol=spans.max() / 255 * 0.5 + 1e-6)
    proba = model.predict_proba(x)[0]
    assert proba.max() < 0.99  # not saturated: the BatchNorms' numbers matter
    np.testing.assert_allclose(data["probabilities"], proba, atol=1e-6)
    assert data["label"] == int(np.argmax(proba))


def test_mlp_with_batchnorm_and_dropout_names_its_layers():
    """An MLP given as a layer list: its architecture (layer_sizes alone would read
    784-16-16-16-10), and no feature maps."""
    from fastmlp import BatchNorm, Dropout
    from fastmlp.network import Network

    net = Network([784, 16, BatchNorm(), Dropout(0.5), 10], seed=0)
    bn_statistics(net, to_mnist(stroke()).reshape(1, 784).astype(np.float32).repeat(4, 0)
                  + np.random.default_rng(1).random((4, 784), dtype=np.float32) * 0.2)
    server, thread = start(net)
    try:
        status, data, _ = request(server, "GET", "/api/health")
        assert status == 200 and data == {
            "status": "ok", "layer_sizes": [784, 16, 16, 16, 10], "test_accuracy": None,
            "architecture": "[784, 16, BatchNorm(), Dropout(0.5), 10]"}
        status, data, _ = predict(server, {"pixels": stroke().round(3).tolist()})
        assert status == 200 and set(data) == {"label", "probabilities", "input", "hint"}
        x = to_mnist(stroke().round(3)).reshape(1, 784).astype(np.float32)
        np.testing.assert_allclose(data["probabilities"], net.predict_proba(x)[0], atol=1e-6)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
