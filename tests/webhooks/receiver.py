"""A real webhook receiver on loopback that verifies every request with the
reference `standardwebhooks` package, and can be down, failing or hanging."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass
class Received:
    message_id: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    # False when the sender died mid-request (SIGKILL): a cut body is no delivery
    complete: bool = True

    @property
    def payload(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


@dataclass
class Receiver:
    secret: str
    port: int = 0
    status: int = 200
    hang: threading.Event | None = None  # the first request waits for this
    received: list[Received] = field(default_factory=list)
    got_request: threading.Event = field(default_factory=threading.Event)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    Webhook(receiver.secret).verify(body, headers)
                    verified = True
                except WebhookVerificationError:
                    verified = False
                with receiver._lock:
                    first = not receiver.received
                    receiver.received.append(
                        Received(
                            headers.get("webhook-id", ""),
                            headers,
                            body,
                            verified,
                            len(body) == length,
                        )
                    )
                receiver.got_request.set()
                if first and receiver.hang is not None:
                    receiver.hang.wait(30)
                status = receiver.status if verified else 401
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok" if status < 300 else b"no thanks")

            def log_message(self, *_: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = int(server.server_address[1])
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def ids(self) -> list[str]:
        with self._lock:
            return [r.message_id for r in self.received]

    def verified(self) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.verified]
