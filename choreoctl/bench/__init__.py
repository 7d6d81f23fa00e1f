"""``choreo bench``: end-to-end throughput and latency against the raw NATS ceiling.

Modules by role: ``driver`` (open and closed-loop load), ``stats`` (percentiles),
``procstats`` (CPU and memory of processes from /proc), ``ceiling`` and
``ceiling_worker`` (the raw nats-py pipeline with a booking's hops), ``load``
(gRPC and HTTP clients of the gateway), ``report`` (table and JSON), ``cli``.
"""
