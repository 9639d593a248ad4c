"""The journal logger: each event one ``<priority>{json}`` line, readable
back with its named fields, whatever the fields hold."""

from __future__ import annotations

import io
import json
import re

import pytest
from twisted.logger import Logger, LogLevel, LogPublisher
from twisted.python.failure import Failure

from mirrorproxy.server.journal import JournalObserver, JSONLinesObserver


def emitted(emit) -> list[tuple[int, dict]]:
    out = io.StringIO()
    log = Logger(namespace="mirrorproxy.test", observer=JournalObserver(out))
    emit(log)
    lines = out.getvalue().split("\n")
    assert lines[-1] == "", "every entry ends its line"
    entries = []
    for line in lines[:-1]:
        match = re.fullmatch(r"<([0-7])>(\{.*\})", line)
        assert match, line
        entries.append((int(match[1]), json.loads(match[2])))
    return entries


def test_named_fields_become_json_fields():
    ((priority, entry),) = emitted(
        lambda log: log.info(
            "miss {repository}@{digest}", repository="library/alpine", digest="sha256:ab"
        )
    )
    assert priority == 6
    assert entry["level"] == "info"
    assert entry["namespace"] == "mirrorproxy.test"
    assert entry["text"] == "miss library/alpine@sha256:ab"
    assert (entry["repository"], entry["digest"]) == ("library/alpine", "sha256:ab")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", entry["time"])


@pytest.mark.parametrize(
    "level, priority",
    [(LogLevel.debug, 7), (LogLevel.info, 6), (LogLevel.warn, 4), (LogLevel.error, 3), (LogLevel.critical, 2)],
)
def test_levels_map_to_syslog_priorities(level, priority):
    ((found, entry),) = emitted(lambda log: log.emit(level, "x"))
    assert (found, entry["level"]) == (priority, level.name)


def test_a_failure_carries_its_error_and_traceback_on_one_line():
    def emit(log):
        try:
            raise ValueError("bad\nthing")
        except ValueError:
            log.failure("serving {path} failed", Failure(), path="/v2/x")

    ((priority, entry),) = emitted(emit)
    assert priority == 2  # log.failure's default level is critical
    assert entry["error"] == "ValueError: bad\nthing"
    assert "Traceback" in entry["traceback"] and "raise ValueError" in entry["traceback"]
    assert entry["path"] == "/v2/x"


def test_fields_json_cannot_hold_arrive_as_text():
    class Thing:
        def __str__(self) -> str:
            return "a thing"

    ((_, entry),) = emitted(
        lambda log: log.info(
            "{what}", what=Thing(), raw=b"\xffab", many=(1, b"x", Thing()), nested={1: {"k": Thing()}}
        )
    )
    assert entry["what"] == "a thing"
    assert entry["raw"] == "\ufffdab"
    assert entry["many"] == [1, "x", "a thing"]
    assert entry["nested"] == {"1": {"k": "a thing"}}


def test_a_bad_format_string_still_logs():
    ((_, entry),) = emitted(lambda log: log.info("{missing} field"))
    assert "Unable to format event" in entry["text"]


def test_the_json_format_is_the_same_object_without_the_priority():
    journal, plain = io.StringIO(), io.StringIO()
    both = LogPublisher(JournalObserver(journal), JSONLinesObserver(plain))
    Logger(namespace="mirrorproxy.test", observer=both).warn("upstream {status}", status=502)

    priority, line = re.fullmatch(r"<(\d)>(.*\n)", journal.getvalue()).groups()
    assert (priority, plain.getvalue()) == ("4", line)
    assert json.loads(line)["status"] == 502
