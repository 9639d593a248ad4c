"""``--redis`` URLs: what they name, and one clear line for what they
cannot, never showing the password."""

from __future__ import annotations

import pytest

from mirrorproxy.cluster.address import BadRedisURL, RedisAddress, parse_redis_url
from mirrorproxy.common.errors import ConfigError


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("redis://redis.internal", RedisAddress("redis.internal", 6379, 0)),
        ("redis://redis.internal:6380/3", RedisAddress("redis.internal", 6380, 3)),
        ("redis://10.0.0.5:6379/", RedisAddress("10.0.0.5", 6379, 0)),
        ("redis://[::1]:7000/1", RedisAddress("::1", 7000, 1)),
        ("rediss://cache.example:6380/0", RedisAddress("cache.example", 6380, 0, tls=True)),
        ("redis://:s3cret@h/2", RedisAddress("h", 6379, 2, password="s3cret")),
        (
            "redis://mirror:pa%3Ass%2Fw%40rd@h:1/0",
            RedisAddress("h", 1, 0, username="mirror", password="pa:ss/w@rd"),
        ),
        ("redis://mirror@h", RedisAddress("h", username="mirror")),
        ("  redis://h:6379/0\n", RedisAddress("h")),
    ],
)
def test_what_a_url_names(url: str, address: RedisAddress) -> None:
    assert parse_redis_url(url) == address


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://h:6379/0", "bad Redis URL 'http://h:6379/0': the scheme must be redis:// or rediss://"),
        ("h:6379", "bad Redis URL 'h:6379': the scheme must be redis:// or rediss://"),
        ("redis://", "bad Redis URL 'redis://': no host"),
        ("redis://:pw@/0", "bad Redis URL 'redis://:***@/0': no host"),
        ("redis://h:abc/0", "bad Redis URL 'redis://h:abc/0': Port could not be cast to integer value as 'abc'"),
        ("redis://h:70000/0", "bad Redis URL 'redis://h:70000/0': Port out of range 0-65535"),
        ("redis://h:0/0", "bad Redis URL 'redis://h:0/0': port 0 names no server"),
        ("redis://[::1/0", "bad Redis URL 'redis://[::1/0': Invalid IPv6 URL"),
        ("redis://h/db1", "bad Redis URL 'redis://h/db1': the path must be a database number, not '/db1'"),
        ("redis://h/1/2", "bad Redis URL 'redis://h/1/2': the path must be a database number, not '/1/2'"),
        ("redis://h/-1", "bad Redis URL 'redis://h/-1': the path must be a database number, not '/-1'"),
        ("redis://h/0?timeout=1", "bad Redis URL 'redis://h/0?timeout=1': options after ? or # are not supported"),
        ("redis://u:topsecret@h/x", "bad Redis URL 'redis://u:***@h/x': the path must be a database number, not '/x'"),
    ],
)  # fmt: skip
def test_a_bad_url_gets_one_line_saying_why(url: str, message: str) -> None:
    with pytest.raises(BadRedisURL) as raised:
        parse_redis_url(url)
    assert str(raised.value) == message
    assert isinstance(raised.value, ConfigError)


def test_the_password_is_in_no_message_log_or_repr() -> None:
    address = parse_redis_url("rediss://mirror:topsecret@cache.example:6380/4")
    assert address.display() == "rediss://cache.example:6380/4"
    assert "topsecret" not in repr(address)
    assert parse_redis_url("redis://[::1]/0").display() == "redis://[::1]:6379/0"
