"""An object's bytes streamed with one blocking GET, a chunk at a time, for
tools without a reactor (the admin command's verify): memory stays bounded
by the chunk, whatever the object's size."""

from __future__ import annotations

from typing import Any

from attrs import frozen
from botocore.exceptions import BotoCoreError  # type: ignore[import-untyped]

from .bucket import Bucket, S3Error


@frozen
class StreamedObject:
    key: str
    size: int
    modified: float
    _body: Any

    @property
    def identity(self) -> tuple[str, int, float]:
        """Which copy this is: objects at a key are replaced, never rewritten,
        and a replacement is a later upload."""
        return self.key, self.size, self.modified

    def read(self, size: int) -> bytes:
        """Up to `size` bytes; b"" at the end; S3Error if the stream breaks."""
        try:
            data: bytes = self._body.read(size)
        except (BotoCoreError, OSError) as e:
            raise S3Error(f"S3 get_object {self.key}: reading failed: {e}") from None
        return data

    def close(self) -> None:
        self._body.close()


def open_object(bucket: Bucket, key: str) -> StreamedObject | None:
    """The object at `key`, its body open; None if there is none."""
    found = bucket.get_object(key)
    if found is None:
        return None
    return StreamedObject(key, int(found["ContentLength"]), found["LastModified"].timestamp(), found["Body"])
