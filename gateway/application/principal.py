"""Who is calling: the identity every API call carries into ``GatewayCore``.

With ``GATEWAY_AUTH=jwt`` the principal comes from a verified bearer token (its
``sub`` is the user, its ``scope``/``scp`` claims the scopes). With
``GATEWAY_AUTH=none`` every call is ``ANONYMOUS``: it may do everything, and
only the gateway's global limits apply to it (per-caller limits key on the
subject, which it does not have).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Scope that sees and acts on every user's bookings (operators, traces, stats, DLQ).
ADMIN_SCOPE = "bookings:admin"


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of one request.

    Attributes:
        subject: The token's ``sub`` (the user id); empty for ``ANONYMOUS``.
        scopes: The token's scopes.
        authenticated: A verified token identified the caller.
    """

    subject: str
    scopes: frozenset[str] = frozenset()
    authenticated: bool = True

    @property
    def is_admin(self) -> bool:
        """May read and act on every user's bookings (``bookings:admin``, or auth is off)."""
        return not self.authenticated or ADMIN_SCOPE in self.scopes

    def may_act_for(self, user_id: str) -> bool:
        """Whether this caller may read or act on what ``user_id`` owns."""
        return self.is_admin or user_id == self.subject


#: Every caller when ``GATEWAY_AUTH=none``: unrestricted, keyed on no subject.
ANONYMOUS = Principal(subject="", scopes=frozenset(), authenticated=False)
