"""Feeding the read model from the streams: ordered reading, fact reading, batched applying.

It writes through ``gateway.readmodel`` and knows nothing of the API or the application.
"""
