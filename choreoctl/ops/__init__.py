"""The operator's commands: ``choreo dlq``, ``choreo outbox``, ``choreo recover``, ``choreo migrate``."""
