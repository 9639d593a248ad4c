"""Log output: the format the operator picks, the level, and the noise left out.

``--log-format`` picks how events are written:

- ``text``: twistd's own lines, where twistd's options send them (stdout
  with ``-n``, else ``twistd.log``; ``--logfile``, ``--syslog``);
- ``json``: one JSON object a line on stdout, for containers;
- ``journal``: the same after a ``<N>`` syslog priority, for systemd.

Whatever the format, events below ``--log-level`` (info unless told) are
left out, and so are Twisted's "Starting factory" and "Stopping factory"
lines, two of which every upstream connection would otherwise add.

The observer reaches twistd as the application's ILogObserver component:
twistd looks for one after makeService, before making its own.  twistd's
``--logger``, when given, wins over it, as it always has.
"""

from __future__ import annotations

import sys
from typing import Any

from constantly import NamedConstant
from twisted.application.service import IService, MultiService
from twisted.logger import (
    FilteringLogObserver,
    ILogFilterPredicate,
    ILogObserver,
    LegacyLogObserverWrapper,
    LogLevel,
    LogLevelFilterPredicate,
    PredicateResult,
)
from twisted.python.components import Componentized
from twisted.python.usage import Options
from zope.interface import implementer

from .journal import JournalObserver, JSONLinesObserver

LOG_FORMATS = ("text", "json", "journal")
LOG_LEVELS = ("debug", "info", "warn", "error", "critical")
DEFAULT_LOG_FORMAT = "text"
DEFAULT_LOG_LEVEL = "info"

# Twisted's Factory.doStart and doStop, for every factory not marked quiet.
_FACTORY_NOISE = frozenset({"Starting factory {factory!r}", "Stopping factory {factory!r}"})


@implementer(ILogFilterPredicate)
class _NotFactoryNoise:
    def __call__(self, event: dict[str, Any]) -> NamedConstant:
        if event.get("log_format") in _FACTORY_NOISE:
            return PredicateResult.no
        return PredicateResult.maybe


def filtered(observer: ILogObserver, level: str) -> ILogObserver:
    """`observer`, given only events at `level` or above, factory noise left out."""
    return FilteringLogObserver(
        observer,
        [LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(level)), _NotFactoryNoise()],
    )


def destination_problem(log_format: str, twistd_options: Options | None) -> str | None:
    """Why twistd's options would lose this format's lines, if they would."""
    if log_format == "text" or twistd_options is None or twistd_options.get("logger"):
        return None
    if not (twistd_options.get("nodaemon") or twistd_options.get("debug")):
        # A daemon's stdout is /dev/null.
        return f"log-format {log_format} writes to stdout: run twistd with --nodaemon (-n)"
    if twistd_options.get("logfile") or twistd_options.get("syslog"):
        return f"log-format {log_format} writes to stdout, not to twistd's --logfile or --syslog"
    return None


def log_observer(log_format: str, level: str, twistd_options: Options | None) -> ILogObserver | None:
    """The observer twistd should log to, or None to leave it to twistd.

    `twistd_options` are twistd's own (``options.parent``); None when the
    options were parsed by a .tac file, which cannot see them: then the text
    format is twistd's, unfiltered.
    """
    if twistd_options is not None and twistd_options.get("logger"):
        return None
    if log_format == "json":
        return filtered(JSONLinesObserver(sys.stdout), level)
    if log_format == "journal":
        return filtered(JournalObserver(sys.stdout), level)
    if twistd_options is None:
        return None
    return filtered(twistd_text_observer(twistd_options), level)


def twistd_text_observer(twistd_options: Options) -> ILogObserver:
    """The observer twistd would make from its options: stdout, a rotated
    file or syslog.  Its only maker is a private method of twistd's
    (pinned by tests/unit/test_logs.py)."""
    from twisted.scripts._twistd_unix import UnixAppLogger

    observer = UnixAppLogger(twistd_options)._getLogObserver()
    if ILogObserver.providedBy(observer):
        return observer
    # --syslog's is a legacy observer.
    return LegacyLogObserverWrapper(observer)


class WithLogObserver(MultiService):
    """`service`, which also hands the application its log observer.

    twistd (and a .tac file) adds the service returned by makeService to the
    Application, then starts logging with the application's ILogObserver
    component if it has one.
    """

    def __init__(self, service: IService, observer: ILogObserver) -> None:
        super().__init__()
        self.observer = observer
        service.setServiceParent(self)

    def setServiceParent(self, parent: Any) -> None:
        if isinstance(parent, Componentized):
            parent.setComponent(ILogObserver, self.observer)
        super().setServiceParent(parent)
