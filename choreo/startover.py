"""A database that holds nothing makes a durable consumer start over from its stream's first fact.

For a service whose tables are only what its consumer made of another service's
stream (a projection, statistics), where the consumer stands is kept by NATS (the
durable's acknowledgements), not in the database. A new, empty database under a
durable that has already handled facts would only see the facts after them. So at
start-up, before the consumer runs: when the given tables hold no row, the durable is
deleted, with the database's inbox and delivery-attempt rows of it; the consumer then
creates it again, and ``DeliverPolicy.ALL`` replays the stream from its first fact.
This is right only for handlers that give the same rows in any order and any number
of times (idempotent upserts): the rebuilt database then answers as the lost one did.

Deleting the database (or emptying its tables) is thus how an operator rebuilds it.
Replicas starting together on one empty database may each delete the durable: the
facts are then handled again, with the same result. A stream whose only facts for the
durable were dead-lettered leaves the tables empty too: each start reads them again (and
dead-letters them again). The replay is complete only while the stream keeps every fact
(no ``max_age``, as choreo provisions a service's stream by default).

The consumer's NATS user needs the right to delete its own durable.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from sqlalchemy import Table, delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from choreo.attempts import attempts_table
from choreo.db import read_only
from choreo.inbox import inbox_table
from choreo.topology import Subscription

log = logging.getLogger(__name__)


async def holds_nothing(engine: AsyncEngine, tables: Sequence[Table]) -> bool:
    """Whether none of ``tables`` holds a row."""
    async with read_only(engine) as conn:
        for table in tables:
            if (await conn.execute(select(1).select_from(table).limit(1))).first() is not None:
                await conn.rollback()
                return False
        await conn.rollback()
    return True


async def start_over_if_empty(
    js: JetStreamContext, engine: AsyncEngine, subscription: Subscription, tables: Sequence[Table]
) -> bool:
    """Deletes the subscription's durable (and its inbox rows) when ``tables`` are all empty.

    Returns:
        Whether a durable that had delivered facts was deleted: its stream is replayed.
    """
    if not await holds_nothing(engine, tables):
        return False
    stream, durable = subscription.stream, subscription.durable
    async with engine.begin() as conn:
        # The replayed facts must not be skipped as duplicates of what the tables no longer hold,
        # nor judged by the failed runs of an earlier reading.
        for table in (inbox_table, attempts_table):
            await conn.execute(delete(table).where(table.c.consumer == durable))
    try:
        info = await js.consumer_info(stream, durable)
        await js.delete_consumer(stream, durable)
    except NotFoundError:  # no durable (no stream), or a replica deleted it: it starts from the first fact
        return False
    delivered = int(info.delivered.stream_seq or 0)
    if delivered:
        log.warning(
            "the database holds no booking facts but consumer %s had read %s up to %d: "
            "it starts over from the first fact (rebuild by replay)",
            durable,
            stream,
            delivered,
            extra={"stream": stream},
        )
    return bool(delivered)
