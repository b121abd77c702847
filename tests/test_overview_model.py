"""The overview's model alone: rows, order, keys (no curses, no sockets)."""

from __future__ import annotations

from supervisor.durations import human_duration
from supervisor.overview.model import LOCAL, Command, Overview, last_error


def ls_row(name: str, activity: str, since: float = 100.0, **extra: object) -> dict[str, object]:
    return {"name": name, "agent": "generic", "state": "running", "activity": activity,
            "activity_since": since, "attention": None, "command": ["sh", "-c", "x y"], **extra}


def names(model: Overview) -> list[str]:
    return [r.name for r in model.rows]


def test_what_needs_the_user_comes_first() -> None:
    m = Overview()
    m.load(LOCAL, [ls_row("w", "working"), ls_row("e", "ended"), ls_row("i", "idle"),
                   ls_row("q", "needs_input"), ls_row("a", "needs_approval", since=200),
                   ls_row("a0", "needs_approval", since=50)])
    assert names(m) == ["a0", "a", "q", "w", "i", "e"]


def test_idle_after_working_is_done_and_ranks_before_working() -> None:
    m = Overview()
    m.load(LOCAL, [ls_row("w", "working"), ls_row("t", "working")])
    assert not m.event(LOCAL, {"event": "activity", "session": "t", "activity": "idle",
                               "previous": "working", "attention": None, "time": 300.0})
    assert names(m) == ["t", "w"]
    assert m.rows[0].word == "done"
    # An ls keeps the finished turn (ls does not say what came before).
    m.load(LOCAL, [ls_row("w", "working"), ls_row("t", "idle", since=300.0)])
    assert m.rows[0].word == "done"


def test_the_cursor_follows_its_session_when_the_order_changes() -> None:
    m = Overview()
    m.load(LOCAL, [ls_row("a", "working", since=1), ls_row("b", "working", since=2)])
    m.key("down")
    assert m.current().name == "b"
    m.event(LOCAL, {"event": "activity", "session": "b", "activity": "needs_approval",
                    "attention": "Bash rm", "time": 5.0})
    assert names(m) == ["b", "a"] and m.current().name == "b"
    assert m.rows[0].detail() == "Bash rm"


def test_unknown_session_or_lifecycle_event_asks_for_ls_and_removed_drops() -> None:
    m = Overview()
    m.load(LOCAL, [ls_row("a", "working")])
    assert m.event(LOCAL, {"event": "activity", "session": "new", "activity": "working"})
    assert m.event(LOCAL, {"event": "started", "session": "new"})
    assert not m.event(LOCAL, {"event": "removed", "session": "a"})
    assert m.rows == [] and m.current() is None


def test_keys() -> None:
    m = Overview()
    m.load(LOCAL, [ls_row("a", "working")])
    assert m.key("enter") == Command("attach", ("a",))
    assert m.key("p") == Command("peek", ("a",))
    assert m.key("a") == Command("approve", ("approve", "a"))
    assert m.key("d") == Command("approve", ("deny", "a"))
    assert m.key("r") == Command("run", ("resume", "a"))
    assert m.key("s") is None and m.prompt() == "stop a? y/n"
    assert m.key("n") is None and m.message == "not stopped"
    m.key("s")
    assert m.key("y") == Command("run", ("stop", "a"))
    assert m.key("q") == Command("quit")


def test_new_session_prompts_for_name_then_command() -> None:
    m = Overview()
    m.key("n")
    for c in "job":
        m.key(c)
    m.key("backspace")
    m.key("b")
    assert m.key("enter") is None and m.prompt() == "command for job: "
    for c in "sh -c 'echo a b'":
        m.key(c)
    assert m.key("enter") == Command("run", ("start", "job", "--", "sh", "-c", "echo a b"))
    m.key("n")
    m.key("esc")
    assert m.mode == "list" and m.message == "cancelled"


def test_keys_on_an_empty_list_say_what_to_do() -> None:
    m = Overview()
    assert m.key("enter") is None and "n starts one" in m.prompt()


def test_fleet_rows_are_targeted_with_their_host() -> None:
    m = Overview()
    m.load("box", [ls_row("a", "working")])
    assert m.key("enter") == Command("attach", ("box:a",))


def test_next_tick_is_when_a_shown_time_changes() -> None:
    m = Overview()
    assert m.next_tick(0.0) is None
    m.load(LOCAL, [ls_row("a", "working", since=100.0)])
    assert abs(m.next_tick(100.25) - 0.75) < 1e-9
    assert abs(m.next_tick(100.0 + 125.0) - 55.0) < 1e-9
    # Many rows showing seconds: one wake-up a second on the whole second, not one per row.
    m.load(LOCAL, [ls_row(f"r{i}", "working", since=100.0 + i / 20) for i in range(20)])
    assert abs(m.next_tick(110.3) - 0.7) < 1e-9
    assert human_duration(125) == "2m"


def test_a_childs_error_is_its_last_line_without_the_prefix() -> None:
    assert last_error("warning\nsuperv: no session named x\n\n") == "no session named x"
    assert last_error("") == ""


def test_a_row_says_its_attention_else_its_last_line_else_its_command() -> None:
    m = Overview()
    m.load(LOCAL, [{"name": "a", "activity": "idle", "command": ["make", "test"],
                    "last_line": "3 passed in 0.2s"},
                   {"name": "b", "activity": "starting", "command": ["sleep", "9"]}])
    a, b = (next(r for r in m.rows if r.name == n) for n in ("a", "b"))
    assert (a.detail(), b.detail()) == ("3 passed in 0.2s", "sleep 9")
    m.event(LOCAL, {"event": "activity", "session": "a", "activity": "needs_approval",
                    "previous": "idle", "attention": "Bash: rm -rf build", "time": 1.0,
                    "last_line": "Do you want to proceed?"})
    assert a.detail() == "Bash: rm -rf build"
    m.event(LOCAL, {"event": "activity", "session": "a", "activity": "working",
                    "previous": "needs_approval", "attention": None, "time": 2.0,
                    "last_line": "running rm"})
    assert a.detail() == "running rm"


def test_a_held_session_says_why_before_anything_else_and_its_hold_asks_for_ls() -> None:
    m = Overview()
    held = "output held since 10:02:03, the disk refused its log: [Errno 28] No space left"
    m.load(LOCAL, [ls_row("h", "working", attention="Bash: make", problem=held)])
    assert m.rows[0].detail() == held
    for kind in ("log_write_failed", "log_write_resumed"):
        assert m.event(LOCAL, {"event": kind, "session": "h"})  # the list read again
    m.load(LOCAL, [ls_row("h", "working", attention="Bash: make", problem=None)])
    assert m.rows[0].detail() == "Bash: make"
