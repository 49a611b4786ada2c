"""Runs the photos of a ``bgremove remove`` batch through the server on a thread pool,
and counts what became of each: one bad photo never stops the rest."""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from tqdm import tqdm

from serving import compositing, images
from serving.client import BackgroundRemover, ModelNotFound, RequestFailed, ServerUnavailable
from serving.compositing import Background
from serving.output_plan import STDIO, Task
from serving.output_writer import WriteError, save

# Write errors that every later photo would meet too: the batch stops.
_DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}

# Photos this large go at most two at a time, whatever --jobs says: four 54-megapixel
# photos at -j 4 peaked at 5.5 GB, two at a time at 4.5 GB in the same time (one at a
# time: 3.4 GB, but 1.7x slower).
BIG_PHOTO_PIXELS = 20_000_000
_BIG_PHOTOS = threading.Semaphore(2)
# Photos this large (a 200 MP one takes 4.9 GB) go alone: they take both slots, one
# such photo at a time, so two of them never wait on each other's second slot.
HUGE_PHOTO_PIXELS = 100_000_000
_HUGE_PHOTOS = threading.Lock()


@dataclass
class Summary:
    """What became of every photo of a run, for the lines printed at its end."""

    processed: list[Task] = field(default_factory=list)
    skipped: list[Task] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    not_attempted: int = 0  # left when the server or the disk went away
    attempted: int = 0  # photos of the run that were processed or failed
    notes: list[tuple[str, str]] = field(default_factory=list)


def run_all(
    todo: list[Task],
    remover: BackgroundRemover,
    background: Background,
    args: argparse.Namespace,
    summary: Summary,
) -> Exception | None:
    """Runs the tasks on a thread pool; returns the error that made further work pointless."""
    fatal: Exception | None = None
    # A hung server costs the full timeout per photo: two rounds of --jobs of them in
    # a row (at least three) end the batch.
    stalled, stall_limit = 0, max(3, 2 * args.jobs)
    with (
        ThreadPoolExecutor(max_workers=args.jobs) as pool,
        # A bar only on a terminal: in logs its carriage returns are noise.
        tqdm(
            total=len(todo),
            unit="photo",
            disable=len(todo) < 2 or not sys.stderr.isatty(),
            file=sys.stderr,
        ) as bar,
    ):
        futures = {pool.submit(_process, t, remover, background, args): t for t in todo}
        recorded: set[Future] = set()
        try:
            for future in as_completed(futures):
                if future.cancelled():
                    continue
                bar.update()
                recorded.add(future)
                error = _record(
                    future, futures[future], summary, (ServerUnavailable, ModelNotFound)
                )
                stalled = stalled + 1 if _timed_out(future) else 0
                if error is None and stalled >= stall_limit:
                    error = RequestFailed(
                        f"the model server at {args.server} answered none of the last "
                        f"{stalled} photos within {args.timeout:g}s: it is hung or "
                        "overloaded; stopped (raise --timeout for a slow server)"
                    )
                if error is not None:
                    fatal = fatal or error
                    for pending in futures:
                        pending.cancel()
        except KeyboardInterrupt:
            # Ctrl-C: drop the queued photos; those being written finish and are counted.
            pool.shutdown(wait=False, cancel_futures=True)
            for future, task in futures.items():
                if future not in recorded and not future.cancelled():
                    _record(future, task, summary, (ServerUnavailable, ModelNotFound))
            raise
    return fatal


def _check_writable(task: Task) -> None:
    """Fails a photo before it is sent when its output folder (or the nearest one that
    exists) may not be written to: a locked folder would take a request per photo only
    to refuse each result. Other folders of the batch go on."""
    folder = Path(task.dest).parent
    existing = next((p for p in (folder, *folder.parents) if p.exists()), folder)
    if existing.is_dir() and not os.access(existing, os.W_OK | os.X_OK):
        raise WriteError(
            errno.EACCES, f"cannot write {task.dest}: {existing} may not be written to"
        )


def _timed_out(future: Future) -> bool:
    error = future.exception()
    return isinstance(error, RequestFailed) and error.code == grpc.StatusCode.DEADLINE_EXCEEDED


def _record(
    future: Future, task: Task, summary: Summary, server_errors: tuple[type[Exception], ...]
) -> Exception | None:
    """Counts a finished photo; returns the error if every later photo would meet it too."""
    try:
        note = future.result()
    except server_errors as err:  # no server or no model: not this photo's fault
        return err
    except Exception as err:  # one bad photo never stops the batch
        summary.attempted += 1
        summary.failed.append((str(task.source), _one_line(err)))
        if isinstance(err, WriteError) and err.errno in _DISK_ERRORS:
            return err  # but a full disk fails every later one too
        return None
    summary.attempted += 1
    summary.processed.append(task)
    if note:
        summary.notes.append((str(task.source), note))
    return None


def _process(
    task: Task,
    remover: BackgroundRemover,
    background: Background,
    args: argparse.Namespace,
) -> str | None:
    """Writes the task's output; returns a note for the summary, if any."""
    if task.dest != STDIO:
        _check_writable(task)
    source = _read_stdin() if task.source == STDIO else task.source
    pixels, frames = images.header(source)
    with _memory_slots(pixels):
        if args.mask_only:
            mask = remover.mask(source)
            result = compositing.alpha_from_mask(mask, mask.size, args.threshold, args.feather)
        else:
            result = remover.remove(source, background, args.threshold, args.feather)
        save(result, task)
    return f"the first of its {frames} frames only" if frames > 1 else None


@contextlib.contextmanager
def _memory_slots(pixels: int) -> Iterator[None]:
    """Holds what a photo of this size needs of the big-photo slots while it is cut out."""
    with contextlib.ExitStack() as stack:
        if pixels > HUGE_PHOTO_PIXELS:
            stack.enter_context(_HUGE_PHOTOS)
            stack.enter_context(_BIG_PHOTOS)
        if pixels > BIG_PHOTO_PIXELS:
            stack.enter_context(_BIG_PHOTOS)
        yield


def _one_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _read_stdin() -> bytes:
    if sys.stdin is None:  # started with stdin closed (<&-)
        raise OSError("no standard input to read the photo from (it is closed)")
    return sys.stdin.buffer.read()


def _shown(name: object) -> str:
    """A file name as one line of text: a newline or a terminal escape in a name must
    neither split the list nor reach the terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(name))


def print_summary(summary: Summary, stdout_used: bool) -> None:
    """One line for one photo, else counts and every failure (on stderr: stdout may
    carry the image)."""
    if stdout_used and not summary.failed:  # the photo went to stdout: only its notes
        for _, note in summary.notes:
            print(f"bgremove: note: {note}", file=sys.stderr)
        return
    parts = [f"{len(summary.processed)} processed"]
    if summary.skipped:
        parts.append(f"{len(summary.skipped)} skipped (output exists; --overwrite to redo)")
    parts.append(f"{len(summary.failed)} failed")
    if summary.not_attempted:
        parts.append(f"{summary.not_attempted} not attempted")
    alone = not (summary.skipped or summary.failed or summary.not_attempted)
    if len(summary.processed) == 1 and alone:
        task = summary.processed[0]
        note = f" ({summary.notes[0][1]})" if summary.notes else ""
        print(f"{_shown(task.source)} -> {_shown(task.dest)}{note}", file=sys.stderr)
        return
    print("bgremove: " + ", ".join(parts) + (":" if summary.failed else ""), file=sys.stderr)
    for name, reason in sorted(summary.failed):
        print(f"  {_shown(name)}: {reason}", file=sys.stderr)
    for name, note in sorted(summary.notes):
        print(f"  note: {_shown(name)}: {note}", file=sys.stderr)
