"""A small filesystem of a test's own: a tmpfs of a fixed size, mounted on a
directory, to fill up or to turn read-only under a running mirror.

Mounting needs root (`tools.require_mount` says so before a test tries).
`unmount` never leaves a mount behind: if something still holds a file open
on it (a mirror that did not stop), it detaches the mount lazily instead.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from attrs import define


def _run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")


@define(eq=False)
class Tmpfs:
    path: Path
    size: int
    mounted: bool = True

    @classmethod
    def mount(cls, path: Path, size: int) -> Tmpfs:
        """A tmpfs of ``size`` bytes (a multiple of the page size) on ``path``."""
        path.mkdir(parents=True, exist_ok=True)
        _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path))
        return cls(path, size)

    def used(self) -> int:
        """Bytes in use, as df counts them."""
        stats = os.statvfs(self.path)
        return (stats.f_blocks - stats.f_bfree) * stats.f_frsize

    def free(self) -> int:
        stats = os.statvfs(self.path)
        return stats.f_bavail * stats.f_frsize

    def read_only(self) -> None:
        """Remount read-only; the kernel refuses while a file is open for
        writing on it."""
        _run("mount", "-o", "remount,ro", str(self.path))

    def writable(self) -> None:
        _run("mount", "-o", "remount,rw", str(self.path))

    def unmount(self) -> None:
        if not self.mounted:
            return
        try:
            _run("umount", str(self.path))
        except RuntimeError:
            # Busy: detach it now; the kernel frees it when the last holder closes.
            _run("umount", "-l", str(self.path))
        self.mounted = False
