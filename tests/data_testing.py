"""Helpers for the dataset tests: IDX files made on the spot and a local HTTP server.

Nothing here touches the network: the server listens on 127.0.0.1 in a thread
and serves whatever each test puts in its routes, well or badly.
"""

import gzip
import hashlib
import http.server
import socket
import threading
from dataclasses import dataclass

import numpy as np
import pytest

IDX_TYPE_BYTES = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}


def idx_bytes(array):
    """The IDX encoding of ``array``, written from the format's definition."""
    array = np.asarray(array)
    header = bytes([0, 0, IDX_TYPE_BYTES[array.dtype.str[1:]], array.ndim])
    header += b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def fake_mnist(n_train=12, n_test=5, seed=0):
    """Random arrays shaped like MNIST's four files, keyed by role."""
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def gzipped(data, level=9):
    # mtime=0: the same bytes every time, so digests of gzip files are stable.
    return gzip.compress(data, compresslevel=level, mtime=0)


@dataclass
class Route:
    """What the server does for one path.

    mode: "ok" serves ``body``; "status" answers ``status`` with no body;
    "stall" accepts the connection and sends nothing; "stall_body" sends the
    headers and half the body, then nothing; "truncate" announces the full
    length, sends half and closes the connection.
    """

    body: bytes = b""
    mode: str = "ok"
    status: int = 200


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        server = self.server
        server.requests.append(self.path)
        route = server.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        if route.mode == "status":
            self.send_error(route.status)
            return
        if route.mode == "stall":
            server.release.wait(30)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(route.body)))
        self.end_headers()
        if route.mode == "ok":
            self.wfile.write(route.body)
            return
        self.wfile.write(route.body[: len(route.body) // 2])
        self.wfile.flush()
        if route.mode == "stall_body":
            server.stalled.set()
            server.release.wait(30)
        # "truncate": returning closes the HTTP/1.0 connection early.

    def log_message(self, *args):
        pass


class LocalServer:
    """``with LocalServer() as server``: an HTTP server on 127.0.0.1 in a thread.

    ``server.routes[path] = Route(...)`` sets what a path serves,
    ``server.url(path)`` is its URL, ``server.requests`` lists the paths asked for,
    ``server.stalled`` is set once a "stall_body" route has sent its first half.
    """

    def __enter__(self):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.routes = self.routes = {}
        self.httpd.requests = self.requests = []
        self.httpd.release = threading.Event()
        self.stalled = self.httpd.stalled = threading.Event()
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()
        return self

    def url(self, path):
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}{path}"

    def __exit__(self, *exc):
        self.httpd.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """Keep a proxy configured in the environment away from 127.0.0.1 (autouse where imported)."""
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.delenv("NO_PROXY", raising=False)


def refused_url(path="/file"):
    """A URL on 127.0.0.1 where nothing listens: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"
