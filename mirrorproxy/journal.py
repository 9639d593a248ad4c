"""``--logger=mirrorproxy.journal.observer``, as systemd units written before
``--log-format journal`` name it: the same observer, kept importable here."""

from .server.journal import observer

__all__ = ["observer"]
