"""How the admin command's results look: rich on a terminal, plain lines in a pipe.

The domain modules return values and report progress through callables;
this module turns them into text.  On a terminal: tables and progress bars
(rich).  Otherwise (a pipe, a log, a test): aligned columns and one line per
event, never wrapped, never coloured, so they grep well.  ``--json`` output
is built here too, so the human and machine forms cannot drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from attrs import define, field
from rich import box
from rich.console import Console
from rich.table import Table

from ..storage.layout import TYPE, type_path
from .contents import Listing
from .gc import GcReport, PurgeReport, Removal
from .inventory import Inventory
from .prefetch import ImagePlan, ImageResult
from .progress import ByteProgress, byte_progress, count_progress
from .scrape import OUTCOMES, CacheOutcomes
from .source import ContentSource
from .verify import VerifyReport

_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")


def human_size(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    value = float(count)
    for unit in _UNITS:
        value /= 1024
        if value < 1024 or unit == _UNITS[-1]:
            break
    return f"{value:.1f} {unit}"


def human_duration(seconds: float) -> str:
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length and seconds % length == 0:
            return f"{int(seconds // length)}{unit}"
    return f"{seconds:g}s"


def _plural(count: int, word: str, plural: str | None = None) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {plural or word + 's'}"


@define(eq=False)
class Output:
    """Where results go: stdout for results, stderr for warnings."""

    out: Console = field(factory=lambda: Console(soft_wrap=True, highlight=False, markup=False, emoji=False))
    err: Console = field(
        factory=lambda: Console(stderr=True, soft_wrap=True, highlight=False, markup=False, emoji=False)
    )

    @property
    def is_terminal(self) -> bool:
        return self.out.is_terminal

    def line(self, text: str, style: str | None = None) -> None:
        self.out.print(text, style=style)

    def warn(self, text: str) -> None:
        self.err.print(f"warning: {text}", style="yellow")

    def note(self, text: str) -> None:
        self.err.print(f"note: {text}")

    def json(self, document: object) -> None:
        self.out.out(json.dumps(document, indent=2), highlight=False)

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[str] = ()) -> None:
        """Rows under headers; columns named in `right` aligned right (numbers)."""
        if self.is_terminal:
            table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
            for header in headers:
                table.add_column(header, justify="right" if header in right else "left", overflow="fold")
            for row in rows:
                table.add_row(*row)
            self.out.print(table)
            return
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
        for row in [list(headers), *rows]:
            cells = [
                c.rjust(w) if h in right else c.ljust(w) for c, w, h in zip(row, widths, headers)
            ]
            self.out.print("  ".join(cells).rstrip())

    @contextmanager
    def byte_progress(self, description: str) -> Iterator[ByteProgress]:
        """A progress bar in bytes on a terminal; nothing but `log` lines otherwise."""
        with byte_progress(self.out, self.warn, self.line, description) as progress:
            yield progress

    @contextmanager
    def count_progress(self, description: str, what: str) -> Iterator[Callable[[int], None]]:
        """A spinner counting `what` on a terminal, gone when done; nothing otherwise."""
        with count_progress(self.out, description, what) as advance:
            yield advance


# -- stats ----------------------------------------------------------------------


def stats_document(
    inventory: Inventory,
    metrics_url: str | None,
    outcomes: CacheOutcomes | str | None,
    first_tier: str | None = None,
) -> dict[str, object]:
    """What `stats` says; `first_tier` is a node's cache directory, when
    the inventory is of the bucket it shares."""
    registries = []
    for r in inventory.registries:
        registries.append(
            {
                "name": r.name,
                "repositories": len({t.repository for t in r.tags}),
                "tags": sum(1 for t in r.tags if t.variant is None),
                "manifests": {"count": len(r.manifests), "bytes": sum(m.size for m in r.manifests.values())},
                "blobs": {"count": len(r.blobs), "bytes": sum(b.size for b in r.blobs.values())},
            }
        )
    source = inventory.source
    document: dict[str, object] = {
        ("cacheDir" if source.kind == "cache" else "bucket"): source.location,
        "bytes": sum(f.size for r in inventory.registries for f in r.content()),
        "entries": sum(len(r.manifests) + len(r.blobs) for r in inventory.registries),
        "registries": registries,
    }
    for name, usage in inventory.usage.items():
        document[name] = {"files": usage.files, "bytes": usage.bytes}
    if first_tier is not None:
        document["firstTier"] = first_tier
    if metrics_url is not None or isinstance(outcomes, str):
        metrics: dict[str, object] = {"url": metrics_url}
        if isinstance(outcomes, CacheOutcomes):
            metrics["outcomes"] = outcomes.counts
            metrics["hitRatio"] = outcomes.hit_ratio
        else:
            metrics["error"] = outcomes
        document["metrics"] = metrics
    return document


def show_stats(output: Output, document: dict[str, Any]) -> None:
    where = f"cache {document['cacheDir']}" if "cacheDir" in document else f"bucket {document['bucket']}"
    output.line(
        f"{where}: {human_size(document['bytes'])} "
        f"in {_plural(document['entries'], 'entry', 'entries')}"
    )
    for r in document["registries"]:
        output.line(
            f"  {r['name']}: {_plural(r['repositories'], 'repository', 'repositories')}, "
            f"{_plural(r['tags'], 'tag')}, "
            f"{_plural(r['manifests']['count'], 'manifest')} ({human_size(r['manifests']['bytes'])}), "
            f"{_plural(r['blobs']['count'], 'blob')} ({human_size(r['blobs']['bytes'])})"
        )
    for name, why in (("spool", "being written"), ("quarantine", "found corrupt by verify")):
        part = document.get(name)
        if part is not None:
            output.line(f"  {name}: {_plural(part['files'], 'file')} ({human_size(part['bytes'])}), {why}")
    if "firstTier" in document:
        output.line(f"  not counted: {first_tier_note(document['firstTier'])}")
    metrics = document.get("metrics")
    if metrics is None:
        return
    if "error" in metrics:
        if metrics["url"] is None:
            output.line(f"hit ratio: unknown, {metrics['error']}")
        else:
            output.line(f"hit ratio: unknown, no metrics at {metrics['url']} ({metrics['error']})")
        return
    counts = metrics["outcomes"]
    shown = ", ".join(f"{o} {counts.get(o, 0)}" for o in OUTCOMES)
    ratio = metrics["hitRatio"]
    percent = "no requests yet" if ratio is None else f"{ratio:.1%}"
    output.line(f"hit ratio since the service started: {percent} ({shown})")


def first_tier_note(directory: str) -> str:
    return f"this node's first tier, {directory} (--cache-dir {directory} looks at it)"


def show_source(output: Output, source: ContentSource, first_tier: str | None) -> None:
    """Which cache a command works on, when it is not the directory the
    user may expect: a bucket in front of which the node's directory is
    only a first tier."""
    if source.kind == "bucket":
        tier = f"; {first_tier_note(first_tier)}" if first_tier is not None else ""
        output.line(f"bucket {source.location}{tier}")


# -- ls ----------------------------------------------------------------------------


def listing_document(listing: Listing) -> dict[str, object]:
    return {
        "repositories": [
            {
                "registry": r.registry,
                "repository": r.repository,
                "size": r.size,
                "tags": [
                    {
                        "tag": t.tag,
                        "digest": str(t.digest) if t.digest else None,
                        "mediaType": t.media_type,
                        "size": t.size,
                        "cached": t.size is not None,
                        "learnt": t.learnt,
                        **({"problem": t.problem} if t.problem else {}),
                    }
                    for t in r.tags
                ],
            }
            for r in listing.repositories
        ],
        "size": listing.size,
    }


def show_listing(output: Output, listing: Listing) -> None:
    if not listing.repositories:
        output.line("no tags in the cache")
        return
    several = len({r.registry for r in listing.repositories}) > 1
    headers = (["REGISTRY"] if several else []) + ["REPOSITORY", "TAG", "DIGEST", "SIZE"]
    rows = []
    for r in listing.repositories:
        for t in r.tags:
            size = human_size(t.size) if t.size is not None else "-"
            digest = str(t.digest) if t.digest else f"({t.problem})"
            rows.append(([r.registry] if several else []) + [r.repository, t.tag, digest, size])
    output.table(headers, rows, right=("SIZE",))
    if len(listing.repositories) > 1:
        for r in listing.repositories:
            output.line(f"{r.repository}: {human_size(r.size)} in {_plural(len(r.tags), 'tag')}")
    output.line(
        f"total: {human_size(listing.size)} in {_plural(listing.tag_count, 'tag')} "
        "(content shared between tags counted once)"
    )


# -- verify ------------------------------------------------------------------------


def show_verify(output: Output, report: VerifyReport, unit: str = "file") -> None:
    for text in report.warnings:
        output.warn(text)
    for f in report.findings:
        where = f.outcome or "left: a fresh copy replaced it meanwhile"
        output.line(f"CORRUPT {f.kind} {f.name} ({f.registry}) {f.path}: {f.reason}; {where}", style="red")
    summary = f"checked {_plural(report.checked, unit)} ({human_size(report.bytes)}): "
    if report.findings:
        summary += f"{len(report.findings)} corrupt"
    elif report.warnings:
        summary += "none corrupt"
    else:
        summary += "all good"
    if report.unchecked:
        summary += f", {report.unchecked} not checked"
    if report.warnings:
        summary += f", {_plural(len(report.warnings), 'warning')}"
    bad = report.findings or report.unchecked
    output.line(summary, style="red" if bad else "yellow" if report.warnings else "green")


# -- gc and purge ------------------------------------------------------------------


def removal_lines(removed: Sequence[Removal], dry_run: bool) -> Iterator[str]:
    verb = "would remove" if dry_run else "removed"
    types_of_removed = {type_path(r.path) for r in removed if r.kind != TYPE}
    for r in removed:
        # A manifest's type goes with it; only an orphan type is news.
        if r.kind == TYPE and r.path in types_of_removed:
            continue
        yield f"{verb} {r.kind} {r.name} ({r.registry}, {human_size(r.size)})"


def show_gc(output: Output, report: GcReport, grace: float, dry_run: bool, unit: str = "file") -> None:
    for text in report.warnings:
        output.warn(text)
    for text in removal_lines(report.removed, dry_run):
        output.line(text)
    verb = "would free" if dry_run else "freed"
    output.line(f"{verb} {human_size(report.freed)} ({_plural(len(report.removed), unit)})")
    if report.kept_young:
        output.line(
            f"kept {_plural(report.kept_young, 'unreferenced ' + unit)} used within the grace period "
            f"({human_duration(grace)}; --grace 0 removes them)"
        )
    if report.kept_unsure:
        kept = _plural(report.kept_unsure, "unreferenced " + unit)
        output.line(f"kept {kept} that the tags warned about may need")


def show_purge(output: Output, report: PurgeReport, grace: float, dry_run: bool, unit: str = "file") -> None:
    for text in removal_lines(report.tags, dry_run):
        output.line(text)
    if report.gc is None:
        output.line("content is left for gc (or purge with --gc)")
        return
    show_gc(output, report.gc, grace, dry_run, unit)


# -- prefetch ----------------------------------------------------------------------


@define(eq=False)
class PrefetchDisplay:
    """A PrefetchObserver that reports to a ByteProgress."""

    _progress: ByteProgress

    def warned(self, text: str) -> None:
        self._progress.warn(text)

    def resolved(self, plan: ImagePlan) -> None:
        platforms = f" for {', '.join(str(p) for p in plan.platforms)}" if plan.platforms else ""
        self._progress.log(
            f"resolved {plan.image} to {plan.digest}{platforms}: "
            f"{_plural(len(plan.manifests), 'manifest')}, {_plural(len(plan.blobs), 'blob')} "
            f"({human_size(plan.size)})"
        )

    def started(self, total_bytes: int) -> None:
        self._progress.set_total(total_bytes)

    def received(self, count: int) -> None:
        self._progress.advance(count)

    def finished(self, result: ImageResult) -> None:
        if result.error is not None:
            self._progress.log(f"FAILED {result.image}: {result.error}", style="red")
            return
        outcomes = ", ".join(f"{k} {v}" for k, v in result.outcomes.items())
        self._progress.log(
            f"pulled {result.image}: {_plural(result.blobs, 'blob')}, {human_size(result.bytes)}"
            + (f" ({outcomes})" if outcomes else "")
        )


def show_prefetch_summary(output: Output, results: Sequence[ImageResult]) -> None:
    failed = sum(1 for r in results if not r.ok)
    output.line(
        f"{_plural(len(results) - failed, 'image')} pulled, {failed} failed",
        style="red" if failed else None,
    )

