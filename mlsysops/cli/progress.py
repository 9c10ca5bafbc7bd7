"""Progress of long CLI work (`apply --wait`, `deploy apply`, `model train --wait`).

On a terminal: a rich progress bar on stderr that disappears when done. Anywhere else (a pipe, a log, CI):
one plain line on stderr each time the state changes, never a bar's control characters and never a line
per poll when nothing moved. stdout keeps only the command's result, so scripts can read it.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import IO


class Progress:
    """`with Progress("waiting for env-monitor", total=3) as p: p.update(done=1, note="sensor-reader pending")`."""

    def __init__(self, what: str, total: int | None = None, *, stream: IO[str] | None = None,
                 tty: bool | None = None) -> None:
        self.what = what
        self.total = total
        self.done = 0
        self.note = ""
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self._bar = None
        self._task = None
        self._last_line: str | None = None
        self._started = time.monotonic()

    def __enter__(self) -> Progress:
        if self.tty:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                     MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[note]}"),
                                     console=Console(file=self.stream), transient=True)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.what, total=self.total, note="")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.__exit__(exc_type, exc, tb)

    def update(self, done: int | None = None, total: int | None = None, note: str | None = None) -> None:
        """Set what is done so far (and the total, once known); `note` says what is going on now."""
        self.done = self.done if done is None else done
        self.total = self.total if total is None else total
        self.note = self.note if note is None else note
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, total=self.total, note=self.note)
            return
        count = f"{self.done}/{self.total}" if self.total else f"{self.done}"
        line = f"{self.what}: {count}" + (f" ({self.note})" if self.note else "")
        if line != self._last_line:   # a line per change, not per poll
            self._last_line = line
            self.stream.write(f"[{time.monotonic() - self._started:5.1f}s] {line}\n")
            self.stream.flush()

    def advance(self, note: str | None = None) -> None:
        self.update(done=self.done + 1, note=note)
