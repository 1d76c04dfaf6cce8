"""A webhook receiver on loopback for tests of alert delivery: what it got, and a way to
make its first answers fail (to see retries)."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Received:
    posts: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    fail_first: int = 0  # answer 503 to this many posts first

    def json(self) -> list[Any]:
        return [json.loads(body) for _, body in self.posts]


@contextlib.contextmanager
def webhook_receiver() -> Iterator[tuple[str, Received]]:
    got = Received()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if got.fail_first > 0:
                got.fail_first -= 1
                self.send_response(503)
            else:
                got.posts.append((dict(self.headers), body))
                self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", got
    finally:
        server.shutdown()


class NoDelivery:
    """A deliverer that sends nothing: for tests of what raises alerts, not of delivery."""

    def send(self, alert: object) -> None:
        pass
