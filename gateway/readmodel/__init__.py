"""The gateway's read model: its value types, the merge of facts, and its database.

The lowest layer: it imports no other part of the gateway (only ``gateway.settings``).
"""
