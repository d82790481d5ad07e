"""A fault-injecting HTTP proxy in front of an OpenAI-style server, run as its own process:

    python tests/fault_proxy.py UPSTREAM_BASE_URL [--rate 0.2] [--seed 0] [--max_faults 50]
        [--kinds 429,500,reset,truncated] [--retry_after 1] [--port 0]

It binds 127.0.0.1 only and prints its base URL (the upstream's path kept) on its first line. Each
request, drawn in arrival order from a seeded generator, is forwarded as it is or, with probability
`rate` and while fewer than `max_faults` were injected, answered with a fault: 429 with
`Retry-After`, 500, a connection reset, or a truncated body (forwarded, then cut short of its
Content-Length). `GET /fault_proxy/stats` answers the faults injected so far, the requests
forwarded and those of them answered in full."""

from __future__ import annotations

import argparse
import http.client
import json
import random
import socket
import struct
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

UPSTREAM_TIMEOUT_S = 600.0


class Faults:
    """The seeded draw of each request's fault, bounded by `max_faults`; counts what it did."""

    def __init__(self, rate: float, seed: int, max_faults: int, kinds: list[str]):
        self.rate, self.max_faults, self.kinds = rate, max_faults, kinds
        self.rng = random.Random(seed)
        self.injected: dict[str, int] = {}
        self.forwarded = self.answered = 0  # requests passed upstream; those of them answered
        self.lock = threading.Lock()

    def draw(self) -> str | None:
        with self.lock:
            fault = self.rng.choice(self.kinds) if self.rng.random() < self.rate else None
            if fault is None or sum(self.injected.values()) >= self.max_faults:
                self.forwarded += 1
                return None
            self.injected[fault] = self.injected.get(fault, 0) + 1
            return fault


class ProxyHandler(BaseHTTPRequestHandler):
    """Forwards to `upstream` (scheme, host, port), or injects the fault `faults` draws."""

    upstream: urllib.parse.SplitResult
    faults: Faults
    retry_after: str

    def log_message(self, *args) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        if self.path == "/fault_proxy/stats":
            with self.faults.lock:
                stats = {"injected": self.faults.injected, "forwarded": self.faults.forwarded,
                         "answered": self.faults.answered}
                reply(self, 200, json.dumps(stats).encode(), {})
            return
        self._handle(None)

    def do_POST(self) -> None:
        self._handle(self.rfile.read(int(self.headers.get("Content-Length", 0))))

    def _handle(self, body: bytes | None) -> None:
        fault = self.faults.draw()
        if fault == "reset":
            reset(self)
        elif fault in ("429", "500"):
            headers = {"Retry-After": self.retry_after} if fault == "429" else {}
            reply(self, int(fault), b'{"error": "injected by fault_proxy"}', headers)
        else:
            status, data, headers = self._forward(body)
            if fault == "truncated":
                reply(self, status, data[: len(data) // 2], {**headers, "Content-Length": str(len(data))})
                self.close_connection = True
            else:
                reply(self, status, data, headers)
                with self.faults.lock:
                    self.faults.answered += 1

    def _forward(self, body: bytes | None) -> tuple[int, bytes, dict]:
        connection = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=UPSTREAM_TIMEOUT_S)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "authorization")}
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            kept = {k: v for k, v in response.getheaders() if k.lower() in ("content-type", "retry-after")}
            return response.status, response.read(), kept
        finally:
            connection.close()



def reply(handler: BaseHTTPRequestHandler, status: int, data: bytes, headers: dict) -> None:
    """A JSON answer (`headers` may override its Content-Length)."""
    handler.send_response(status)
    for k, v in {"Content-Type": "application/json", "Content-Length": str(len(data)), **headers}.items():
        handler.send_header(k, v)
    handler.end_headers()
    handler.wfile.write(data)


def reset(handler: BaseHTTPRequestHandler) -> None:
    """An RST instead of an answer."""
    handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    handler.connection.close()
    handler.close_connection = True


def serve(upstream: str, faults: Faults, retry_after: str = "1", port: int = 0) -> ThreadingHTTPServer:
    """The proxy, serving in a thread; its base URL is `proxy_url(server, upstream)`."""
    handler = type("Bound", (ProxyHandler,), {"upstream": urllib.parse.urlsplit(upstream), "faults": faults,
                                              "retry_after": retry_after})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def proxy_url(server: ThreadingHTTPServer, upstream: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{urllib.parse.urlsplit(upstream).path}"


def main() -> None:
    parser = argparse.ArgumentParser(description="a seeded fault-injecting proxy on 127.0.0.1")
    parser.add_argument("upstream", help="the server's base URL, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--rate", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max_faults", type=int, default=50)
    parser.add_argument("--kinds", default="429,500,reset,truncated")
    parser.add_argument("--retry_after", default="1", help="the 429s' Retry-After (seconds)")
    parser.add_argument("--port", type=int, default=0, help="0: a free one")
    args = parser.parse_args()
    faults = Faults(args.rate, args.seed, args.max_faults, args.kinds.split(","))
    server = serve(args.upstream, faults, args.retry_after, args.port)
    print(proxy_url(server, args.upstream), flush=True)
    threading.Event().wait()  # until killed


if __name__ == "__main__":
    main()
