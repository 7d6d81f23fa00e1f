"""A stand-in for the notification, analytics or inventory service under a real ``choreo up``.

Run as ``python -m notification`` (or ``analytics``, ``inventory``) from a directory holding a
package of that name whose ``__main__`` calls ``main`` (``tests/cli/test_up_standins.py``
makes them), so ``choreo up`` starts it exactly as it starts the real service.
It reads its settings from the environment like the real one (``<SERVICE>_HEALTH_HOST``,
``<SERVICE>_HEALTH_PORT``), answers ``GET /readyz``, exits 0 on SIGTERM, and the
notification stand-in sends one email at start through ``NOTIFICATION_SMTP_HOST``
and ``NOTIFICATION_SMTP_PORT`` (plain SMTP, as ``NOTIFICATION_SMTP_SECURITY=none``
says), with the headers the real service sets.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import smtplib
import sys
from email.message import EmailMessage
from typing import Any

#: The booking id of the stand-in's email (``X-Choreo-Booking-Id``).
STANDIN_BOOKING = "standin-booking"


class _Ready(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"status": "ok"}).encode()
        self.send_response(200 if self.path == "/readyz" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _log(service: str, level: str, msg: str) -> None:
    print(json.dumps({"level": level, "service": service, "msg": msg}), flush=True)


def _send_hello(service: str) -> None:
    host = os.environ["NOTIFICATION_SMTP_HOST"]
    port = int(os.environ.get("NOTIFICATION_SMTP_PORT", "587"))
    if os.environ.get("NOTIFICATION_SMTP_SECURITY", "starttls") != "none":
        _log(service, "WARNING", "stand-in sends plain SMTP only")
        return
    msg = EmailMessage()
    msg["From"] = "standin@choreo.test"
    msg["To"] = "demo@example.com"
    msg["Subject"] = f"stand-in {service} pid {os.getpid()} started"
    msg["X-Choreo-Booking-Id"] = STANDIN_BOOKING
    msg.set_content("hello from the stand-in\n")
    with smtplib.SMTP(host, port, timeout=10) as client:
        client.send_message(msg)
    _log(service, "INFO", f"sent a message through {host}:{port}")


def main(service: str) -> None:
    prefix = service.upper()
    host = os.environ.get(f"{prefix}_HEALTH_HOST", "0.0.0.0")
    port = int(os.environ[f"{prefix}_HEALTH_PORT"])

    def on_term(signum: int, frame: object) -> None:
        _log(service, "INFO", "stopping")
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    if service == "notification":
        _send_hello(service)
    server = http.server.HTTPServer((host, port), _Ready)
    _log(service, "WARNING", f"stand-in {service} listening on {host}:{port}")
    server.serve_forever(poll_interval=0.05)


if __name__ == "__main__":
    main(sys.argv[1])
