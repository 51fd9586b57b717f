"""Progress and messages for people (rich, on stderr) or machines (--json on stdout)."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from typing import Any, Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn


class Reporter:
    def __init__(self, quiet: bool = False, json_mode: bool = False) -> None:
        self.quiet = quiet or json_mode
        self.json_mode = json_mode
        self.console = Console(stderr=True, highlight=False)

    def info(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message, soft_wrap=True)

    def step(self, name: str, status: str, detail: str = "") -> None:
        """One line per pipeline step or stage: 'stage torch   built   41.2 s  sglbuild/...'."""
        if not self.quiet:
            colour = {"reused": "cyan", "built": "green", "failed": "red", "tagged": "green"}.get(status, "white")
            self.console.print(f"  {name:<14} [{colour}]{status:<8}[/{colour}] {detail}", soft_wrap=True)

    def build_line(self, line: str) -> None:
        """One line of the engine's build output (with --verbose, or the last ones of a failed step)."""
        self.info(f"    [dim]{escape(line)}[/dim]")

    def build_lines(self, lines: list[str]) -> None:
        for line in lines:
            self.build_line(line)

    def emit(self, data: dict[str, Any]) -> None:
        if self.json_mode:
            sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")

    @contextmanager
    def transfer(self, description: str, total: int | None) -> Iterator["Transfer"]:
        if self.quiet or not self.console.is_terminal:
            yield Transfer(None, None)
            return
        columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
        with Progress(*columns, console=self.console, transient=True) as progress:
            yield Transfer(progress, progress.add_task(description, total=total))


class Transfer:
    def __init__(self, progress: Progress | None, task: Any) -> None:
        self.progress, self.task = progress, task

    def advance(self, nbytes: int) -> None:
        if self.progress is not None:
            self.progress.advance(self.task, nbytes)

    def add_total(self, nbytes: int) -> None:
        if self.progress is not None:
            t = self.progress.tasks[self.task].total or 0
            self.progress.update(self.task, total=t + nbytes)
