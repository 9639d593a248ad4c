"""An S3-compatible server the fixtures started (SeaweedFS, Ceph RGW), as the
tests and the mirror's options see it: an endpoint, a region and one pair of
keys, which may make buckets.
"""

from __future__ import annotations

import uuid
from typing import Any

from attrs import frozen


@frozen
class S3Service:
    name: str  # "seaweedfs" or "ceph-rgw", for test ids and messages
    endpoint: str  # http://127.0.0.1:PORT
    region: str
    access_key: str
    secret_key: str

    def client(self) -> Any:
        """A botocore S3 client with these keys (path-style addressing, as
        an endpoint on 127.0.0.1 needs)."""
        import botocore.session
        from botocore.config import Config

        session = botocore.session.get_session()
        return session.create_client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )

    def new_bucket(self, prefix: str = "mirror") -> str:
        """A new, empty bucket of its own for one test."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def environment(self) -> dict[str, str]:
        """The keys the AWS way, for a process started with them."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}
