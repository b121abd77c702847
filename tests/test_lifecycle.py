"""The session lifecycle and its restart policy, as a pure state machine: no processes, no
sleeps, a fake clock (every event carries its time)."""

from __future__ import annotations

import signal

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor import lifecycle as lc
from supervisor.lifecycle import (
    FAILED,
    INTERRUPTED,
    AgentExited,
    CancelRestart,
    Emit,
    Ended,
    Launch,
    Launched,
    LaunchFailed,
    Outcome,
    Policy,
    Recovered,
    Refuse,
    ReleaseWorker,
    RestartDue,
    RestartPending,
    ResumeRequested,
    Running,
    Save,
    ScheduleRestart,
    SendStop,
    Starting,
    StopRequested,
    WorkerExited,
)

OK = Outcome.of_exit(0, None)
FAIL3 = Outcome.of_exit(3, None)
TERMED = Outcome.of_exit(None, signal.SIGTERM)


class Clock:
    """A fake clock: time moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self, seconds: float = 0.0) -> float:
        self.now += seconds
        return self.now


def emitted(actions: tuple[lc.Action, ...]) -> list[str]:
    return [a.event for a in actions if isinstance(a, Emit)]


def of(kind: type, actions: tuple[lc.Action, ...]) -> list[lc.Action]:
    return [a for a in actions if isinstance(a, kind)]


def running(clock: Clock, policy: Policy, restarts: int = 0) -> lc.State:
    state, actions = lc.begin()
    assert actions == (Save(), Launch(None)) and isinstance(state, Starting)
    state, actions = lc.step(state, Launched(clock(), 11, 12), policy)
    assert isinstance(state, Running) and emitted(actions) == ["started"]
    assert of(Emit, actions)[0].fields == {"worker_pid": 11, "agent_pid": 12}
    return attrs.evolve(state, restarts=restarts)


# ---- the policy on each kind of end ----------------------------------------------------------

CASES = [
    # policy, outcome, rebooted, restarted?
    ("no", OK, False, False), ("no", FAIL3, False, False), ("no", INTERRUPTED, False, False),
    ("no", INTERRUPTED, True, False),
    ("on-failure", OK, False, False), ("on-failure", FAIL3, False, True),
    ("on-failure", TERMED, False, True), ("on-failure", INTERRUPTED, False, True),
    ("on-failure", INTERRUPTED, True, False),  # a reboot is not the agent failing
    ("always", OK, False, True), ("always", FAIL3, False, True),
    ("always", INTERRUPTED, False, True), ("always", INTERRUPTED, True, True),
]


@pytest.mark.parametrize(("restart", "outcome", "rebooted", "restarted"), CASES)
def test_what_each_policy_does_with_each_end(restart: str, outcome: Outcome, rebooted: bool,
                                             restarted: bool) -> None:
    clock = Clock()
    policy = Policy(restart)
    state = running(clock, policy)
    if rebooted:
        event: lc.Event = Recovered(clock(5), worker_alive=False, last_word=None, rebooted=True)
    elif outcome is INTERRUPTED:
        event = WorkerExited(clock(5))
    else:
        event = AgentExited(clock(5), outcome)
    state, actions = lc.step(state, event, policy)
    assert lc.label(state) == outcome.label
    assert emitted(actions)[0] == "exited"
    assert of(Emit, actions)[0].fields == {"state": outcome.label, "exit_code": outcome.exit_code,
                                           "exit_signal": outcome.exit_signal}
    assert Save() in actions and not lc.is_running(state)
    if restarted:
        assert isinstance(state, RestartPending) and state.due_at == clock.now + 0.5
        assert of(ScheduleRestart, actions) == [ScheduleRestart(clock.now + 0.5)]
        # Saved before the wait: the restart is on disk before anything can kill us.
        assert actions.index(Save()) < actions.index(ScheduleRestart(state.due_at))
    else:
        assert isinstance(state, Ended) and not of(ScheduleRestart, actions)


def test_an_end_learnt_twice_is_decided_once() -> None:
    clock = Clock()
    policy = Policy("always")
    state = running(clock, policy)
    state, first = lc.step(state, AgentExited(clock(1), FAIL3), policy)
    assert isinstance(state, RestartPending) and not state.worker_gone
    assert emitted(first) == ["exited", "restarting"]
    assert ReleaseWorker() in first  # it will be restarted: no need to linger for clients
    # The pidfd says the worker is gone, and its snapshot disagrees: the end is recorded.
    state, second = lc.step(state, WorkerExited(clock(0.1), last_word=INTERRUPTED), policy)
    assert isinstance(state, RestartPending) and state.worker_gone and state.outcome == FAIL3
    assert emitted(second) == [] and not of(Launch, second)


def test_a_worker_that_dies_says_how_its_agent_ended_or_is_interrupted() -> None:
    clock = Clock()
    policy = Policy("no")
    state, _ = lc.step(running(clock, policy), WorkerExited(clock(1), FAIL3, ended_at=5.0), policy)
    assert state == Ended(FAIL3, 5.0, started_at=clock.now - 1)
    state, _ = lc.step(running(clock, policy), WorkerExited(clock(1)), policy)
    assert isinstance(state, Ended) and state.outcome == INTERRUPTED


def test_an_end_learnt_late_still_waits_its_backoff_from_when_it_was_learnt() -> None:
    # The agent ended before our watch connection reached its worker: we learn of the end
    # only when the worker goes (seconds later), and its snapshot says when it happened.
    clock = Clock()
    policy = Policy("always", backoff=0.3)
    state = running(clock, policy)
    ended = clock(1)
    state, actions = lc.step(state, WorkerExited(clock(2), FAIL3, ended_at=ended), policy)
    assert isinstance(state, RestartPending) and state.ended_at == ended
    assert state.due_at == clock.now + 0.3 and of(ScheduleRestart, actions) == [
        ScheduleRestart(clock.now + 0.3)]
    early, actions = lc.step(state, RestartDue(clock(0.1)), policy)
    assert early == state and not of(Launch, actions)
    # The same for an end found by a supervisor that was down meanwhile.
    state, _ = lc.step(Running(5.0), Recovered(100.0, worker_alive=False, last_word=FAIL3,
                                               ended_at=50.0), policy)
    assert isinstance(state, RestartPending) and (state.ended_at, state.due_at) == (50.0, 100.3)


def test_the_welcome_s_label_of_an_end_reads_back_as_its_outcome() -> None:
    for outcome in (OK, FAIL3, TERMED, Outcome("exited", -1), Outcome("killed", None, 77)):
        assert Outcome.of_exit_label(outcome.label) == outcome
    for label in ("running", "interrupted", "exited", "killed SIGNOPE", "exited x"):
        with pytest.raises(ValueError, match="not how an agent ended"):
            Outcome.of_exit_label(label)


# ---- backoff, limit, reset --------------------------------------------------------------------


def crash_loop(policy: Policy, runs: int, run_for: float) -> tuple[list[float], lc.State, list[str]]:
    """Start, then let the agent fail after ``run_for`` seconds, ``runs`` times over."""
    clock = Clock()
    state = running(clock, policy)
    delays, events = [], []
    for _ in range(runs):
        state, actions = lc.step(state, AgentExited(clock(run_for), FAIL3), policy)
        events += emitted(actions)
        if not isinstance(state, RestartPending):
            break
        state, _ = lc.step(state, WorkerExited(clock(0.01)), policy)
        delay = state.due_at - state.ended_at
        delays.append(delay)
        # The timer fires early (it never does, but the machine must not care): re-armed.
        early, actions = lc.step(state, RestartDue(clock() + delay / 2), policy)
        assert early == state and actions == (ScheduleRestart(state.due_at),)
        state, actions = lc.step(state, RestartDue(clock(delay)), policy)
        assert isinstance(state, Starting)
        (launch,) = of(Launch, actions)
        assert launch.note == f"restarted (attempt {state.restarts}) after exited 3"
        state, _ = lc.step(state, Launched(clock(0.1), 20, 21), policy)
    return delays, state, events


def test_backoff_doubles_up_to_its_cap_then_the_limit_stops_it() -> None:
    delays, state, events = crash_loop(Policy("on-failure", limit=5, backoff=0.5), 10, 1.0)
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert isinstance(state, Ended) and state.outcome == FAIL3 and state.restarts == 5
    assert events[-2:] == ["exited", "restart_limit"]

    delays, _, _ = crash_loop(Policy("always", limit=8, backoff=4.0, backoff_cap=30.0), 10, 1.0)
    assert delays == [4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0, 30.0]


def test_a_long_run_resets_the_count_of_quick_restarts() -> None:
    delays, state, _ = crash_loop(Policy("always", limit=3), 10, 60.0)
    assert delays == [0.5] * 10 and isinstance(state, Running)
    delays, state, _ = crash_loop(Policy("always", limit=3), 10, 59.9)
    assert delays == [0.5, 1.0, 2.0] and isinstance(state, Ended)


def test_a_session_that_keeps_being_interrupted_has_failed() -> None:
    clock = Clock()
    policy = Policy("always", limit=0)
    state, actions = lc.step(running(clock, policy), WorkerExited(clock(1)), policy)
    assert state.outcome == FAILED and lc.label(state) == "failed"
    assert emitted(actions) == ["exited", "restart_limit"]


def test_a_restart_waits_for_the_lingering_worker() -> None:
    clock = Clock()
    policy = Policy("always")
    state, _ = lc.step(running(clock, policy), AgentExited(clock(1), OK), policy)
    state, actions = lc.step(state, RestartDue(clock(0.5)), policy)
    assert isinstance(state, RestartPending) and actions == ()
    state, actions = lc.step(state, WorkerExited(clock(1.5)), policy)
    assert isinstance(state, Starting) and of(Launch, actions)


def test_a_worker_that_cannot_start_fails() -> None:
    clock = Clock()
    state, actions = lc.step(Starting(restarts=2), LaunchFailed(clock(), "no such file"), Policy("always"))
    assert state == Ended(FAILED, clock.now, restarts=2)
    assert of(Emit, actions) == [Emit("launch_failed", {"error": "no such file"})]


# ---- stop ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("restart", ["no", "on-failure", "always"])
def test_a_stopped_session_is_never_restarted(restart: str) -> None:
    clock = Clock()
    policy = Policy(restart)
    state, actions = lc.step(running(clock, policy), StopRequested(clock(1), 2.5), policy)
    assert isinstance(state, Running) and state.stopping
    assert actions == (Save(), SendStop(2.5))  # recorded before the worker is told
    state, actions = lc.step(state, AgentExited(clock(1), TERMED), policy)
    assert state == Ended(TERMED, clock.now, state.started_at, user_stopped=True, worker_gone=False)
    assert emitted(actions) == ["exited"]


def test_stop_cancels_a_pending_restart() -> None:
    clock = Clock()
    policy = Policy("on-failure")
    state, _ = lc.step(running(clock, policy), WorkerExited(clock(1), FAIL3), policy)
    state, actions = lc.step(state, StopRequested(clock(0.1), 10), policy)
    assert isinstance(state, Ended) and state.user_stopped and state.outcome == FAIL3
    assert CancelRestart() in actions and emitted(actions) == ["restart_cancelled"]
    assert Save() in actions
    # A timer that fires anyway does nothing.
    assert lc.step(state, RestartDue(clock(100)), policy) == (state, ())


@pytest.mark.parametrize("grace", [-1, 1e12, float("inf"), float("nan"), "10", True, None])
def test_a_stop_with_a_bad_grace_is_refused_before_anything_changes(grace: object) -> None:
    with pytest.raises(ValueError, match="stop grace"):
        StopRequested(1.0, grace)  # type: ignore[arg-type]


def test_stop_refuses_what_is_not_running() -> None:
    policy = Policy("always")
    ended = Ended(FAIL3, 1.0)
    assert lc.step(ended, StopRequested(2.0, 10), policy) == (
        ended, (Refuse("session {name} is not running (exited 3)"),))
    _, actions = lc.step(Starting(), StopRequested(2.0, 10), policy)
    assert of(Refuse, actions)


# ---- resume ---------------------------------------------------------------------------------------


def test_resume_runs_an_ended_session_again_with_a_fresh_count() -> None:
    clock = Clock()
    policy = Policy("always")
    ended = Ended(FAIL3, clock(), restarts=4, user_stopped=True)
    state, actions = lc.step(ended, ResumeRequested(clock(1), "resumed: x"), policy)
    assert state == Starting(restarts=0) and actions == (Save(), Launch("resumed: x"))
    state, _ = lc.step(state, Launched(clock(1), 5, 6), policy)
    assert state == Running(clock.now, restarts=0, stopping=False)


def test_resume_of_a_session_whose_worker_lingers_waits_for_it() -> None:
    clock = Clock()
    policy = Policy("no")
    state, _ = lc.step(running(clock, policy), AgentExited(clock(1), OK), policy)
    assert isinstance(state, Ended) and not state.worker_gone
    state, actions = lc.step(state, ResumeRequested(clock(0.1), "resumed: x"), policy)
    assert actions == (ReleaseWorker(),) and not lc.is_running(state)
    _, again = lc.step(state, ResumeRequested(clock(0.1), "resumed: x"), policy)
    assert of(Refuse, again)
    state, actions = lc.step(state, WorkerExited(clock(0.1)), policy)
    assert isinstance(state, Starting) and actions == (Save(), Launch("resumed: x"))


def test_resume_of_a_pending_restart_starts_it_now() -> None:
    clock = Clock()
    policy = Policy("always")
    state, _ = lc.step(running(clock, policy), WorkerExited(clock(1)), policy)
    state, actions = lc.step(state, ResumeRequested(clock(0.1), "resumed: x"), policy)
    assert isinstance(state, Starting) and actions == (CancelRestart(), Save(), Launch("resumed: x"))


def test_resume_refuses_a_running_session() -> None:
    policy = Policy("no")
    _, actions = lc.step(Running(1.0), ResumeRequested(2.0, "resumed: x"), policy)
    assert actions == (Refuse("session {name} is running: 'superv attach {name}'"),)
    _, actions = lc.step(Starting(), ResumeRequested(2.0, "resumed: x"), policy)
    assert actions == (Refuse("session {name} is being started right now"),)


# ---- the supervisor's own restart, and reboots ---------------------------------------------------


def test_a_pending_restart_survives_the_supervisors_death() -> None:
    clock = Clock()
    policy = Policy("on-failure")
    state, _ = lc.step(running(clock, policy), AgentExited(clock(1), FAIL3), policy)
    assert isinstance(state, RestartPending)
    # The supervisor dies; the next one reads the registry back.
    reloaded = lc.from_fields(lc.to_fields(state))
    assert isinstance(reloaded, RestartPending) and reloaded.due_at == state.due_at
    reloaded, actions = lc.step(reloaded, Recovered(clock(0.1), worker_alive=True), policy)
    assert actions == (ReleaseWorker(), ScheduleRestart(state.due_at))
    reloaded, _ = lc.step(reloaded, WorkerExited(clock(0.1)), policy)
    reloaded, actions = lc.step(reloaded, RestartDue(clock(1)), policy)
    assert isinstance(reloaded, Starting) and of(Launch, actions)


def test_a_restart_pending_across_a_reboot_still_happens() -> None:
    clock = Clock()
    pending = RestartPending(FAIL3, clock(), clock() + 3, 1)
    state, actions = lc.step(lc.from_fields(lc.to_fields(pending)),
                             Recovered(clock(3600), worker_alive=False, rebooted=True),
                             Policy("on-failure"))
    assert actions == (ScheduleRestart(pending.due_at),)
    state, actions = lc.step(state, RestartDue(clock()), Policy("on-failure"))
    assert of(Launch, actions)


def test_after_a_restart_of_the_supervisor_live_workers_are_adopted() -> None:
    policy = Policy("always")
    for before in (Starting(restarts=1), Running(5.0, restarts=1, stopping=True)):
        state, _ = lc.step(before, Recovered(10.0, worker_alive=True), policy)
        assert isinstance(state, Running) and state.restarts == 1
        assert state.stopping == (isinstance(before, Running) and before.stopping)
        assert state.started_at == (5.0 if isinstance(before, Running) else 10.0)


def test_an_end_while_the_supervisor_was_down_gets_the_policy() -> None:
    state, _ = lc.step(Running(5.0), Recovered(100.0, worker_alive=False, last_word=OK,
                                                     ended_at=50.0), Policy("always"))
    assert isinstance(state, RestartPending) and state.ended_at == 50.0
    state, _ = lc.step(Running(5.0), Recovered(100.0, worker_alive=False, last_word=OK),
                             Policy("on-failure"))
    assert isinstance(state, Ended) and state.outcome == OK


def test_an_ended_session_found_again_only_learns_whether_its_worker_lingers() -> None:
    ended = Ended(FAIL3, 1.0, user_stopped=True)
    assert lc.step(ended, Recovered(2.0, worker_alive=True), Policy("always")) == (
        attrs.evolve(ended, worker_gone=False), ())


# ---- persistence ----------------------------------------------------------------------------------

STATES = [
    Starting(), Starting(restarts=2, started_at=3.0), Running(1.0), Running(1.0, 3, stopping=True),
    Ended(OK, 2.0, 1.0, 1), Ended(TERMED, 2.0, 1.0, 0, user_stopped=True), Ended(INTERRUPTED, 2.0),
    Ended(FAILED, 2.0), RestartPending(FAIL3, 2.0, 4.0, 2, 1.0),
]


@pytest.mark.parametrize("state", STATES)
def test_every_state_reads_back_from_the_registry(state: lc.State) -> None:
    back = lc.from_fields(lc.to_fields(state))
    # Liveness of a lingering worker is not stored: Recovered says it after a start.
    assert back == state
    assert lc.to_fields(state)["state"] == lc.label(state)


def test_registry_fields_of_an_older_superv_still_read() -> None:
    old = {"state": "exited 1", "exit_code": 1, "restarts": 2, "restart_pending": True,
           "ended_at": 9.0}
    assert lc.from_fields(old) == RestartPending(Outcome.of_exit(1, None), 9.0, 0.0, 2)


@pytest.mark.parametrize("bad", [
    {"state": 3}, {"state": "sleeping"}, {"state": "exited 1", "exit_code": "1"},
    {"state": "running", "started_at": "yesterday"}, {"restarts": True}, {"restarts": 1.5},
    {"state": "exited 0", "restart_pending": "yes"},
])
def test_malformed_registry_fields_are_refused(bad: dict) -> None:
    with pytest.raises((TypeError, ValueError)):
        lc.from_fields(bad)


# ---- any sequence of events ------------------------------------------------------------------------

outcomes = st.sampled_from([OK, FAIL3, TERMED, INTERRUPTED])
events = st.one_of(
    st.builds(lambda: ("launched",)), st.builds(lambda: ("launch_failed",)),
    st.tuples(st.just("agent_exited"), outcomes),
    st.tuples(st.just("worker_exited"), st.one_of(st.none(), outcomes)),
    st.tuples(st.just("recovered"), st.booleans(), st.booleans()),
    st.builds(lambda: ("stop",)), st.builds(lambda: ("resume",)), st.builds(lambda: ("due",)),
)


def make_event(spec: tuple, at: float) -> lc.Event:
    match spec:
        case ("launched",):
            return Launched(at, 1, 2)
        case ("launch_failed",):
            return LaunchFailed(at, "boom")
        case ("agent_exited", outcome):
            return AgentExited(at, outcome)
        case ("worker_exited", word):
            return WorkerExited(at, word)
        case ("recovered", alive, rebooted):
            return Recovered(at, alive, rebooted=rebooted)
        case ("stop",):
            return StopRequested(at, 1.0)
        case ("resume",):
            return ResumeRequested(at, "resumed: x")
    return RestartDue(at)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(["no", "on-failure", "always"]), st.lists(
    st.tuples(events, st.floats(0, 100)), max_size=30))
def test_any_sequence_of_events_keeps_the_promises(restart: str, script: list) -> None:
    policy = Policy(restart, limit=3)
    state, actions = lc.begin()
    at = 0.0
    stopped = False  # the user stopped it, and did not resume it since
    for spec, wait in script:
        at += wait
        event = make_event(spec, at)
        before = state
        state, actions = lc.step(state, event, policy)
        refused = bool(of(Refuse, actions))
        assert not refused or state == before, "a refusal changes nothing"
        if isinstance(event, StopRequested) and not refused:
            stopped = True
        if isinstance(event, ResumeRequested) and not refused:
            stopped = False
        launches = of(Launch, actions)
        if launches:
            assert isinstance(state, Starting)
            # Never a second worker beside a lingering one, never against the user's stop.
            assert getattr(before, "worker_gone", True) or isinstance(event, WorkerExited)
            assert not stopped
        if of(ScheduleRestart, actions):
            assert isinstance(state, RestartPending)
        assert lc.from_fields(lc.to_fields(state)) is not None  # always persistable
        assert isinstance(lc.label(state), str)
