"""The gateway: choreo's public gRPC and HTTP face, and the query-side read model.

Commands go to the booking service over NATS request/reply; reads are served
from a projection of the facts on JetStream, kept in the gateway's own database.
"""
