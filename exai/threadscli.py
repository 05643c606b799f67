"""`exai threads` and `exai thread ID`: the stored conversation threads, read from the store
at EXAI_STORE_URL directly (read-only, `ThreadReader`), whether the daemon runs or not.

Each `run_*` function prints for a human and returns the exit status: 0 ok, 1 unknown
thread or unreadable store, 2 invalid configuration.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from exai.config import ConfigError, Settings, load_settings
from exai.store import StoreUnavailable, Thread, ThreadNotFound, open_reader

if TYPE_CHECKING:
    from rich.console import Console

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2


def run_threads(*, as_json: bool) -> int:
    """List the live threads, most recently used first."""
    settings = _settings()
    if settings is None:
        return EXIT_USAGE
    store = open_reader(settings)
    try:
        threads = store.threads()
    except StoreUnavailable as exc:
        return _unreadable(exc)
    if as_json:
        print(json.dumps([thread.summary() for thread in threads], indent=2))
        return EXIT_OK
    if not threads:
        print(f"no conversation threads in {store.where}")
        return EXIT_OK
    from rich.table import Table

    now = time.time()
    table = Table(title=f"threads in {store.where}", title_justify="left", expand=False)
    for column in ("id", "tool", "turns", "last use", "expires"):
        table.add_column(
            column, justify="right" if column == "turns" else "left", no_wrap=column == "id"
        )
    for thread in threads:
        table.add_row(
            thread.id,
            thread.tool,
            str(len(thread.turns)),
            _relative(thread.updated, now),
            _relative(thread.expires, now),
        )
    _console().print(table)
    return EXIT_OK


def run_thread(thread_id: str, *, as_json: bool) -> int:
    """Print one live thread's turns (without refreshing its lifetime)."""
    settings = _settings()
    if settings is None:
        return EXIT_USAGE
    try:
        thread = open_reader(settings).thread(thread_id)
    except ThreadNotFound as exc:
        print(f"exai: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except StoreUnavailable as exc:
        return _unreadable(exc)
    if as_json:
        print(json.dumps(thread_as_json(thread), indent=2))
    else:
        _show(thread)
    return EXIT_OK


def thread_as_json(thread: Thread) -> dict[str, Any]:
    return thread.summary() | {
        "findings": thread.findings,
        "files": thread.files,
        "usage": thread_usage(thread),
        "turns": [vars(turn) for turn in thread.turns],
    }


def thread_usage(thread: Thread) -> dict[str, Any]:
    """The thread's model use, summed over its kept turns; cost_usd is null when a turn's
    model had no price."""
    used = [turn.usage for turn in thread.turns if turn.usage]
    total: dict[str, Any] = {
        key: sum(int(usage.get(key) or 0) for usage in used)
        for key in ("prompt_tokens", "completion_tokens", "cached_tokens")
    }
    costs = [usage.get("cost_usd") for usage in used]
    priced = all(isinstance(cost, int | float) for cost in costs)
    total["cost_usd"] = round(sum(float(c) for c in costs if isinstance(c, int | float)), 6) if priced else None
    return total


def _usage_text(usage: dict[str, Any]) -> str:
    cached = int(usage.get("cached_tokens") or 0)
    cost = usage.get("cost_usd")
    return (
        f"{usage.get('prompt_tokens', 0)} in{f' ({cached} cached)' if cached else ''} / "
        f"{usage.get('completion_tokens', 0)} out tokens, "
        + (f"${cost:.6f}" if isinstance(cost, int | float) else "cost unknown (no price)")
    )


def _show(thread: Thread) -> None:
    from rich.rule import Rule
    from rich.text import Text

    now = time.time()
    console = _console()
    head = Text.assemble(
        ("thread ", "bold"), thread.id, ("   tool ", "bold"), thread.tool,
        ("   model ", "bold"), thread.model or "-",
        ("\ncreated ", "bold"), _when(thread.created, now),
        ("   last use ", "bold"), _when(thread.updated, now),
        ("   expires ", "bold"), _when(thread.expires, now),
        ("\nturns ", "bold"), str(len(thread.turns)),
        f" ({thread.dropped} older dropped)" if thread.dropped else "",
        ("   usage ", "bold"), _usage_text(thread_usage(thread)),
    )  # fmt: skip
    console.print(head)
    if thread.findings:
        console.print(Text("findings", style="bold"))
        for finding in thread.findings:
            console.print(Text(f"  - {finding}"))
    if thread.files:
        console.print(Text("files", style="bold"))
        for path in thread.files:
            console.print(Text(f"  {path}"))
    first = thread.dropped + 1
    for number, turn in enumerate(thread.turns, start=first):
        details = [turn.tool]
        if turn.step_number is not None:
            details.append(f"step {turn.step_number}")
        if turn.model:
            details.append(turn.model)
        if turn.usage:
            details.append(_usage_text(turn.usage))
        title = f"#{number} {turn.role} ({', '.join(details)}) {_clock(turn.created)}"
        console.print(Rule(Text(title), align="left"))
        console.print(Text(turn.content))
        if turn.files:
            console.print(Text("files: " + ", ".join(turn.files), style="dim"))


def _settings() -> Settings | None:
    try:
        return load_settings()
    except ConfigError as exc:
        print(f"exai: invalid configuration: {exc}", file=sys.stderr)
        return None


def _unreadable(exc: StoreUnavailable) -> int:
    print(f"exai: {exc}", file=sys.stderr)
    return EXIT_ERROR


def _console() -> Console:
    from rich.console import Console

    # Thread text is the model's and the user's: never read it as rich markup.
    return Console(markup=False, highlight=False)


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _when(ts: float, now: float) -> str:
    """A local time with how long ago or ahead it is: '2026-01-02 10:00:00 (5m ago)'."""
    return f"{_clock(ts)} ({_relative(ts, now)})"


def _relative(ts: float, now: float) -> str:
    """'5m ago', 'in 23h59m' or 'now'."""
    delta = ts - now
    span = _span(abs(delta))
    return "now" if span == "0s" else (f"in {span}" if delta > 0 else f"{span} ago")


def _span(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"
