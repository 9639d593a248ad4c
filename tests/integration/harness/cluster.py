"""Several mirror nodes sharing one bucket and one Redis, as an operator
would start them: a config file each (the bucket's keys in it, readable by
the owner alone), ``--advertise`` on its own port."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from attrs import define

from .mirror import Mirror, MirrorFactory
from .processes import free_port
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

    def config(self, port: int, extra: str = "") -> Path:
        lines = [
            f'storage = "s3://{self.bucket}/cache"',
            f's3-endpoint = "{self.s3.endpoint}"',
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

    def start_node(self, options: Sequence[str] = (), extra: str = "") -> Mirror:
        """A new node with an empty cache directory of its own."""
        port = free_port()
        node = self.start_mirror(
            cache_dir=self.directory / f"cache-{port}",
            port=port,
            options=["--config", str(self.config(port, extra)), *options],
        )
        self.nodes.append(node)
        return node

    def blob_keys(self) -> list[str]:
        """The blobs' keys in the bucket (not their last-use markers)."""
        listed = self.s3.client().list_objects_v2(Bucket=self.bucket, Prefix="cache/")
        return [o["Key"] for o in listed.get("Contents", []) if "/blobs/" in o["Key"]]
