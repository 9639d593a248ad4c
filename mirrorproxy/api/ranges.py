"""The ``Range`` header of a blob GET: one byte range, or an error."""

from __future__ import annotations

import re

from .errors import RANGE_INVALID, RegistryError

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class RangeNotSatisfiable(RegistryError):
    pass


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive byte range asked for, or None for the whole blob.

    A header that is not a single ``bytes=`` range is refused: clients that
    resume downloads send exactly one.
    """
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if not match or (not match.group(1) and not match.group(2)):
        raise _unsatisfiable(f"unsupported Range {header[:100]!r}: one bytes= range only", size)
    first, last = match.group(1), match.group(2)
    if first:
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
        if start >= size or (last and int(last) < start):
            raise _unsatisfiable(f"Range {header[:100]!r} outside a blob of {size} bytes", size)
    else:
        suffix = int(last)
        if suffix == 0:
            raise _unsatisfiable("empty suffix Range", size)
        start, end = max(size - suffix, 0), size - 1
    return start, end


def _unsatisfiable(message: str, size: int) -> RangeNotSatisfiable:
    return RangeNotSatisfiable(
        416,
        RANGE_INVALID,
        message,
        headers=((b"Content-Range", f"bytes */{size}".encode("ascii")),),
    )
