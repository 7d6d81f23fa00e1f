"""Idempotency keys are the caller's: the real booking service behind a gateway with JWT auth.

The booking service scopes keys per (user_id, key); the gateway makes user_id the
token's ``sub``. Before authentication (commit e82bd38) Bob could send Alice's
user_id with her key and get her booking back (payment token flow included).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from nats.js import JetStreamContext

from booking.build import build as build_booking
from booking.settings import BookingSettings
from choreo.bus import ensure_stream
from choreo.gateway.v1 import gateway_pb2 as gw
from choreo.gateway.v1 import gateway_pb2_grpc
from choreoctl.stack.natsserver import NatsServer
from tests.gateway.conftest import StartGateway
from tests.gateway.tokens import ALICE, BOB, SECRET, bearer, grpc_bearer
from tests.streams import PAYMENT
from tests.support import running

BODY = {"amount_cents": 1500, "currency": "USD", "payment_token": "tok_visa"}


async def test_a_reused_idempotency_key_is_the_callers_own(
    nats_server: NatsServer, js: JetStreamContext, start_gateway: StartGateway, tmp_path: Path
) -> None:
    await ensure_stream(js, PAYMENT)  # payment's stream; booking only consumes it
    booking_settings = BookingSettings(
        nats_url=nats_server.url,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'booking.db'}",
        log_format="text",
        health_port=0,
    )
    async with running(build_booking(booking_settings)):
        gateway = await start_gateway(
            f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}", auth="jwt", jwt_hs256_secret=SECRET
        )
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}", timeout=15) as http,
        ):
            stub: Any = gateway_pb2_grpc.BookingGatewayServiceStub(channel)
            alices = (
                await stub.CreateBooking(
                    gw.CreateBookingRequest(user_id="alice", idempotency_key="order-1", **BODY),
                    metadata=grpc_bearer(ALICE),
                )
            ).booking
            assert alices.user_id == "alice"

            # Squatting: Bob names Alice and her key, hoping for her booking back.
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.CreateBooking(
                    gw.CreateBookingRequest(user_id="alice", idempotency_key="order-1", **BODY),
                    metadata=grpc_bearer(BOB),
                )
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            squat = await http.post(
                "/v1/bookings",
                json={"user_id": "alice", **BODY},
                headers={**bearer(BOB), "Idempotency-Key": "order-1"},
            )
            assert squat.status_code == 403, squat.text

            # The same key as Bob's own: a booking of his, not a replay of hers.
            call = stub.CreateBooking(
                gw.CreateBookingRequest(idempotency_key="order-1", **BODY), metadata=grpc_bearer(BOB)
            )
            bobs = (await call).booking
            assert bobs.user_id == "bob" and bobs.booking_id != alices.booking_id
            assert ("idempotent-replayed", "true") not in tuple(await call.initial_metadata() or ())
            again = await http.post(
                "/v1/bookings", json=BODY, headers={**bearer(BOB), "Idempotency-Key": "order-1"}
            )
            assert again.status_code == 201 and again.json()["booking_id"] == bobs.booking_id
            assert again.headers.get("idempotent-replayed") == "true"
            # And Alice's key still gives Alice hers.
            hers = await http.post(
                "/v1/bookings",
                json={"user_id": "alice", **BODY},
                headers={**bearer(ALICE), "Idempotency-Key": "order-1"},
            )
            assert hers.json()["booking_id"] == alices.booking_id
