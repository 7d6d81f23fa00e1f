"""The gateway: choreo's public gRPC and HTTP face, and the query-side read model.

Commands go to the booking service over NATS request/reply; reads are served
from a projection of the facts on JetStream, kept in the gateway's own database.

Layers (subpackages), each importing only downwards:

- ``gateway.api``: the edge. gRPC and HTTP servers, their error mapping and
  limits, TLS, and bearer-token verification (``auth``, ``jwks``: a token is a
  transport detail; what the rest sees is the ``Principal`` it yields).
- ``gateway.application``: commands, reads and watches (``GatewayCore``), the
  caller's identity and limits, page tokens, errors, readiness. No gRPC, no HTTP.
- ``gateway.readmodel``: the read model's value types (``model``), the merge
  of facts into a booking, and its database (``store``, ``tables``, ``bulk``).
- ``gateway.projection``: feeding the read model from the streams (``feed``,
  ``pull``) and reading each fact (``facts``).

The rule: ``api -> application -> readmodel`` and ``projection -> readmodel``.
The API uses the read model's value types (``readmodel.model``) but reaches its
store only through the application; the application never imports the API or
the projection; the read model imports no other layer. ``gateway.settings`` may
be imported by every layer; ``gateway.build`` (which wires the layers together)
and ``__main__`` by none. ``tests/gateway/test_layers.py`` enforces it.
"""
