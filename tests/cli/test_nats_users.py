"""``choreo up``'s NATS users against a real nats-server run with its configuration.

The permissions are the Kubernetes ones (the packaged auth.conf is the k8s file,
byte for byte); the operator reads every stream; nobody else forges a payment.
"""

from __future__ import annotations

import stat
import uuid
from pathlib import Path

import nats.errors
import pytest
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from choreo import natsclient
from choreo.bus import ensure_stream
from choreo.dlq import copy_to_dlq
from choreo.natsidentity import OPERATOR, connection_owner, inbox_prefix, tool_inbox, url_user
from choreo.pull import PullReader
from choreoctl.ops.dlq import read_dead_letters, redrive
from choreoctl.stack.devsecrets import SecretFileError, SecretStore
from choreoctl.stack.natsserver import NatsServer
from choreoctl.stack.natsusers import USERS, NatsUsers, packaged_config
from tests.cli.conftest import Connect
from tests.cli.test_dlq import choreo_cli
from tests.streams import BOOKING, DLQ, PAYMENT

ROOT = Path(__file__).resolve().parents[2]


def test_packaged_permissions_are_the_k8s_ones() -> None:
    """One source of truth: `choreo up` includes the very file the k8s ConfigMap is made of."""
    k8s = (ROOT / "k8s" / "base" / "nats" / "auth.conf").read_text()
    assert packaged_config("auth.conf") == k8s, (
        "choreoctl/stack/natsconf/auth.conf differs from k8s/base/nats/auth.conf: "
        "cp k8s/base/nats/auth.conf choreoctl/stack/natsconf/auth.conf"
    )


def test_inbox_prefixes_name_who_connects() -> None:
    assert inbox_prefix("gateway") == "_INBOX_gateway"
    for bad in ("", "a.b", "*", ">", "a b"):
        with pytest.raises(ValueError, match="inbox owner"):
            inbox_prefix(bad)
    assert url_user("nats://operator:pw@127.0.0.1:4222,nats://other:x@h:1") == "operator"
    assert url_user(["nats://127.0.0.1:4222"]) is None
    assert connection_owner("nats://operator:pw@h:1", "booking", "booking") == "booking"
    assert connection_owner("nats://operator:pw@h:1", None, "booking") == "operator"
    assert connection_owner("nats://h:1", None, "booking") == "booking"
    assert tool_inbox("nats://h:1", "dlq") == "_INBOX_dlq"
    assert tool_inbox("nats://operator:pw@h:1", "dlq") == "_INBOX_operator"


def test_secrets_are_generated_once_private_and_reused(tmp_path: Path) -> None:
    store = SecretStore(tmp_path / "secrets")
    first = NatsUsers.load(store)
    assert set(first.passwords) == set(USERS) and len(set(first.passwords.values())) == len(USERS)
    assert stat.S_IMODE((tmp_path / "secrets").stat().st_mode) == 0o700
    for user in USERS:
        path = tmp_path / "secrets" / f"{user.upper()}_NATS_PASSWORD"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_text().strip() == first.passwords[user]
    assert NatsUsers.load(SecretStore(tmp_path / "secrets")) == first, "reused across runs"
    (tmp_path / "secrets" / "BOOKING_NATS_PASSWORD").write_text("no good\n")
    with pytest.raises(SecretFileError, match="BOOKING_NATS_PASSWORD"):
        NatsUsers.load(store)


def test_generated_secrets_start_with_a_letter(tmp_path: Path) -> None:
    # nats-server reads `$VAR` in its config as a value of its own syntax: a password made
    # with token_urlsafe alone starts with '-' or a digit one time in six, and is taken for a
    # number ("Expected a digit"), so nats-server refuses to start on a fresh data directory.
    store = SecretStore(tmp_path / "secrets")
    values = [store.get(f"S{i}", nbytes=8) for i in range(300)]
    assert all(v[0].isascii() and v[0].isalpha() for v in values), [v for v in values if not v[0].isalpha()]
    (tmp_path / "secrets" / "S0").write_text("-Yz0123456789abcdef\n")
    with pytest.raises(SecretFileError, match="a letter"):
        store.get("S0")


async def test_only_payment_may_publish_payment_facts(connect: Connect) -> None:
    payment = await connect("payment")
    await ensure_stream(payment.nc.jetstream(), PAYMENT)
    ack = await payment.nc.jetstream().publish("payment.succeeded", b"real", headers={"Nats-Msg-Id": "p-1"})
    assert ack.stream == "PAYMENT"
    for user in ("booking", "gateway"):
        forger = await connect(user)
        await forger.nc.publish("payment.succeeded", b"forged")
        await forger.nc.flush()
        assert await forger.denied('"payment.succeeded"'), f"{user} may publish payment.succeeded"
    info = await payment.nc.jetstream().stream_info("PAYMENT")
    assert info.state.messages == 1


async def test_no_anonymous_or_wrong_password_connection(up_nats: tuple[NatsServer, NatsUsers]) -> None:
    server, users = up_nats
    for options in ({}, {"user": "booking", "password": users.passwords["payment"]}):
        with pytest.raises((nats.errors.Error, OSError)):
            await nats.connect(server.url, allow_reconnect=False, max_reconnect_attempts=0, **options)


async def test_the_operator_url_reads_every_stream_and_redrives(
    up_nats: tuple[NatsServer, NatsUsers], connect: Connect
) -> None:
    server, users = up_nats
    operator_url = users.url(OPERATOR, server.host, server.port)
    # The services' streams, one fact each, and the gateway dead-letters the payment one.
    for user, stream in (("booking", BOOKING), ("payment", PAYMENT)):
        owner = await connect(user)
        js = owner.nc.jetstream()
        await ensure_stream(js, stream)
        await ensure_stream(js, DLQ)
        await js.publish(f"{stream.name.lower()}.created", b"fact", headers={"ce-id": uuid.uuid4().hex})
    gateway = await connect("gateway")
    gjs = gateway.nc.jetstream()
    await gjs.add_consumer(
        "PAYMENT", ConsumerConfig(name="gateway-x", ack_policy=AckPolicy.NONE, mem_storage=True)
    )
    reader = PullReader(gateway.nc, "PAYMENT", "gateway-x", batch=1)
    await reader.start()
    [delivered] = await reader.next_batch(1)
    await reader.stop()
    await copy_to_dlq(gjs, delivered, "gateway-projection", "unreadable")

    # The operator's tools connect with the operator URL alone.
    nc = await natsclient.connect(operator_url, inbox_prefix=tool_inbox(operator_url, "test"))
    try:
        js = nc.jetstream()
        names = {info.config.name for info in await js.streams_info()}
        assert names == {"BOOKING", "PAYMENT", "DLQ"}
        assert (await js.get_msg("BOOKING", 1)).data == b"fact"
        # A replay reader: a named consumer without acks, pulled (what choreo recover does).
        await js.add_consumer(
            "BOOKING",
            ConsumerConfig(
                name="replay-1", deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE, mem_storage=True
            ),
        )
        replay = PullReader(nc, "BOOKING", "replay-1", batch=10)
        await replay.start()
        assert [m.data for m in await replay.next_batch(10)] == [b"fact"]
        await replay.stop()
        await js.delete_consumer("BOOKING", "replay-1")
        # An ordered push consumer (the benchmark's stage reader).
        sub = await js.subscribe("payment.>", stream="PAYMENT", ordered_consumer=True)
        assert (await sub.next_msg(5)).data == b"fact"
        await sub.unsubscribe()
    finally:
        await nc.close()
    code, out = await choreo_cli("dlq", "--nats-url", operator_url, "list")
    assert code == 0 and "PAYMENT#1 payment.created" in out and "consumer=gateway-projection" in out, out
    [letter] = await read_dead_letters(operator_url, 10)
    lines = await redrive(operator_url, [letter.sequence])
    assert lines[-1] == f"DLQ #{letter.sequence} -> payment.created (PAYMENT #2)", lines
    assert await read_dead_letters(operator_url, 10) == []


async def test_what_the_operator_may_not_do(connect: Connect) -> None:
    owner = await connect("booking")
    await ensure_stream(owner.nc.jetstream(), BOOKING)
    operator = await connect(OPERATOR)
    refused = [
        "$JS.API.STREAM.DELETE.BOOKING",
        "$JS.API.STREAM.PURGE.BOOKING",
        "$JS.API.STREAM.MSG.DELETE.BOOKING",
        "$JS.API.CONSUMER.MSG.NEXT.BOOKING.payment",
        "$JS.API.CONSUMER.DURABLE.CREATE.BOOKING.payment",
        "cmd.booking.create",
    ]
    for subject in refused:
        await operator.nc.publish(subject, b"{}")
    for subject in ("_INBOX.>", "_INBOX_gateway.>"):
        await operator.nc.subscribe(subject)
    await operator.nc.flush()
    for subject in [*refused, "_INBOX.>", "_INBOX_gateway.>"]:
        assert await operator.denied(f'"{subject}"'), f"the operator may {subject}"


async def test_each_service_may_replay_its_own_stream(connect: Connect) -> None:
    """Start-up recovery (choreo.recovery) runs as the service's own user."""
    for user, stream in (("booking", BOOKING), ("payment", PAYMENT)):
        session = await connect(user)
        js = session.nc.jetstream()
        await ensure_stream(js, stream)
        await js.publish(f"{stream.name.lower()}.created", b"fact")
        name = f"{user}-recovery-1"
        config = ConsumerConfig(name=name, ack_policy=AckPolicy.NONE, mem_storage=True)
        await js.add_consumer(stream.name, config)
        reader = PullReader(session.nc, stream.name, name, batch=10)
        await reader.start()
        got: list[Msg] = await reader.next_batch(10)
        await reader.stop()
        await js.delete_consumer(stream.name, name)
        assert [m.data for m in got] == [b"fact"]
        assert not session.errors, session.errors
