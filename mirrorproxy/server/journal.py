"""Log events as one JSON object a line: as they are, for containers
(``--log-format json``), or after a syslog priority, for systemd's journal
(``--log-format journal``).

The object holds the time, the level, the namespace, the formatted text, the
event's own named fields (repository, digest, status...) and, for failures,
the traceback.  Under systemd, stdout goes to the journal, one entry a line;
a line's ``<N>`` prefix is taken off by journald and recorded as the entry's
PRIORITY (so ``journalctl -p warning`` works), leaving the JSON object as
MESSAGE: ``journalctl -u mirrorproxy -o cat | jq`` reads it back.  Elsewhere
the prefix would stop ``jq``, so the json format has none.

``twistd --logger=mirrorproxy.journal.observer`` (what units written before
``--log-format`` name) calls `observer`: the journal format, every event.

Our events never carry passwords or hashes; nothing here filters them out,
so none may be logged in the first place.
"""

from __future__ import annotations

import datetime
import json
import sys
from typing import IO, Any

from twisted.logger import ILogObserver, LogLevel, formatEvent
from twisted.python.failure import Failure
from zope.interface import implementer

# Syslog priorities, which journald reads from the "<N>" line prefix.
_PRIORITY = {
    LogLevel.debug: 7,
    LogLevel.info: 6,
    LogLevel.warn: 4,
    LogLevel.error: 3,
    LogLevel.critical: 2,
}
# Bookkeeping of Twisted's legacy log events (their "message" and "failure"
# already appear as "text" and "traceback").
_INTERNAL = {"format", "message", "isError", "failure"}


def _json_safe(value: object) -> object:
    """A field value as JSON can hold it; anything else as its str()."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    return str(value)


def record(event: dict[str, Any]) -> dict[str, object]:
    """The JSON object for one log event."""
    level = event.get("log_level", LogLevel.info)
    when = event.get("log_time")
    out: dict[str, object] = {
        "time": (
            datetime.datetime.fromtimestamp(when, datetime.UTC).isoformat(timespec="milliseconds")
            if when is not None
            else None
        ),
        "level": level.name if isinstance(level, type(LogLevel.info)) else str(level),
        "namespace": event.get("log_namespace", "-"),
        "text": formatEvent(event),
    }
    failure = event.get("log_failure")
    if isinstance(failure, Failure):
        out["error"] = f"{type(failure.value).__name__}: {failure.getErrorMessage()}"
        out["traceback"] = failure.getTraceback()
    for key, value in event.items():
        if key.startswith("log_") or key in _INTERNAL or key in out:
            continue
        out[key] = _json_safe(value)
    return out


@implementer(ILogObserver)
class JSONLinesObserver:
    """Writes each event as ``{json}\\n`` and flushes."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out

    def __call__(self, event: dict[str, Any]) -> None:
        # A newline inside the JSON text would split the line (and the
        # journal entry); json.dumps escapes every one of them.
        line = json.dumps(record(event), ensure_ascii=False, separators=(",", ":"))
        self._out.write(f"{self._prefix(event)}{line}\n")
        # A reader (journald, a container runtime) should see an event when
        # it happens, not at exit.
        self._out.flush()

    def _prefix(self, event: dict[str, Any]) -> str:
        return ""


class JournalObserver(JSONLinesObserver):
    """Writes each event as ``<priority>{json}\\n`` and flushes."""

    def _prefix(self, event: dict[str, Any]) -> str:
        return f"<{_PRIORITY.get(event.get('log_level', LogLevel.info), 6)}>"


def observer() -> ILogObserver:
    """The factory ``twistd --logger=mirrorproxy.journal.observer`` names."""
    return JournalObserver(sys.stdout)
