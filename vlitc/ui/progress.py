"""Reporters that subscribe to run events: a rich live display, and JSON lines."""

from __future__ import annotations

import json
import sys
from typing import Any


class JsonReporter:
    """Prints every event as one JSON line on stdout."""

    def __call__(self, event: dict) -> None:
        sys.stdout.write(json.dumps(event, default=str) + "\n")
        sys.stdout.flush()

    def close(self) -> None:
        pass


class RichReporter:
    """One line per finished step, a live progress bar for steps that report progress."""

    STYLE = {"ran": "cyan", "cached": "green", "failed": "bold red"}

    def __init__(self, console: Any):
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = console
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.completed}/{task.total}"),
                                 TextColumn("{task.fields[extra]}"), TimeElapsedColumn(),
                                 console=console, transient=True)
        self.tasks: dict[str, Any] = {}
        self.progress.start()

    def __call__(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "step_start":
            self.tasks[event["step"]] = self.progress.add_task(event["step"], total=None, extra="")
        elif kind in ("progress", "llm") and event.get("step") in self.tasks:
            extra = ""
            if "usd" in event:
                extra = f"${event['usd']:.4f} {event.get('tokens', 0)} tok"
            self.progress.update(self.tasks[event["step"]], completed=event.get("done", 0),
                                 total=event.get("total"), extra=extra)
        elif kind == "step":
            tid = self.tasks.pop(event["step"], None)
            if tid is not None:
                self.progress.remove_task(tid)
            style = self.STYLE.get(event["status"], "")
            counts = f"{event.get('n_in', 0)} in, {event.get('n_out', 0)} out"
            if event.get("n_dropped"):
                counts += f", {event['n_dropped']} dropped"
            secs = f" {event['seconds']:.2f}s" if event.get("status") == "ran" else ""
            why = f" ({', '.join(event['reasons'])})" if event.get("reasons") and event["status"] == "ran" else ""
            self.console.print(f"[{style}]{event['status']:>6}[/] {event['step']}  {counts}{secs}{why}",
                               highlight=False)
        elif kind == "warning":
            self.console.print(f"[yellow]warning[/] {event.get('step', '')}: {event['message']}",
                               highlight=False, markup=True)

    def close(self) -> None:
        self.progress.stop()
