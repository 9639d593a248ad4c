"""Several mirror nodes sharing one bucket and one Redis, as an operator
would start them: a config file each (the bucket's keys in it, readable by
the owner alone), ``--advertise`` on its own port, logs as JSON lines (what
a test reads of them: `nodelog`).

A node may reach upstream or the bucket through a relay of the test's (a
`SlowLink`), to pace its fills or to take the bucket away from it alone."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from attrs import define

from .mirror import Mirror, MirrorFactory
from .processes import POLL_INTERVAL, free_port
from .redisserver import RedisServer
from .s3service import S3Service


@define
class Cluster:
    s3: S3Service
    bucket: str
    redis: RedisServer | None
    directory: Path
    start_mirror: MirrorFactory
    nodes: list[Mirror]

    @classmethod
    def empty(
        cls, s3: S3Service, redis: RedisServer | None, directory: Path, start_mirror: MirrorFactory
    ) -> Cluster:
        return cls(s3, s3.new_bucket("cluster"), redis, directory, start_mirror, [])

    def config(self, port: int, extra: str = "", s3_endpoint: str | None = None) -> Path:
        lines = [
            f'storage = "s3://{self.bucket}/cache"',
            f's3-endpoint = "{s3_endpoint or self.s3.endpoint}"',
            f's3-region = "{self.s3.region}"',
            f'advertise = "http://127.0.0.1:{port}"',
        ]
        if self.redis is not None:
            lines.append(f'redis = "{self.redis.url()}"')
        lines += [extra, "", "[s3-credentials]"]
        lines += [f'access-key-id = "{self.s3.access_key}"', f'secret-access-key = "{self.s3.secret_key}"']
        path = self.directory / f"node-{port}.toml"
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o600)
        return path

    def start_node(
        self,
        options: Sequence[str] = (),
        extra: str = "",
        *,
        upstream_url: str | None = None,
        s3_endpoint: str | None = None,
    ) -> Mirror:
        """A new node with an empty cache directory of its own; upstream
        and the bucket at ``upstream_url`` and ``s3_endpoint`` if given (a
        relay to them), else where they are."""
        port = free_port()
        config = self.config(port, extra, s3_endpoint)
        node = self.start_mirror(
            cache_dir=self.directory / f"cache-{port}",
            upstream_url=upstream_url,
            port=port,
            options=["--config", str(config), "--log-format", "json", *options],
        )
        self.nodes.append(node)
        return node

    def blob_keys(self) -> list[str]:
        """The blobs' keys in the bucket (not their last-use markers)."""
        listed = self.s3.client().list_objects_v2(Bucket=self.bucket, Prefix="cache/")
        return [o["Key"] for o in listed.get("Contents", []) if "/blobs/" in o["Key"]]

    def holds_blob(self, digest: str) -> bool:
        return any(key.endswith(digest.removeprefix("sha256:")) for key in self.blob_keys())

    def wait_for_blobs(self, digests: Sequence[str], timeout: float = 30.0) -> None:
        """Until the bucket holds every one of ``digests`` (a node uploads
        what it fetched just after its commit, after the client's answer)."""
        deadline = time.monotonic() + timeout
        missing = list(digests)
        while missing:
            keys = self.blob_keys()
            missing = [d for d in digests if not any(k.endswith(d.removeprefix("sha256:")) for k in keys)]
            if missing and time.monotonic() > deadline:
                raise TimeoutError(f"not in the bucket within {timeout}s: {missing}")
            if missing:
                time.sleep(POLL_INTERVAL)
