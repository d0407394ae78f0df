"""The draw-a-digit server under concurrent load: connection resets and latency percentiles.

Run as a script for the numbers (127.0.0.1 only; every client opens a fresh connection per
request, as browsers behind a page reload do)::

    python benchmarks/bench_server.py                       # 50 clients x 20 requests
    python benchmarks/bench_server.py --baseline OLD.py     # the same against another server.py
                                                            # (e.g. `git show HEAD:fastmlp/web/server.py > /tmp/old.py`)

It prints requests, failures (connection resets / refusals / timeouts), p50, p99 and max
latency. ``--slow-headers`` measures instead how long one client that sends its request line
and headers a byte a second holds a server thread (bounded by ``--limit`` seconds)::

    python benchmarks/bench_server.py --slow-headers                  # this server.py
    python benchmarks/bench_server.py --slow-headers --baseline OLD.py

Under pytest (``pytest benchmarks/bench_server.py``) it runs once, small, so the suite
keeps it working; speed is not asserted anywhere.

The server runs in a child process (so the clients' threads do not share its GIL) with a
stand-in model: the point is the HTTP layer (listen backlog, threads, body reading), not
the network's arithmetic.
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import json
import multiprocessing
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np

HOST = "127.0.0.1"  # never anything else: this is a load generator


class _StandIn:
    layer_sizes = [784, 16, 10]

    def predict_proba(self, X):
        p = np.full((X.shape[0], 10), 0.02, dtype=np.float32)
        p[:, 7] = 0.82
        return p


def _server_module(path):
    if path is None:
        from fastmlp.web import server

        return server
    # Loaded as a sibling of fastmlp.web.server so its relative imports resolve.
    spec = importlib.util.spec_from_file_location("fastmlp.web._bench_baseline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _serve(path, port_queue, header_deadline=None):
    server = _server_module(path).make_server(_StandIn(), host=HOST, port=0)
    if header_deadline is not None:
        server.header_deadline = header_deadline  # servers without one ignore it
    port_queue.put(server.server_address[1])
    server.serve_forever()


def _start_server(baseline, header_deadline=None):
    ctx = multiprocessing.get_context("spawn")
    ports = ctx.Queue()
    proc = ctx.Process(target=_serve, args=(baseline, ports, header_deadline), daemon=True)
    proc.start()
    return proc, ports


def _body():
    a = np.zeros((140, 140))
    for i in range(28, 112):
        j = 70 + (i - 70) // 4
        a[i, j - 6:j + 6] = 1.0
    return json.dumps({"pixels": a.tolist()}).encode()


def load_test(clients=50, requests=20, baseline=None, timeout=10.0):
    """Start the server, run ``clients`` threads of ``requests`` POSTs each (all released at
    once), return a dict of counts and latency percentiles in milliseconds."""
    proc, ports = _start_server(baseline)
    try:
        port = ports.get(timeout=60)
        body = _body()
        latencies, failures = [], {}
        lock = threading.Lock()
        start = threading.Barrier(clients)

        def client():
            start.wait()
            for _ in range(requests):
                t0 = time.perf_counter()
                try:
                    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
                    conn.request("POST", "/api/predict", body,
                                 {"Content-Type": "application/json", "Connection": "close"})
                    resp = conn.getresponse()
                    resp.read()
                    conn.close()
                    ok = resp.status == 200
                    why = None if ok else f"HTTP {resp.status}"
                except OSError as exc:  # resets, refusals, timeouts
                    why = type(exc).__name__
                dt = time.perf_counter() - t0
                with lock:
                    if why is None:
                        latencies.append(dt)
                    else:
                        failures[why] = failures.get(why, 0) + 1

        threads = [threading.Thread(target=client) for _ in range(clients)]
        t_start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t_start
    finally:
        proc.terminate()
        proc.join(10)
    ms = np.array(latencies) * 1e3
    pct = (lambda q: float(np.percentile(ms, q))) if len(ms) else (lambda q: float("nan"))
    return {"requests": clients * requests, "ok": len(latencies),
            "failed": sum(failures.values()), "failures": failures,
            "wall_s": wall, "p50_ms": pct(50), "p99_ms": pct(99), "max_ms": float(ms.max()) if len(ms) else 0}


def slow_headers(baseline=None, every=1.0, limit=30.0, header_deadline=None):
    """How long one client that sends its request line and headers one byte every ``every``
    seconds holds a server thread: the seconds until the server answers or closes the
    connection, or ``limit`` (the loop's bound) if it still holds it then. Returns a dict
    with ``held_s``, ``released`` (False: still held at ``limit``) and the status line."""
    proc, ports = _start_server(baseline, header_deadline)
    head = b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 10_000
    try:
        port = ports.get(timeout=60)
        conn = socket.create_connection((HOST, port), timeout=every)
        t0 = time.perf_counter()
        reply, released = b"", False
        try:
            for byte in head:  # bounded: the loop ends at `limit` seconds at the latest
                if time.perf_counter() - t0 >= limit:
                    break
                try:
                    conn.sendall(bytes([byte]))
                    chunk = conn.recv(65536)
                except socket.timeout:
                    continue
                except OSError:  # reset: the server closed it
                    released = True
                    break
                reply += chunk
                released = True  # an answer, or b"" (closed)
                break
            held = time.perf_counter() - t0
        finally:
            conn.close()
    finally:
        proc.terminate()
        proc.join(10)
    return {"held_s": held, "released": released,
            "status": reply.split(b"\r\n", 1)[0].decode("latin-1")}


def test_slow_headers_small():
    """The slow-header measurement, small: a 0.5 s header deadline releases the thread."""
    result = slow_headers(every=0.1, limit=5.0, header_deadline=0.5)
    assert result["released"] and result["held_s"] < 4, result
    assert " 408 " in result["status"] + " ", result


def test_server_load_small():
    """Runs the load generator once, small (the suite's smoke run); nothing is timed."""
    result = load_test(clients=5, requests=2)
    assert result["ok"] + result["failed"] == result["requests"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--requests", type=int, default=20, help="per client")
    p.add_argument("--baseline", type=Path, default=None,
                   help="a server.py to measure instead of fastmlp.web.server")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--slow-headers", action="store_true",
                   help="measure how long a client sending headers at 1 byte/s holds a thread")
    p.add_argument("--limit", type=float, default=30.0,
                   help="--slow-headers: stop measuring after this many seconds")
    args = p.parse_args(argv)
    if args.slow_headers:
        for _ in range(args.repeat):
            r = slow_headers(args.baseline, every=1.0, limit=args.limit)
            held = (f"{r['held_s']:.1f} s, then {r['status'] or 'closed'}" if r["released"]
                    else f"still held after {r['held_s']:.1f} s (the --limit)")
            print(f"{args.baseline or 'fastmlp.web.server'}: a client sending headers at "
                  f"1 byte/s held a thread {held}", flush=True)
        return
    for _ in range(args.repeat):
        r = load_test(args.clients, args.requests, args.baseline)
        print(f"{args.baseline or 'fastmlp.web.server'}: {r['requests']} requests, "
              f"{r['failed']} failed {r['failures'] or ''} in {r['wall_s']:.1f} s, p50 {r['p50_ms']:.1f} ms, "
              f"p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.1f} ms", flush=True)


if __name__ == "__main__":
    sys.exit(main())
