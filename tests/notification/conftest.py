"""Fixtures of the notification tests: a real SMTP server, the BOOKING stream, facts to publish."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.notification.smtpserver import SmtpServer


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()
