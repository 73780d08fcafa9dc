"""Progress of a run on the terminal: a live bar on a TTY, a log line now and then otherwise."""

from __future__ import annotations

import logging
import sys
import time

from annotator.pipeline.sink import Counts

log = logging.getLogger("annotator.annotate")


class Progress:
    """A live bar on a terminal; a plain log line every ``interval_s`` otherwise (ray job logs)."""

    def __init__(self, interval_s: float = 30.0, tty: bool | None = None) -> None:
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.interval_s = interval_s
        self.t0 = time.perf_counter()
        self.last = 0.0
        self.bar = None
        if self.tty:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("[bold]annotate"),
                BarColumn(),
                TextColumn("{task.completed} files"),
                TextColumn("{task.fields[detail]}"),
                TimeElapsedColumn(),
                transient=False,
            )
            self.task = self.bar.add_task("annotate", total=None, detail="starting")
            self.bar.start()

    def _detail(self, counts: Counts) -> str:
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        return (
            f"{counts.recordings} recordings · {counts.audio_s / 3600:.2f} audio h · "
            f"{counts.segments / elapsed:.1f} segments/s · {counts.errors} errors"
        )

    def __call__(self, counts: Counts) -> None:
        done = counts.files + counts.skipped
        if self.bar is not None:
            self.bar.update(self.task, completed=done, detail=self._detail(counts))
            return
        now = time.perf_counter()
        if now - self.last >= self.interval_s:
            self.last = now
            log.info(
                "progress: %d files done (%d skipped) · %s",
                done,
                counts.skipped,
                self._detail(counts),
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
