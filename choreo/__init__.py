"""choreo: event choreography for microservices on NATS JetStream.

This package is the shared runtime every service uses (bus, outbox, inbox,
envelope, settings); the ``choreo`` command and the rest of the developer
tooling live in ``choreoctl``, which a service never imports. The subpackages ``choreo.booking.v1``,
``choreo.payment.v1`` and ``choreo.gateway.v1`` are generated from ``proto/``
(the only contract between services) by ``scripts/gen_protos.py``.
"""

__version__ = "0.1.0"
