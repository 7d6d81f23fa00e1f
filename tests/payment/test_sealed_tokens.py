"""Payment opens the tokens booking sealed to its key; one that does not open is never charged."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from choreo.booking.v1 import events_pb2 as booking_events
from choreo.envelope import Envelope
from choreo.payment.v1 import events_pb2 as payment_events
from choreo.sealing import TokenSealer, generate_keypair, parse_public_key
from choreoctl.stack.natsserver import NatsServer
from payment.build import build
from payment.simulator import ledger
from payment.tables import payments
from tests.payment.test_service import (  # noqa: F401 (booking_stream: an autouse fixture)
    SESSION_SEALER,
    _at_least,
    booking_created,
    booking_stream,
    count,
    settings,
)
from tests.support import (
    TOKEN_PRIVATE_KEY,
    eventually,
    publish,
    row_count,
    running,
    stream_count,
    stream_envelopes,
)

REPO = Path(__file__).resolve().parents[2]


def sealer_of_a_new_key() -> tuple[str, TokenSealer]:
    private, public = generate_keypair()
    return private, TokenSealer(parse_public_key(public))


def tampered() -> bytes:
    sealed = bytearray(SESSION_SEALER.seal("tok_visa", bound_to="b-sealed"))
    sealed[-1] ^= 1
    return bytes(sealed)


@pytest.mark.parametrize(
    ("sealed", "says"),
    [
        (
            lambda: sealer_of_a_new_key()[1].seal("tok_visa", bound_to="b-sealed"),
            "which is not among PAYMENT_TOKEN_PRIVATE_KEY",
        ),
        (tampered, "does not open"),
        # Another customer's sealed token copied into this booking's fact.
        (lambda: SESSION_SEALER.seal("tok_visa", bound_to="b-someone-else"), "sealed for another booking"),
        (lambda: b"", "carries no payment token"),
        (lambda: b"\x07garbage-garbage", "not a sealed token"),
    ],
    ids=["another-key", "altered", "another-booking", "missing", "malformed"],
)
async def test_a_token_that_does_not_open_is_dead_lettered_and_never_charged(
    nats_server: NatsServer,
    database_url: str,
    tmp_path: Path,
    js: JetStreamContext,
    sealed: object,
    says: str,
) -> None:
    async with running(build(settings(nats_server, database_url, tmp_path))) as service:
        await publish(js, booking_created("b-sealed", "", sealed=sealed()))  # type: ignore[operator]
        await eventually(lambda: stream_count(js, "DLQ"), timeout=10)
        assert await count(service, payments) == 0
    dead = await js.get_msg("DLQ", 1)
    assert dead.headers is not None
    assert dead.headers["choreo-dlq-deliveries"] == "1"  # permanent: no retry
    assert "UnreadableTokenError" in dead.headers["choreo-dlq-error"]
    assert says in dead.headers["choreo-dlq-error"]
    assert await stream_count(js, "PAYMENT") == 0
    assert await _ledger_charges(tmp_path) == 0


async def _ledger_charges(tmp_path: Path) -> int:
    from choreo.db import make_engine

    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
    try:
        return await row_count(engine, ledger)
    finally:
        await engine.dispose()


async def test_after_a_rotation_tokens_sealed_to_the_old_key_still_open(
    nats_server: NatsServer, database_url: str, tmp_path: Path, js: JetStreamContext
) -> None:
    new_private, new_sealer = sealer_of_a_new_key()
    rotated = settings(
        nats_server, database_url, tmp_path, token_private_key=f"{new_private},{TOKEN_PRIVATE_KEY}"
    )
    async with running(build(rotated)):
        await publish(
            js, booking_created("b-old", "", sealed=SESSION_SEALER.seal("tok_visa", bound_to="b-old"))
        )
        await publish(
            js,
            booking_created(
                "b-new", "", "wf-2", sealed=new_sealer.seal("tok_chargeDeclined", bound_to="b-new")
            ),
        )
        await eventually(lambda: _at_least(js, "PAYMENT", 2))
    types = {f.type for f in await stream_envelopes(js, "PAYMENT")}
    assert types == {"choreo.payment.v1.PaymentSucceeded", "choreo.payment.v1.PaymentFailed"}
    assert await stream_count(js, "DLQ") == 0


async def test_a_fact_published_before_tokens_were_sealed_is_still_charged(
    nats_server: NatsServer, database_url: str, tmp_path: Path, js: JetStreamContext
) -> None:
    legacy = booking_events.BookingCreated(
        booking_id="b-legacy", user_id="u1", amount_cents=2500, currency="EUR", payment_token="tok_visa"
    )
    env = Envelope.wrap(legacy, source="booking", subject="booking.created", correlation_id="wf-legacy")
    async with running(build(settings(nats_server, database_url, tmp_path))):
        await publish(js, env)
        await eventually(lambda: _at_least(js, "PAYMENT", 1))
    [fact] = await stream_envelopes(js, "PAYMENT")
    assert fact.decode(payment_events.PaymentSucceeded).booking_id == "b-legacy"


def test_payment_refuses_to_start_without_its_private_key(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PAYMENT_TOKEN_PRIVATE_KEY"}
    env |= {
        "PYTHONPATH": str(REPO),
        "PAYMENT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'p.db'}",
        "PAYMENT_PROVIDER_LEDGER_URL": f"sqlite+aiosqlite:///{tmp_path / 'l.db'}",
        "PAYMENT_HEALTH_PORT": "0",
        "PAYMENT_NATS_URL": "nats://127.0.0.1:1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "payment"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode != 0
    assert "PAYMENT_TOKEN_PRIVATE_KEY is not set" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_malformed_private_key_is_refused_naming_the_variable_without_echoing_it(tmp_path: Path) -> None:
    env = dict(os.environ) | {
        "PYTHONPATH": str(REPO),
        "PAYMENT_TOKEN_PRIVATE_KEY": "c2VjcmV0LXZhbHVl",
        "PAYMENT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'p.db'}",
    }
    done = subprocess.run(
        [sys.executable, "-m", "payment"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode != 0
    assert "PAYMENT_TOKEN_PRIVATE_KEY" in done.stderr
    assert "c2VjcmV0LXZhbHVl" not in done.stderr


def test_keys_command_prints_a_pair_that_works() -> None:
    env = dict(os.environ) | {"PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-m", "payment.keys"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    values = dict(line.split("=", 1) for line in out.splitlines())
    private, public = values["PAYMENT_TOKEN_PRIVATE_KEY"], values["BOOKING_PAYMENT_TOKEN_PUBLIC_KEY"]
    derived = subprocess.run(
        [sys.executable, "-m", "payment.keys", "--public"],
        env=env,
        input=private,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert derived.strip() == f"BOOKING_PAYMENT_TOKEN_PUBLIC_KEY={public}"


def test_choreo_up_makes_a_key_pair_in_its_data_dir_and_reuses_it(tmp_path: Path) -> None:
    from choreo.sealing import TokenOpener, parse_private_keys
    from choreoctl.stack.services import HEALTH_PORTS, Ports, service_environments

    ports = Ports(grpc=1, http=2, health={name: 3 + i for i, name in enumerate(HEALTH_PORTS)})
    first = service_environments({}, "nats://127.0.0.1:1", ports, tmp_path, None)
    again = service_environments({}, "nats://127.0.0.1:1", ports, tmp_path, None)
    private = first["payment"]["PAYMENT_TOKEN_PRIVATE_KEY"]
    public = first["booking"]["BOOKING_PAYMENT_TOKEN_PUBLIC_KEY"]
    assert (private, public) == (
        again["payment"]["PAYMENT_TOKEN_PRIVATE_KEY"],
        again["booking"]["BOOKING_PAYMENT_TOKEN_PUBLIC_KEY"],
    )
    assert "PAYMENT_TOKEN_PRIVATE_KEY" not in first["booking"]  # booking never gets the private key
    assert (tmp_path / "payment-token.key").stat().st_mode & 0o777 == 0o600
    sealed = TokenSealer(parse_public_key(public)).seal("tok_visa", bound_to="b1")
    assert TokenOpener(parse_private_keys(private)).open(sealed, bound_to="b1") == "tok_visa"
