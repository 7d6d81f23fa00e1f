"""A stand-in for a service process, for testing the supervisor without the real services.

``python standin_service.py PORT MODE`` answers ``GET /readyz`` on PORT and
exits 0 on SIGTERM, like a service run by ``choreo.service.run_main``. MODE:
``normal``; ``ignore-term`` (ignores SIGTERM, so only SIGKILL stops it);
``crash`` (prints a traceback-like line and exits 3 at once); ``never-ready``
(answers 503); ``config-error`` (says what is wrong and exits 78, ``os.EX_CONFIG``).
"""

from __future__ import annotations

import http.server
import json
import signal
import sys
from typing import Any

PORT = int(sys.argv[1])
MODE = sys.argv[2] if len(sys.argv) > 2 else "normal"


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = 503 if MODE == "never-ready" else 200
        body = json.dumps({"status": "ok" if status == 200 else "unavailable"}).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def on_term(signum: int, frame: object) -> None:
    print(json.dumps({"level": "INFO", "service": "standin", "msg": "stopping"}), flush=True)
    raise SystemExit(0)


if __name__ == "__main__":
    if MODE == "crash":
        print("RuntimeError: stand-in crashed on purpose", flush=True)
        sys.exit(3)
    if MODE == "config-error":
        print(
            json.dumps({"level": "ERROR", "service": "standin", "msg": "X_DATABASE_URL: missing"}), flush=True
        )
        sys.exit(78)
    signal.signal(signal.SIGTERM, signal.SIG_IGN if MODE == "ignore-term" else on_term)
    server = http.server.HTTPServer(("127.0.0.1", PORT), Handler)
    print(json.dumps({"level": "WARNING", "service": "standin", "msg": f"listening on {PORT}"}), flush=True)
    server.serve_forever(poll_interval=0.05)
