"""Who a NATS connection is: its user, and the inbox prefix its replies come back on.

Replies to a connection (JetStream publish acknowledgements, API answers, pull
deliveries, request/reply answers) go to subjects under its inbox prefix. With
nats-py's default ``_INBOX`` every connection's replies share one namespace, and
any user allowed ``_INBOX.>`` reads everyone's (the gateway's deliveries carry
payment tokens). So each connection's prefix is named after whoever it is,
``_INBOX_<owner>``, and the NATS permissions (``nats_auth.conf``) let each user
subscribe only under its own: a service's user is named like the service, so
the owner is the service; the operator's tools connect as ``operator``.
"""

from __future__ import annotations

from urllib.parse import urlsplit

#: The NATS user of the operator's tools in ``choreo up`` (``choreo dlq``, replay tools).
OPERATOR = "operator"


def inbox_prefix(owner: str) -> str:
    """The inbox prefix of a connection made by ``owner`` (a service, a user, a tool)."""
    if not owner or any(c in owner for c in ".*> \t\r\n"):
        raise ValueError(f"not a valid inbox owner (one subject token): {owner!r}")
    return f"_INBOX_{owner}"


def url_user(urls: str | list[str]) -> str | None:
    """The user named in the first NATS URL (``nats://user:password@host:port``), if any."""
    first = (urls.split(",") if isinstance(urls, str) else urls)[0].strip()
    return urlsplit(first).username or None


def connection_owner(urls: str | list[str], user: str | None, fallback: str) -> str:
    """Who connects: the explicit user, else the user in the URL, else ``fallback`` (no auth).

    The NATS permissions let a user subscribe only to ``_INBOX_<user>.>``, so a
    connection that authenticates must name its inbox after its user; one that
    does not is named after the service or tool making it.
    """
    return user or url_user(urls) or fallback


def tool_inbox(urls: str | list[str], tool: str) -> str:
    """The inbox prefix of a tool connecting to ``urls``: its user's, else its own (``_INBOX_<tool>``)."""
    return inbox_prefix(connection_owner(urls, None, tool))
