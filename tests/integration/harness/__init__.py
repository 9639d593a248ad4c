"""Real processes for the integration tests: token issuer, upstream registry,
image builder, mirror and dockerd, one module each. conftest.py wires them into
fixtures; nothing here imports pytest except ``tools``."""
