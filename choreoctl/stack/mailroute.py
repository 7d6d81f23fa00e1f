"""Where the notification service's emails go under ``choreo up``.

With ``NOTIFICATION_SMTP_HOST`` exported, the exported ``NOTIFICATION_SMTP_*``
variables reach the service unchanged: it sends through that server, and
``choreo up`` starts no sink. Without it, ``choreo up`` runs its SMTP sink
(``choreoctl.stack.mailsink``) and sets ``NOTIFICATION_SMTP_HOST``, ``_PORT`` and
``_SECURITY=none``; any other exported ``NOTIFICATION_SMTP_*`` (a user, a
password, a CA file) was meant for a server that is not used, so it is left out
(and said), since the sink offers no AUTH and no TLS.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

#: The notification service's SMTP settings (``NotificationSettings``, prefix ``NOTIFICATION_``).
SMTP_PREFIX = "NOTIFICATION_SMTP_"
HOST_VARIABLE = f"{SMTP_PREFIX}HOST"
PORT_VARIABLE = f"{SMTP_PREFIX}PORT"
#: The service's own default port (submission with STARTTLS).
DEFAULT_SMTP_PORT = "587"


@dataclass(frozen=True)
class MailRoute:
    """Where emails go, and what the notification service is told for it.

    Attributes:
        server: ``host:port`` of the SMTP server.
        mail_dir: The sink's store; ``None`` when the server is an exported one.
        settings: Notification settings without the ``NOTIFICATION_`` prefix that ``choreo up`` sets.
        dropped: Exported variables left out of every service's environment (see the module).
    """

    server: str
    mail_dir: Path | None = None
    settings: Mapping[str, str] = field(default_factory=dict)
    dropped: tuple[str, ...] = ()

    @property
    def external(self) -> bool:
        return self.mail_dir is None

    def describe(self) -> str:
        """One line for the console."""
        if self.mail_dir is None:
            return f"emails go to the SMTP server {self.server} ({HOST_VARIABLE})"
        return f"emails are kept in {self.mail_dir} (*.eml), by the SMTP sink at {self.server}"


def exported_server(environ: Mapping[str, str]) -> MailRoute | None:
    """The route to the exported SMTP server, or ``None`` when ``NOTIFICATION_SMTP_HOST`` is not set."""
    host = environ.get(HOST_VARIABLE, "").strip()
    if not host:
        return None
    port = environ.get(PORT_VARIABLE, "").strip() or DEFAULT_SMTP_PORT
    return MailRoute(server=f"{host}:{port}")


def sink_route(environ: Mapping[str, str], mail_dir: Path, host: str, port: int) -> MailRoute:
    """The route to ``choreo up``'s sink listening on ``host:port`` and storing into ``mail_dir``."""
    dropped = tuple(sorted(name for name in environ if name.startswith(SMTP_PREFIX)))
    settings = {"SMTP_HOST": host, "SMTP_PORT": str(port), "SMTP_SECURITY": "none"}
    return MailRoute(server=f"{host}:{port}", mail_dir=mail_dir, settings=settings, dropped=dropped)
