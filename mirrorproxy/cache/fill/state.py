"""Where a fill is in its life, and why one failed."""

from __future__ import annotations

from enum import Enum, StrEnum


class FillState(Enum):
    STARTING = "starting"  # waiting for upstream's answer
    STREAMING = "streaming"  # receiving the body, writing it to the spool file
    VERIFIED = "verified"  # length and digest checked; being committed (or relayed whole)
    COMMITTED = "committed"  # in the cache for good
    FAILED = "failed"  # nothing is committed; every follower aborts

    # Whether every byte is there and checked: followers may end.  An
    # attribute, not a property: followers ask at every send.
    verified: bool

    def __init__(self, value: str) -> None:
        self.verified = value in ("verified", "committed")


class FailureKind(StrEnum):
    """Why a fill failed: the ``reason`` label of the fill-failure metric."""

    UPSTREAM = "upstream"  # no answer, or a body cut short for good
    LENGTH = "length"  # more or fewer bytes than upstream's Content-Length
    DIGEST = "digest"  # the bytes do not hash to the digest
    DISK = "disk"  # the cache could not take the blob
