"""The gateway's application logic: commands, reads and watches, shared by both APIs.

It knows neither gRPC nor HTTP (it must not import ``gateway.api``); it reads
and writes through the read model (``gateway.readmodel``).
"""
