"""A projected stream that does not exist yet (issue 11: NOTIFICATION before notification ever ran).

``GATEWAY_STREAMS`` lists NOTIFICATION by default. Until its service creates it,
the gateway must be ready, project the other streams, and pick it up once it
appears, so a trace then shows the emails.
"""

from __future__ import annotations

import pytest
from nats.js import JetStreamContext

from choreo.bus import ensure_stream
from choreo.contract import fact_stream, fact_subject
from choreo.envelope import Envelope
from choreo.notification.v1 import events_pb2 as notification_events
from choreo.topology import Stream
from gateway.settings import GatewaySettings
from tests.gateway.conftest import StartGateway
from tests.gateway.test_projection import ensure_streams, workflow_facts
from tests.support import eventually, publish

NOTIFICATION = Stream(fact_stream(notification_events.NotificationSent), ("notification.>",))


def test_notification_is_projected_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_STREAMS", raising=False)
    assert GatewaySettings().stream_names == ["BOOKING", "PAYMENT", "NOTIFICATION", "INVENTORY"]
    assert NOTIFICATION.name == "NOTIFICATION"


async def test_a_stream_that_does_not_exist_yet_neither_blocks_readiness_nor_the_others(
    start_gateway: StartGateway, sqlite_url: str, js: JetStreamContext
) -> None:
    await ensure_streams(js)  # BOOKING, PAYMENT and DLQ; no NOTIFICATION
    before = await workflow_facts(js, "before")
    gateway = await start_gateway(sqlite_url, streams="BOOKING,PAYMENT,NOTIFICATION")
    assert gateway.readiness is not None and gateway.store is not None
    store = gateway.store
    assert await gateway.readiness.failures() == {}
    view = await store.get("before")
    assert view is not None and view.is_terminal  # the initial replay of the others is complete

    # The other feeds keep projecting live facts while NOTIFICATION is missing.
    await workflow_facts(js, "during")

    async def during_projected() -> bool:
        view = await store.get("during")
        return view is not None and view.is_terminal

    await eventually(during_projected)
    assert await gateway.readiness.failures() == {}

    # notification starts: its stream appears, and its first fact shows in the workflow's trace.
    await ensure_stream(js, NOTIFICATION)
    sent = Envelope.wrap(
        notification_events.NotificationSent(
            booking_id="before",
            kind=notification_events.NOTIFICATION_KIND_BOOKING_CONFIRMED,
            recipient="ada@example.com",
            message_id="<x@choreo>",
            status=notification_events.NOTIFICATION_STATUS_SENT,
        ),
        source="notification",
        subject=fact_subject(notification_events.NotificationSent),
        correlation_id=before[0].correlation_id,
        causation_id=before[2].id,
    )
    await publish(js, sent)

    async def email_in_trace() -> bool:
        trace = await store.trace(before[0].correlation_id)
        return any(e.stream == "NOTIFICATION" and e.event_id == sent.id for e in trace)

    await eventually(email_in_trace, timeout=15)
    feed = next(f for f in gateway.feeds if f.stream == "NOTIFICATION")
    assert feed.position == 1 and feed.dead_lettered == 0
    assert await gateway.readiness.failures() == {}
    view = await store.get("before")
    assert view is not None and view.is_terminal  # a notification fact changes no booking
