"""The payment token leaves booking sealed to payment's key and is stored nowhere in the clear.

Attack (issue 9): every subscriber of the BOOKING stream (the gateway, an operator's
replay tool, anyone with read access) could read payment tokens in ``BookingCreated``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from sqlalchemy import select

from booking.build import build
from booking.create import CreateRequest, create_bookings
from booking.domain import request_fingerprint
from booking.migrations import MIGRATIONS
from booking.tables import bookings
from choreo.booking.v1 import commands_pb2, events_pb2
from choreo.db import make_engine
from choreo.outbox import outbox_table
from choreo.schema import prepare_schema
from choreo.sealing import (
    SealingError,
    TokenOpener,
    TokenSealer,
    generate_keypair,
    parse_private_keys,
    parse_public_key,
)
from choreoctl.stack.natsserver import NatsServer
from tests.booking.test_service import (  # noqa: F401 (payment_stream: an autouse fixture)
    create,
    payment_stream,
    settings,
)
from tests.support import (
    TOKEN_PRIVATE_KEY,
    TOKEN_PUBLIC_KEY,
    eventually,
    running,
    stream_count,
    stream_envelopes,
)

REPO = Path(__file__).resolve().parents[2]
#: A valid token nobody else uses, so finding its bytes anywhere means it leaked.
TOKEN = "tok_" + uuid.uuid4().hex


async def test_booking_created_carries_the_token_sealed_to_payment_only(
    nats_server: NatsServer, database_url: str, nc: NATS, js: JetStreamContext
) -> None:
    async with running(build(settings(nats_server, database_url))) as service:
        reply = await create(nc, payment_token=TOKEN, idempotency_key="k-sealed")
        await eventually(lambda: stream_count(js, "BOOKING"))
        assert service.engine is not None
        async with service.engine.connect() as conn:
            row = (await conn.execute(select(bookings))).mappings().one()
    raw = await js.get_msg("BOOKING", 1)
    # What every subscriber of the stream receives: no trace of the token.
    assert TOKEN.encode() not in (raw.data or b"")
    assert TOKEN not in str(raw.headers)
    [fact] = await stream_envelopes(js, "BOOKING")
    created = fact.decode(events_pb2.BookingCreated)
    assert created.payment_token == ""
    assert (
        TokenOpener(parse_private_keys(TOKEN_PRIVATE_KEY)).open(
            created.sealed_payment_token, bound_to=created.booking_id
        )
        == TOKEN
    )
    other_private, _ = generate_keypair()
    try:
        TokenOpener(parse_private_keys(other_private)).open(
            created.sealed_payment_token, bound_to=created.booking_id
        )
        raise AssertionError("a token opened with another key")
    except SealingError:
        pass
    # booking's own table holds no token, only the salted fingerprint the fact carries too.
    assert TOKEN not in str(dict(row))
    assert row["request_hash"] == created.request_fingerprint
    assert row["request_hash"] == request_fingerprint(1200, "USD", TOKEN, salt=reply.booking.booking_id)
    assert row["request_hash"] != request_fingerprint(1200, "USD", TOKEN)


async def test_the_outbox_row_and_the_booking_row_never_hold_the_token(database_url: str) -> None:
    """What booking writes to its database for a new booking: sealed fact, fingerprint, no token."""
    engine = make_engine(database_url)
    command = commands_pb2.CreateBookingCommand(
        user_id="u1", amount_cents=1200, currency="USD", payment_token=TOKEN, idempotency_key="k-db"
    )
    sealer = TokenSealer(parse_public_key(TOKEN_PUBLIC_KEY))
    try:
        await prepare_schema(engine, MIGRATIONS, mode="auto", service="booking", setting="BOOKING_MIGRATE")
        async with engine.begin() as conn:
            await create_bookings(conn, [CreateRequest(command, "wf-db", "cmd-db")], "booking", sealer)
        async with engine.connect() as conn:
            written = [
                dict(row)
                for table in (bookings, outbox_table)
                for row in (await conn.execute(select(table))).mappings()
            ]
    finally:
        await engine.dispose()
    assert len(written) == 2  # the booking and its fact, waiting in the outbox
    for row in written:
        for value in row.values():
            blob = value if isinstance(value, bytes) else str(value).encode()
            assert TOKEN.encode() not in blob, row


async def _at_least(js: JetStreamContext, n: int) -> bool:
    return await stream_count(js, "BOOKING") >= n


async def test_a_rebuilt_database_still_recognises_retries_without_the_token(
    nats_server: NatsServer, tmp_path: Path, nc: NATS, js: JetStreamContext
) -> None:
    """Rebuilt by replay, booking restores each request's fingerprint from the fact it published."""
    first_db = f"sqlite+aiosqlite:///{tmp_path / 'first.db'}"
    async with running(build(settings(nats_server, first_db))):
        first = await create(nc, payment_token=TOKEN, idempotency_key="k-rebuild")
        await eventually(lambda: stream_count(js, "BOOKING"))
    lost_db = f"sqlite+aiosqlite:///{tmp_path / 'rebuilt.db'}"  # the database was lost
    async with running(build(settings(nats_server, lost_db))):
        again = await create(nc, payment_token=TOKEN, idempotency_key="k-rebuild")
        other_card = await create(nc, payment_token="tok_visa", idempotency_key="k-rebuild")
    assert again.replayed
    assert again.booking.booking_id == first.booking.booking_id
    assert other_card.error.code == commands_pb2.COMMAND_ERROR_CODE_IDEMPOTENCY_CONFLICT


def test_booking_refuses_to_start_without_the_public_key(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "BOOKING_PAYMENT_TOKEN_PUBLIC_KEY"}
    env |= {
        "PYTHONPATH": str(REPO),
        "BOOKING_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'b.db'}",
        "BOOKING_HEALTH_PORT": "0",
        "BOOKING_NATS_URL": "nats://127.0.0.1:1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "booking"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode != 0
    assert "BOOKING_PAYMENT_TOKEN_PUBLIC_KEY is not set" in done.stderr
    assert "Traceback" not in done.stderr
