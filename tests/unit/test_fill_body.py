"""The upstream body as a fill holds it: paused and resumed, stopped after
a silence (but never for the time the fill itself held it paused), and how
it ended, which decides between verifying, resuming and waiting."""

from __future__ import annotations

import pytest
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.client import PotentialDataLoss, ResponseDone

from mirrorproxy.cache.fill.body import BodyEnd, UpstreamBody

SILENCE = 30.0


def receiving() -> tuple[UpstreamBody, StringTransport, Clock]:
    clock = Clock()
    body = UpstreamBody(clock, SILENCE)
    producer = StringTransport()
    body.receiver(lambda data: None, lambda reason: None).makeConnection(producer)
    return body, producer, clock


def test_an_upstream_silent_for_too_long_is_stopped():
    body, producer, clock = receiving()

    clock.advance(SILENCE)

    assert producer.producerState == "stopped"
    assert body.ended(Failure(ConnectionLost()), held_for_followers=False) is BodyEnd.SILENT
    assert not body.complete


def test_each_arrival_starts_the_silence_again():
    body, producer, clock = receiving()

    for _ in range(5):
        clock.advance(SILENCE - 1)
        body.alive()

    assert producer.producerState == "producing"


def test_a_body_the_fill_holds_paused_is_never_silent():
    body, producer, clock = receiving()

    body.pause()
    clock.advance(10 * SILENCE)
    assert producer.producerState == "paused" and not body.flowing

    body.resume()
    assert producer.producerState == "producing" and body.flowing
    clock.advance(SILENCE)
    assert producer.producerState == "stopped"


@pytest.mark.parametrize("end", [ResponseDone, PotentialDataLoss])
def test_a_body_that_ended_cleanly_is_complete(end):
    body, _, clock = receiving()

    assert body.ended(Failure(end()), held_for_followers=False) is BodyEnd.COMPLETE
    assert body.complete and not body.flowing
    assert not clock.getDelayedCalls()


def test_a_broken_connection_is_lost():
    body, _, _ = receiving()

    assert body.ended(Failure(ConnectionLost()), held_for_followers=True) is BodyEnd.LOST
    assert not body.complete


def test_a_connection_dropped_while_held_for_followers_is_no_loss():
    body, _, _ = receiving()
    body.pause()

    assert body.ended(Failure(ConnectionLost()), held_for_followers=True) is BodyEnd.DROPPED_WHILE_HELD
    assert not body.paused and not body.complete


def test_a_connection_dropped_while_held_for_the_disk_is_lost():
    body, _, _ = receiving()
    body.pause()

    assert body.ended(Failure(ConnectionLost()), held_for_followers=False) is BodyEnd.LOST


def test_the_next_body_is_not_complete_yet():
    body, _, clock = receiving()
    body.ended(Failure(ResponseDone()), held_for_followers=False)

    body.receiver(lambda data: None, lambda reason: None)

    assert not body.complete and clock.getDelayedCalls()


def test_stopping_stops_the_producer_and_the_silence():
    body, producer, clock = receiving()

    body.stop()

    assert producer.producerState == "stopped" and not clock.getDelayedCalls()


def test_the_receiver_hands_each_chunk_and_the_end_to_the_fill():
    body = UpstreamBody(Clock(), SILENCE)
    chunks: list[bytes] = []
    ends: list[Failure] = []
    protocol = body.receiver(chunks.append, ends.append)
    producer = StringTransport()

    protocol.makeConnection(producer)
    protocol.dataReceived(b"abc")
    protocol.dataReceived(b"def")
    protocol.connectionLost(Failure(ResponseDone()))

    assert chunks == [b"abc", b"def"] and [e.type for e in ends] == [ResponseDone]


def test_a_body_no_longer_wanted_is_stopped_as_soon_as_it_starts():
    body = UpstreamBody(Clock(), SILENCE)
    protocol = body.receiver(lambda data: None, lambda reason: None)
    body.stop()
    producer = StringTransport()

    protocol.makeConnection(producer)

    assert producer.producerState == "stopped"
