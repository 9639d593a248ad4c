"""--log-format and --log-level: each format's exact lines, the events left
out, and how the observer reaches twistd (and when twistd's own wins)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from twisted.application.service import Application, IService, MultiService
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import ILogObserver, LogLevel
from twisted.scripts.twistd import ServerOptions

from mirrorproxy.server.logs import WithLogObserver, destination_problem, log_observer
from mirrorproxy.server.tap import makeService

# 2027-01-15T08:00:00.250Z
WHEN = 1_800_000_000.25
JSON_MISS = (
    '{"time":"2027-01-15T08:00:00.250+00:00","level":"info","namespace":"mirrorproxy.test",'
    '"text":"miss library/alpine","repository":"library/alpine"}'
)


def event(log_format: str, level: LogLevel = LogLevel.info, **fields: Any) -> dict[str, Any]:
    return {
        "log_format": log_format,
        "log_level": level,
        "log_namespace": "mirrorproxy.test",
        "log_time": WHEN,
        **fields,
    }


MISS = event("miss {repository}", repository="library/alpine")


def twistd_options(*argv: str) -> ServerOptions:
    """twistd's options, as twistd parses them before makeService."""
    options = ServerOptions()
    options.parseOptions([*argv, "--pidfile=", "mirrorproxy", "--cache-dir", "unused"])
    return options


def test_json_is_one_object_a_line_with_nothing_before_it(capsys):
    observer = log_observer("json", "info", twistd_options("-n"))
    observer(MISS)

    assert capsys.readouterr() == (JSON_MISS + "\n", "")


def test_journal_puts_the_syslog_priority_first(capsys):
    observer = log_observer("journal", "info", twistd_options("-n"))
    observer(MISS)
    observer(event("upstream down", LogLevel.warn))

    assert capsys.readouterr().out.splitlines() == [
        "<6>" + JSON_MISS,
        '<4>{"time":"2027-01-15T08:00:00.250+00:00","level":"warn",'
        '"namespace":"mirrorproxy.test","text":"upstream down"}',
    ]


def test_text_is_twistds_own_line_where_twistd_would_write_it(capsys):
    # With -n and no --logfile, twistd writes text to stdout.
    observer = log_observer("text", "info", twistd_options("-n"))
    observer(MISS)

    [line] = capsys.readouterr().out.splitlines()
    stamp, rest = line.split(" ", 1)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}", stamp)
    assert rest == "[mirrorproxy.test#info] miss library/alpine"


FACTORY_START = event("Starting factory {factory!r}", factory="<Site>")
FACTORY_STOP = event("Stopping factory {factory!r}", factory="<Site>")
DEBUG = event("new token for {scope}", LogLevel.debug, scope="repository:x:pull")
WARN = event("upstream down", LogLevel.warn)


@pytest.mark.parametrize(
    "level, shown",
    [
        ("info", ["miss library/alpine", "upstream down"]),
        ("debug", ["miss library/alpine", "new token for repository:x:pull", "upstream down"]),
        ("warn", ["upstream down"]),
        ("critical", []),
    ],
)
@pytest.mark.parametrize("log_format", ["text", "json", "journal"])
def test_events_below_the_level_and_factory_noise_are_left_out(capsys, log_format, level, shown):
    observer = log_observer(log_format, level, twistd_options("-n"))
    for each in (FACTORY_START, MISS, DEBUG, FACTORY_STOP, WARN):
        observer(each)

    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(shown)
    for line, text in zip(lines, shown):
        assert text in line and "factory" not in line


def test_twistds_logger_option_wins():
    assert log_observer("json", "info", twistd_options("-n", "--logger=mirrorproxy.journal.observer")) is None


def test_a_tac_file_leaves_text_to_twistd(capsys):
    assert log_observer("text", "info", None) is None
    log_observer("json", "info", None)(MISS)
    assert capsys.readouterr().out == JSON_MISS + "\n"


@pytest.mark.parametrize(
    "log_format, argv, problem",
    [
        ("json", [], "log-format json writes to stdout: run twistd with --nodaemon (-n)"),
        ("journal", ["-n", "--logfile", "mirror.log"], "log-format journal writes to stdout, not to twistd's --logfile or --syslog"),
        ("json", ["-n", "--syslog"], "log-format json writes to stdout, not to twistd's --logfile or --syslog"),
        ("json", ["-n"], None),
        ("json", ["--logger=mirrorproxy.journal.observer"], None),
        ("text", ["--logfile", "mirror.log"], None),
    ],
)
def test_json_and_journal_need_twistds_stdout(log_format, argv, problem):
    assert destination_problem(log_format, twistd_options(*argv)) == problem


def test_the_application_gets_the_observer_before_twistd_starts_logging():
    observer = log_observer("json", "info", twistd_options("-n"))
    inner = MultiService()
    application = Application("mirrorproxy")

    IService(WithLogObserver(inner, observer)).setServiceParent(application)

    # What twistd's AppLogger.start looks for before making its own.
    assert application.getComponent(ILogObserver) is observer
    assert inner.parent.parent is IService(application)


def test_make_service_under_twistd_hands_over_the_chosen_format(capsys, tmp_path: Path):
    config = ServerOptions()
    config.parseOptions(
        ["-n", "--pidfile=", "mirrorproxy", "--log-format", "json", "--cache-dir", str(tmp_path / "cache")]
    )
    service = makeService(config.subOptions, MemoryReactorClock())
    application = Application("mirrorproxy")
    service.setServiceParent(application)

    application.getComponent(ILogObserver)(FACTORY_START)
    application.getComponent(ILogObserver)(MISS)
    assert capsys.readouterr().out == JSON_MISS + "\n"
