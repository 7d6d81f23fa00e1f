"""``choreo up``: the whole system on one machine (nats-server, the services, their supervisor).

Also what the tests and the benchmark lab start their own servers with
(``natsserver``, ``ports``).
"""
