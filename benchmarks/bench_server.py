"""The draw-a-digit server under concurrent load: connection resets and latency percentiles.

Run as a script for the numbers (127.0.0.1 only; every client opens a fresh connection per
request, as browsers behind a page reload do)::

    python benchmarks/bench_server.py                       # 50 clients x 20 requests
    python benchmarks/bench_server.py --baseline OLD.py     # the same against another server.py
                                                            # (e.g. `git show HEAD:fastmlp/web/server.py > /tmp/old.py`)

It prints requests, failures (connection resets / refusals / timeouts), p50, p99 and max
latency. Under pytest (``pytest benchmarks/bench_server.py``) it runs once, small, so the suite
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


def _serve(path, port_queue):
    server = _server_module(path).make_server(_StandIn(), host=HOST, port=0)
    port_queue.put(server.server_address[1])
    server.serve_forever()


def _body():
    a = np.zeros((140, 140))
    for i in range(28, 112):
        j = 70 + (i - 70) // 4
        a[i, j - 6:j + 6] = 1.0
    return json.dumps({"pixels": a.tolist()}).encode()


def load_test(clients=50, requests=20, baseline=None, timeout=10.0):
    """Start the server, run ``clients`` threads of ``requests`` POSTs each (all released at
    once), return a dict of counts and latency percentiles in milliseconds."""
    ctx = multiprocessing.get_context("spawn")
    ports = ctx.Queue()
    proc = ctx.Process(target=_serve, args=(baseline, ports), daemon=True)
    proc.start()
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
    args = p.parse_args(argv)
    for _ in range(args.repeat):
        r = load_test(args.clients, args.requests, args.baseline)
        print(f"{args.baseline or 'fastmlp.web.server'}: {r['requests']} requests, "
              f"{r['failed']} failed {r['failures'] or ''} in {r['wall_s']:.1f} s, p50 {r['p50_ms']:.1f} ms, "
              f"p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.1f} ms", flush=True)


if __name__ == "__main__":
    sys.exit(main())
