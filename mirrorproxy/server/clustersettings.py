"""Shared storage and coordination: the options that make a node one of
several sharing a bucket (``--storage s3://BUCKET/PREFIX``) and a Redis
(``--redis``), checked once into a frozen value.

Without ``--storage`` a mirror is one machine with its cache directory, as
ever.  With it, the cache directory is each node's first tier in front of
the bucket.  ``--redis`` coordinates the nodes (one upstream fetch per digest
for the whole cluster, shared tag records, purges everywhere); it needs
``--advertise``, the URL other nodes reach this one by.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from attrs import field, frozen

from ..cluster.address import RedisAddress, parse_redis_url
from ..common.errors import ConfigError
from ..storage.s3.location import S3Endpoint, S3Location, S3LocationInvalid

BLOB_REDIRECT_OFF = "off"
BLOB_REDIRECT_PRESIGNED = "presigned"
# How long a presigned GET stays good: long enough for a slow client to
# fetch a large layer, whatever the pace (SigV4 allows a week).
PRESIGNED_EXPIRY = 6 * 3600


@frozen
class S3Keys:
    access_key_id: str
    secret_access_key: str = field(repr=False)


@frozen
class ClusterSettings:
    storage: S3Location | None = None
    endpoint: S3Endpoint = field(factory=S3Endpoint)
    # From the config file's [s3-credentials]; the environment (the AWS way)
    # wins over them.
    keys: S3Keys | None = None
    redis: RedisAddress | None = None
    advertise: str | None = None
    # "off", "presigned", or the base URL of a CDN in front of the bucket.
    blob_redirect: str = BLOB_REDIRECT_OFF

    @property
    def shared(self) -> bool:
        return self.storage is not None

    @property
    def redis_prefix(self) -> str:
        """What this cluster's keys and channel in Redis start with: clusters
        sharing one Redis are told apart by their bucket and prefix."""
        assert self.storage is not None
        return f"mirrorproxy/{self.storage.bucket}/{self.storage.prefix}"

    @property
    def node_id(self) -> str:
        """How other nodes and the logs name this node."""
        return self.advertise or "this node"


def cluster_settings_from(values: dict[str, Any]) -> ClusterSettings:
    """The cluster options among the file's and the command line's values."""
    storage = _storage(values.get("storage"))
    endpoint = S3Endpoint(
        _http_url("s3-endpoint", values["s3-endpoint"]) if values.get("s3-endpoint") else None,
        values.get("s3-region") or "us-east-1",
    )
    keys = _keys(values.get("s3-credentials"))
    redis = parse_redis_url(values["redis"]) if values.get("redis") else None
    advertise = _http_url("advertise", values["advertise"]) if values.get("advertise") else None
    redirect = _blob_redirect(values.get("blob-redirect") or BLOB_REDIRECT_OFF)
    if storage is None:
        for name in ("s3-endpoint", "s3-region", "s3-credentials", "redis", "advertise"):
            if values.get(name):
                raise ConfigError(f"{name} needs --storage s3://BUCKET/PREFIX (nodes share a bucket)")
        if redirect != BLOB_REDIRECT_OFF:
            raise ConfigError("blob-redirect needs --storage s3://BUCKET/PREFIX (it sends clients to the bucket)")
    if redis is not None and advertise is None:
        raise ConfigError("redis needs --advertise URL: how the other nodes reach this one (e.g. http://10.0.0.5:5000)")
    return ClusterSettings(storage, endpoint, keys, redis, advertise, redirect)


def _storage(value: Any) -> S3Location | None:
    if not value:
        return None
    try:
        return S3Location.parse(str(value))
    except S3LocationInvalid as e:
        raise ConfigError(f"storage: {e} (a local cache is --cache-dir)") from None


def _http_url(name: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.query:
        raise ConfigError(f"{name} must be an http(s) URL with a host and no credentials, not {value!r}")
    try:
        parts.port
    except ValueError:
        raise ConfigError(f"{name}: bad port in {value!r}") from None
    return value.rstrip("/")


def _keys(table: Any) -> S3Keys | None:
    if table is None:
        return None
    access, secret = table.get("access-key-id"), table.get("secret-access-key")
    if not access or not secret:
        raise ConfigError("[s3-credentials] needs both access-key-id and secret-access-key")
    return S3Keys(access, secret)


def _blob_redirect(value: str) -> str:
    if value in (BLOB_REDIRECT_OFF, BLOB_REDIRECT_PRESIGNED):
        return value
    if value.startswith(("http://", "https://")):
        return _http_url("blob-redirect", value)
    raise ConfigError(f"blob-redirect must be off, presigned or a CDN's base URL, not {value!r}")
