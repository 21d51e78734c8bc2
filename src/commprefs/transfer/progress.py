"""Import progress for people: a bar with rows/s and ETA on a terminal (click's), and plain
periodic lines when the output is a log or a pipe."""

import sys
import time
from types import TracebackType
from typing import Any

import click

from commprefs.transfer.importer import Progress


class ImportProgress:
    def __init__(self, total_bytes: int | None, every_seconds: float, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.total = total_bytes
        self.every = every_seconds
        self.started = time.monotonic()
        self.last_line = self.started
        self.position = 0
        self.rows = 0
        self.bar: Any = None
        if total_bytes and self.stream.isatty():
            self.bar = click.progressbar(
                length=total_bytes,
                label="importing",
                file=self.stream,
                show_eta=True,
                show_percent=True,
                item_show_func=lambda _: self._rate(),
            )

    def __enter__(self) -> "ImportProgress":
        if self.bar is not None:
            self.bar.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if self.bar is not None:
            self.bar.__exit__(kind, error, tb)

    def _rate(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return f"{self.rows:,} rows, {self.rows / elapsed:,.0f} rows/s"

    def __call__(self, progress: Progress) -> None:
        self.rows = progress.counts.rows
        if self.bar is not None:
            self.bar.update(progress.bytes_read - self.position, progress)
            self.position = progress.bytes_read
            return
        now = time.monotonic()
        if now - self.last_line < self.every:
            return
        self.last_line = now
        share = f" ({100 * progress.bytes_read / self.total:.0f}% of the file)" if self.total else ""
        click.echo(f"import: {self._rate()}{share}, {progress.counts.rejected:,} rejected", file=self.stream)
