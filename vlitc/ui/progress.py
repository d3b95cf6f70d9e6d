"""Reporters that subscribe to run events: a rich live display on a terminal, plain progress lines
elsewhere (CI logs, ``| tee``), and JSON lines.

Both human reporters show, per running step, "step k of N", items done of total, the step's own
LLM calls, tokens and dollars, its retries and failures, parse failures and repairs, where its
provider batches stand (``batch: true``: batches open, requests done, status), and an ETA.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

#: counters of a generating step shown live, with their labels
LIVE_COUNTERS = (("parse_error", "parse failures"), ("repair_requests", "repairs asked"),
                 ("repaired", "repaired"))


class JsonReporter:
    """Prints every event as one JSON line on stdout."""

    def __call__(self, event: dict) -> None:
        sys.stdout.write(json.dumps(event, default=str) + "\n")
        sys.stdout.flush()

    def close(self) -> None:
        pass


class StepState:
    """What is known about one running step, from its events."""

    def __init__(self, event: dict):
        self.step = event["step"]
        self.index, self.of = event.get("index"), event.get("of")
        self.started = time.monotonic()
        self.done, self.total = 0, None
        self.llm: dict = {}
        self.counters: dict = {}
        self.batch: dict = {}

    def update(self, event: dict) -> None:
        if "done" in event:
            self.done, self.total = event.get("done", 0), event.get("total", self.total)
        if event.get("step_llm"):
            self.llm = event["step_llm"]
        if event.get("batch"):
            self.batch = event["batch"]
        if event.get("event") == "counters":
            self.counters = dict(event.get("counters") or {})

    def title(self) -> str:
        where = f"step {self.index} of {self.of} " if self.index and self.of else ""
        return f"{where}{self.step}"

    def eta(self) -> float | None:
        """Seconds left at the pace so far (``None`` until some items are done)."""
        if not self.total or not self.done or self.done >= self.total:
            return None
        spent = time.monotonic() - self.started
        return spent / self.done * (self.total - self.done)

    def details(self) -> str:
        """The step's LLM figures and counters, e.g. ``12 calls, 20,140 tok, $0.0123, 1 retry``."""
        parts = []
        llm = self.llm
        if llm:
            tokens = llm.get("prompt_tokens", 0) + llm.get("completion_tokens", 0)
            parts.append(f"{llm.get('calls', 0)} calls, {tokens:,} tok, ${llm.get('usd', 0):.4f}")
            if llm.get("cached"):
                parts.append(f"{llm['cached']} cached")
            if llm.get("cache_read_tokens"):  # the provider's prompt cache
                parts.append(f"{llm['cache_read_tokens']:,} prompt tok from the prompt cache "
                             f"(saved ${llm.get('usd_saved', 0):.4f})")
            if llm.get("retries"):
                parts.append(f"{llm['retries']} retries")
            if llm.get("failed"):
                parts.append(f"{llm['failed']} failed")
        b = self.batch
        if b:
            parts.append(f"{b.get('open', 0)} of {b.get('batches', 0)} batch(es) open, "
                         f"{b.get('done', 0)}/{b.get('total', 0)} requests "
                         f"({'/'.join(b.get('status') or [])})")
        for key, label in LIVE_COUNTERS:
            n = self.counters.get(key)
            if isinstance(n, int) and n:
                parts.append(f"{n} {label}")
        return ", ".join(parts)


def _step_line(event: dict) -> str:
    counts = f"{event.get('n_in', 0)} in, {event.get('n_out', 0)} out"
    if event.get("n_dropped"):
        counts += f", {event['n_dropped']} dropped"
    secs = f" {event['seconds']:.2f}s" if event.get("status") == "ran" else ""
    why = f" ({', '.join(event['reasons'])})" if event.get("reasons") and event["status"] == "ran" else ""
    return f"{event['status']:>6} {event['step']}  {counts}{secs}{why}"


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


class PlainReporter:
    """For a log, not a terminal: one line per finished step, and every ``every`` seconds one
    progress line per running step (``step k of N``, done/total, LLM figures, ETA), instead of
    silence while a long step runs."""

    def __init__(self, stream: Any = None, every: float = 5.0):
        self.stream = stream if stream is not None else sys.stderr
        self.every = every
        self.running: dict[str, StepState] = {}
        self.last = time.monotonic()

    def _print(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    def __call__(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "step_start":
            self.running[event["step"]] = StepState(event)
        elif kind in ("progress", "llm", "counters") and event.get("step") in self.running:
            self.running[event["step"]].update(event)
            if time.monotonic() - self.last >= self.every:
                self.last = time.monotonic()
                for st in self.running.values():
                    self._print(progress_line(st))
        elif kind == "step":
            done: StepState | None = self.running.pop(event["step"], None)
            line = _step_line(event)
            if done is not None and done.details():
                line += f" [{done.details()}]"
            self._print(line)
        elif kind == "warning":
            self._print(f"warning {event.get('step', '')}: {event['message']}")

    def close(self) -> None:
        pass


def progress_line(st: StepState) -> str:
    """``step 3 of 9 task:conv: 40/100, 40 calls, 51,210 tok, $0.0102, 2 parse failures, ETA 0:01:30``."""
    done = f"{st.done}/{st.total}" if st.total else f"{st.done}"
    bits = [done] + ([st.details()] if st.details() else [])
    eta = st.eta()
    if eta is not None:
        bits.append(f"ETA {_clock(eta)}")
    return f"{st.title()}: {', '.join(bits)}"


class RichReporter:
    """One line per finished step, a live bar per running step: ``step k of N``, done/total, the
    step's own calls, tokens, dollars, retries, failures, parse failures and repairs, and ETA."""

    STYLE = {"ran": "cyan", "cached": "green", "failed": "bold red"}

    def __init__(self, console: Any):
        from rich.progress import (
            BarColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = console
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.completed}/{task.total}"),
                                 TextColumn("{task.fields[extra]}"), TimeElapsedColumn(),
                                 TextColumn("ETA"), TimeRemainingColumn(),
                                 console=console, transient=True)
        self.tasks: dict[str, Any] = {}
        self.states: dict[str, StepState] = {}
        self.progress.start()

    def __call__(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "step_start":
            st = self.states[event["step"]] = StepState(event)
            self.tasks[event["step"]] = self.progress.add_task(st.title(), total=None, extra="")
        elif kind in ("progress", "llm", "counters") and event.get("step") in self.tasks:
            st = self.states[event["step"]]
            st.update(event)
            self.progress.update(self.tasks[event["step"]], completed=st.done, total=st.total,
                                 extra=st.details())
        elif kind == "step":
            tid = self.tasks.pop(event["step"], None)
            done_st: StepState | None = self.states.pop(event["step"], None)
            if tid is not None:
                self.progress.remove_task(tid)
            from rich.markup import escape

            style = self.STYLE.get(event["status"], "")
            rest = _step_line(event).lstrip().split(" ", 1)[1]
            line = f"[{style}]{event['status']:>6}[/] {escape(rest)}"
            if done_st is not None and done_st.details():
                line += f" [dim]{escape('[' + done_st.details() + ']')}[/]"
            self.console.print(line, highlight=False)
        elif kind == "warning":
            self.console.print(f"[yellow]warning[/] {event.get('step', '')}: {event['message']}",
                               highlight=False, markup=True)

    def close(self) -> None:
        self.progress.stop()


def reporter_for(console: Any) -> RichReporter | PlainReporter:
    """The live display on a terminal; plain progress lines on anything else."""
    return RichReporter(console) if console.is_terminal else PlainReporter(console.file)
