"""Progress for the admin command's long operations (rich): a bar in bytes
(verify, prefetch), a spinner counting things (listing a bucket, removing
objects).  Only on a terminal; in a pipe, a log or a test there is none,
so output stays one line per event."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from attrs import define
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


@contextmanager
def byte_progress(
    console: Console,
    warn: Callable[[str], None],
    line: Callable[..., None],
    description: str,
) -> Iterator[ByteProgress]:
    if not console.is_terminal:
        yield ByteProgress(warn, line, None, None)
        return
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    with progress:
        task = progress.add_task(description, total=None)
        yield ByteProgress(warn, line, progress, task)


@contextmanager
def count_progress(console: Console, description: str, what: str) -> Iterator[Callable[[int], None]]:
    """`advance(n)` counts `n` more of `what`; the spinner goes when done."""
    if not console.is_terminal:
        yield lambda count: None
        return
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TextColumn(f"{{task.completed:,.0f}} {what}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    with progress:
        task = progress.add_task(description, total=None)
        yield lambda count: progress.advance(task, count)


@define(eq=False)
class ByteProgress:
    """What long operations report to: bytes done, and lines above the bar.

    `advance` is called from worker threads; rich's Progress takes a lock.
    """

    _warn: Callable[[str], None]
    _line: Callable[..., None]
    _progress: Progress | None
    _task: Any

    def set_total(self, total: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, total=total)

    def advance(self, count: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, count)

    def warn(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(f"warning: {text}", style="yellow")
        else:
            self._warn(text)

    def log(self, text: str, style: str | None = None) -> None:
        if self._progress is not None:
            self._progress.console.print(text, style=style)
        else:
            self._line(text, style=style)
