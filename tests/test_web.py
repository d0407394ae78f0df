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
    assert status == 200 and data == {"status": "ok", "layer_sizes": [784, 16, 10]}
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
