"""Conformance suite of the choreo runtime, run against real NATS and both databases."""
