"""Followers' positions: the fastest paces upstream (a fill runs at most
LEAD_HIGH ahead of it, and goes on once it is within LEAD_LOW); the slowest
is how far a relay tail may be trimmed."""

from __future__ import annotations

from mirrorproxy.cache.fill.followers import LEAD_HIGH, LEAD_LOW, Followers


def test_a_fill_waits_once_its_fastest_follower_is_lead_high_behind():
    followers = Followers()
    slow, fast = object(), object()
    followers.at(slow, 0)
    followers.at(fast, 1000)

    assert not followers.too_far_behind(1000 + LEAD_HIGH - 1)
    assert followers.too_far_behind(1000 + LEAD_HIGH)


def test_a_fill_without_followers_never_waits_for_one():
    followers = Followers()

    assert not followers.too_far_behind(10 * LEAD_HIGH)
    assert followers.close_behind(10 * LEAD_HIGH)


def test_a_waiting_fill_goes_on_once_the_fastest_is_within_lead_low():
    followers = Followers()
    follower = object()
    received = 5 * LEAD_HIGH

    followers.at(follower, received - LEAD_LOW)
    assert not followers.close_behind(received)
    followers.at(follower, received - LEAD_LOW + 1)
    assert followers.close_behind(received)


def test_a_follower_that_leaves_no_longer_counts():
    followers = Followers()
    a, b = object(), object()
    followers.at(a, 10)
    followers.at(b, 20)

    followers.left(b)
    followers.left(b)  # once is enough; twice is harmless

    assert (len(followers), followers.offsets(), followers.slowest(default=99)) == (1, [10], 10)
    followers.left(a)
    assert followers.slowest(default=99) == 99


def test_each_follower_has_one_position_its_latest():
    followers = Followers()
    follower = object()
    followers.at(follower, 10)
    followers.at(follower, 30)

    assert followers.offsets() == [30]
