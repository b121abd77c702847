"""The overview's state, sans-I/O: rows from ``ls`` and ``activity`` events, their order, keys.

Nothing here draws or talks to a socket; :mod:`supervisor.overview.app` does, and turns the
:class:`Command` values that :meth:`Overview.key` returns into child processes.
"""

from __future__ import annotations

from typing import Any

import attrs

# What needs the user first: an approval, a question, a finished turn; then the rest.
RANK = {"needs_approval": 0, "needs_input": 1, "done": 2, "working": 3, "starting": 4,
        "idle": 5, "unknown": 6, "ended": 7}
# Lifecycle events that change which sessions exist or their state: ls again, once.
RELIST = {"started", "exited", "removed", "restarting", "launch_failed", "restart_limit",
          "created", "stopped", "resumed", "restart_cancelled",
          "log_write_failed", "log_write_resumed"}  # ls says why a session is held


def last_error(stderr: str) -> str:
    """The last line a child ``superv`` wrote on stderr, without its ``superv:`` prefix."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    return lines[-1].removeprefix("superv: ") if lines else ""


def _next_change(age: float) -> float:
    """Seconds until :func:`human_duration` of ``age`` reads differently."""
    for size in (86400, 3600, 60, 1):
        if age >= size or size == 1:
            return size - (age % size)
    return 1.0  # pragma: no cover


@attrs.define
class Row:
    host: str
    name: str
    agent: str = "-"
    state: str = "unknown"
    activity: str = "unknown"
    since: float | None = None
    attention: str | None = None
    command: str = ""
    last_line: str | None = None  # the screen's last non-blank line (ls, activity events)
    problem: str | None = None  # what ls says is wrong (a disk refusing its log, a bad file)
    # The activity came from ``working``: an ``idle`` now means the turn finished.
    finished: bool = False

    @property
    def word(self) -> str:
        """The activity as the user reads it (never colour alone)."""
        return "done" if self.activity == "idle" and self.finished else self.activity

    @property
    def key(self) -> tuple[str, str]:
        return (self.host, self.name)

    @property
    def target(self) -> str:
        """What ``superv attach`` and the rest take: NAME here, HOST:NAME for the fleet."""
        return self.name if self.host == LOCAL else f"{self.host}:{self.name}"

    def detail(self) -> str:
        """What the row says after the time: what is wrong with it, else the attention
        line, else the last line the session printed, else its command."""
        return self.problem or self.attention or self.last_line or self.command


LOCAL = "local"


def row_from_ls(host: str, s: dict[str, Any]) -> Row:
    import shlex

    command = s.get("command")
    return Row(host=host, name=str(s["name"]), agent=str(s.get("agent") or "-"),
               state=str(s.get("state") or "unknown"),
               activity=str(s.get("activity") or "unknown"),
               since=s.get("activity_since"), attention=s.get("attention"),
               last_line=s.get("last_line") if isinstance(s.get("last_line"), str) else None,
               problem=s.get("problem") if isinstance(s.get("problem"), str) else None,
               command=shlex.join(command) if isinstance(command, list) else "")


@attrs.define
class Command:
    """What the app must do for a key: ``attach``/``peek`` a target, ``run`` superv args,
    ``approve`` (which may not exist yet), ``quit``."""
    what: str
    args: tuple[str, ...] = ()


@attrs.define
class Overview:
    rows: list[Row] = attrs.Factory(list)
    selected: int = 0
    # "list", "confirm" (stop), "name" and "command" (new session), "preview"
    mode: str = "list"
    typed: str = ""
    new_name: str = ""
    message: str = ""
    preview: list[str] = attrs.Factory(list)
    connected: bool = False
    # Hosts of the fleet that cannot be shown, and why ("unreachable: ...").
    problems: dict[str, str] = attrs.Factory(dict)

    # ---- rows -------------------------------------------------------------------------
    def unreachable(self, host: str, why: str) -> None:
        """A host that cannot be listed: its rows go, one line says why."""
        chosen = self.current()
        self.problems[host] = why
        self.rows = [r for r in self.rows if r.host != host]
        self._sort(chosen)

    def load(self, host: str, sessions: list[dict[str, Any]]) -> None:
        """One host's whole list (from ``ls``): replaces that host's rows."""
        self.problems.pop(host, None)
        chosen = self.current()
        old = {r.key: r for r in self.rows}
        fresh = [row_from_ls(host, s) for s in sessions]
        for row in fresh:
            was = old.get(row.key)
            if was is not None and was.activity == row.activity:
                row.finished = was.finished
        self.rows = [r for r in self.rows if r.host != host] + fresh
        self._sort(chosen)

    def event(self, host: str, body: dict[str, Any]) -> bool:
        """Apply one event; True if the host's list must be read again (``ls``)."""
        name = body.get("session")
        kind = body.get("event")
        row = next((r for r in self.rows if r.key == (host, name)), None)
        if kind == "activity":
            if row is None:
                return True
            chosen = self.current()
            row.finished = body.get("previous") == "working" and body.get("activity") == "idle"
            row.activity = str(body.get("activity") or "unknown")
            row.since = body.get("time")
            row.attention = body.get("attention")
            if isinstance(body.get("last_line"), str):
                row.last_line = body["last_line"]
            self._sort(chosen)
            return False
        if kind == "removed" and row is not None:
            chosen = self.current()
            self.rows.remove(row)
            self._sort(chosen)
            return False
        return kind in RELIST

    def _sort(self, keep: Row | None) -> None:
        self.rows.sort(key=lambda r: (RANK.get(r.word, 6), r.since or 0.0, r.host, r.name))
        # The cursor follows its session, not its line, when the order changes.
        if keep is not None and keep in self.rows:
            self.selected = self.rows.index(keep)
        self.selected = max(0, min(self.selected, len(self.rows) - 1))

    def current(self) -> Row | None:
        return self.rows[self.selected] if 0 <= self.selected < len(self.rows) else None

    def next_tick(self, now: float) -> float | None:
        """Seconds until a shown time changes (the only redraw without an event), or None.

        While a time shows seconds, once a second on the whole second for every row (a
        row's second may show up to 1 s late), not once per row: 20 fresh sessions would
        wake the loop 20 times a second.
        """
        ages = [max(0.0, now - r.since) for r in self.rows if r.since is not None]
        if any(a < 60 for a in ages):
            return 1.0 - (now % 1.0)
        return min((_next_change(a) for a in ages), default=None)

    # ---- keys -------------------------------------------------------------------------
    def key(self, key: str) -> Command | None:
        """One key (a character, or ``up``/``down``/``enter``/``esc``/``backspace``)."""
        if self.mode in ("name", "command"):
            return self._typing(key)
        if self.mode == "confirm":
            self.mode = "list"
            row = self.current()
            if key in ("y", "Y") and row is not None:
                return Command("run", ("stop", row.target))
            self.message = "not stopped"
            return None
        if self.mode == "preview":
            self.mode = "list"
            if key not in ("p", "esc", "q", "enter"):
                return self.key(key)
            return None
        self.message = ""
        row = self.current()
        if key in ("q", "Q"):
            return Command("quit")
        if key in ("down", "j"):
            self.selected = min(self.selected + 1, len(self.rows) - 1)
        elif key in ("up", "k"):
            self.selected = max(self.selected - 1, 0)
        elif key == "n":
            self.mode, self.typed = "name", ""
        elif row is None:
            if key in ("enter", "p", "a", "d", "s", "r"):
                self.message = "no session selected: n starts one"
        elif key == "enter":
            return Command("attach", (row.target,))
        elif key == "p":
            return Command("peek", (row.target,))
        elif key in ("a", "d"):
            return Command("approve", ("approve" if key == "a" else "deny", row.target))
        elif key == "s":
            self.mode = "confirm"
        elif key == "r":
            return Command("run", ("resume", row.target))
        return None

    def _typing(self, key: str) -> Command | None:
        if key == "esc":
            self.mode, self.message = "list", "cancelled"
        elif key == "backspace":
            self.typed = self.typed[:-1]
        elif key == "enter":
            if self.mode == "name":
                if not self.typed:
                    self.mode, self.message = "list", "cancelled"
                    return None
                self.new_name, self.mode, self.typed = self.typed, "command", ""
                return None
            import shlex

            try:
                argv = shlex.split(self.typed)
            except ValueError as exc:
                self.message = f"cannot read the command: {exc}"
                return None
            self.mode = "list"
            if not argv:
                self.message = "cancelled: no command"
                return None
            return Command("run", ("start", self.new_name, "--", *argv))
        elif len(key) == 1 and key.isprintable():
            self.typed += key
        return None

    def prompt(self) -> str:
        """The bottom line: a question being asked, or the last message, or the key help."""
        row = self.current()
        if self.mode == "name":
            return f"new session name: {self.typed}"
        if self.mode == "command":
            return f"command for {self.new_name}: {self.typed}"
        if self.mode == "confirm" and row is not None:
            return f"stop {row.target}? y/n"
        if self.message:
            return self.message
        return "enter attach  p peek  a/d approve/deny  s stop  r resume  n new  q quit"
