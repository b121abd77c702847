"""A session's lifecycle as the supervisor sees it: where a session's state is decided.

Pure: no I/O and no clock.  Every event carries the time it happened, and
``step(state, event, policy)`` returns the next state and the actions the supervisor must
carry out (launch a worker, tell one to stop, arm a restart timer, announce, persist).  So
the restart policy (backoff, limit, reset after a long run, ``stop`` cancelling a pending
restart, what a reboot does) lives here, in one place, and is tested with a fake clock.

A session is in one of four states:

- ``Starting``: a worker is being launched (``start``, ``resume`` or a restart);
- ``Running``: its worker runs its agent (``stopping`` once the user asked it to stop);
- ``Ended``: its agent ended (how: ``Outcome``); its worker may still linger for its
  clients a moment, and a new worker starts only once that one is gone;
- ``RestartPending``: ended, and waiting out its backoff before the policy restarts it.
  It is persisted with its due time, so a restart survives the supervisor's death.

The supervisor learns of one end twice: the worker's ``exited`` event (``AgentExited``)
and the worker process ending (``WorkerExited``, from its pidfd).  The restart is decided
on whichever comes first; the second only records that the worker is gone.

Restart policies: ``no`` never restarts; ``always`` restarts every end the user did not ask
for; ``on-failure`` restarts an end that is not ``exited 0``, including a worker that died
(``interrupted``) on this boot, but not a session interrupted by a reboot: the agent did
not fail, the machine went away, and coming back by itself after a reboot is what
``always`` is for.  Every end the user did not ask for counts towards the limit of quick
restarts in a row; a run of ``reset_after`` seconds or more starts the count afresh.
"""

from __future__ import annotations

import contextlib
from typing import Any

import attrs

from agent_worker.snapshot import describe_exit
from agent_worker.spec import RESTART_POLICIES

# ---- how a run ended ---------------------------------------------------------------------


@attrs.frozen
class Outcome:
    """How a run ended: ``exited`` N, ``killed`` by a signal, ``interrupted`` (its worker
    died without saying), or ``failed`` (it could not start, or kept being interrupted)."""

    kind: str = attrs.field(validator=attrs.validators.in_(("exited", "killed", "interrupted", "failed")))
    exit_code: int | None = None
    exit_signal: int | None = None

    @classmethod
    def of_exit(cls, exit_code: int | None, exit_signal: int | None) -> Outcome:
        if exit_signal is not None:
            return cls("killed", None, exit_signal)
        return cls("exited", exit_code, None)

    @classmethod
    def from_label(cls, label: str, exit_code: int | None, exit_signal: int | None) -> Outcome:
        """The outcome a state label (``exited 3``, ``interrupted``...) and its codes name."""
        if label in ("interrupted", "failed"):
            return cls(label)
        if label.startswith(("exited", "killed")):
            return cls.of_exit(exit_code, exit_signal)
        raise ValueError(f"not the label of an ended session: {label!r}")

    @classmethod
    def of_exit_label(cls, label: str) -> Outcome:
        """The outcome ``describe_exit`` named (``exited 3``, ``killed SIGTERM``): what a
        Welcome says of an agent that ended before we connected.  ValueError if it is not one."""
        kind, _, value = label.partition(" ")
        if kind == "exited" and value.lstrip("-").isdigit():
            return cls.of_exit(int(value), None)
        if kind == "killed" and value.isdigit():
            return cls.of_exit(None, int(value))
        if kind == "killed" and value.startswith("SIG"):
            import signal

            with contextlib.suppress(KeyError):
                return cls.of_exit(None, signal.Signals[value].value)
        raise ValueError(f"not how an agent ended: {label!r}")

    @property
    def label(self) -> str:
        if self.kind in ("exited", "killed"):
            return describe_exit(self.exit_code, self.exit_signal)
        return self.kind

    @property
    def success(self) -> bool:
        return self.kind == "exited" and self.exit_code == 0


INTERRUPTED = Outcome("interrupted")
FAILED = Outcome("failed")


# ---- states --------------------------------------------------------------------------------


@attrs.frozen
class Starting:
    """A worker is being launched."""

    restarts: int = 0
    started_at: float | None = None  # of the previous run, until this one starts


@attrs.frozen
class Running:
    started_at: float
    restarts: int = 0
    stopping: bool = False  # the user asked it to stop: its end is not restarted


@attrs.frozen
class Ended:
    outcome: Outcome
    ended_at: float
    started_at: float | None = None
    restarts: int = 0
    user_stopped: bool = False
    worker_gone: bool = True  # an ended worker lingers a moment for its clients
    resume_note: str | None = None  # a resume waits for the lingering worker to go


@attrs.frozen
class RestartPending:
    outcome: Outcome
    ended_at: float
    due_at: float
    restarts: int  # counting the one it waits for
    started_at: float | None = None
    worker_gone: bool = True


State = Starting | Running | Ended | RestartPending


def is_running(state: State) -> bool:
    """Running or about to: ``ls`` counts it, ``rm`` and ``prune`` leave it alone."""
    return isinstance(state, Starting | Running)


def label(state: State) -> str:
    """The state as ``superv ls`` shows it."""
    match state:
        case Starting():
            return "starting"
        case Running():
            return "running"
        case Ended(outcome=outcome) | RestartPending(outcome=outcome):
            return outcome.label
    raise TypeError(state)


# ---- events --------------------------------------------------------------------------------


@attrs.frozen
class Launched:
    at: float
    worker_pid: int
    agent_pid: int | None


@attrs.frozen
class LaunchFailed:
    at: float
    error: str


@attrs.frozen
class AgentExited:
    """The worker's ``exited`` event: the agent ended; the worker lingers a moment."""

    at: float
    outcome: Outcome


@attrs.frozen
class WorkerExited:
    """The worker process is gone; ``last_word`` is how its snapshot says the agent ended
    (None if it said nothing: it died while the agent ran)."""

    at: float
    last_word: Outcome | None = None
    ended_at: float | None = None


@attrs.frozen
class Recovered:
    """The supervisor started and found this session's worker alive or not."""

    at: float
    worker_alive: bool
    last_word: Outcome | None = None
    ended_at: float | None = None
    rebooted: bool = False  # the worker ran on an earlier boot of this machine


MAX_STOP_GRACE = 86400.0  # as SUPERV_STOP_GRACE accepts


def check_grace(value: object) -> float:
    """The seconds a stop waits from SIGTERM to SIGKILL; ValueError unless 0..MAX_STOP_GRACE."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"stop grace {value!r} is not a number of seconds")
    if not 0 <= value <= MAX_STOP_GRACE:  # also refuses nan
        raise ValueError(f"stop grace {value} is out of range: use 0 to {MAX_STOP_GRACE:.0f} seconds")
    return float(value)


@attrs.frozen
class StopRequested:
    at: float
    grace: float = attrs.field(converter=check_grace)


@attrs.frozen
class ResumeRequested:
    at: float
    note: str  # the marker line's text, e.g. "resumed: claude --continue"


@attrs.frozen
class RestartDue:
    at: float


Event = (Launched | LaunchFailed | AgentExited | WorkerExited | Recovered | StopRequested
         | ResumeRequested | RestartDue)


# ---- actions -------------------------------------------------------------------------------


@attrs.frozen
class Launch:
    """Start a worker (forgetting the previous one's identity before the Save that comes
    first); feed back ``Launched`` or ``LaunchFailed``."""

    note: str | None = None  # the marker line to log first; None for a first start


@attrs.frozen
class SendStop:
    """Tell the worker to stop its agent: SIGTERM, SIGKILL after ``grace`` seconds."""

    grace: float


@attrs.frozen
class ReleaseWorker:
    """Tell an ended worker to exit now: a new run follows, it need not linger."""


@attrs.frozen
class ScheduleRestart:
    """Feed ``RestartDue`` at ``due_at`` (replacing any timer armed before)."""

    due_at: float


@attrs.frozen
class CancelRestart:
    pass


@attrs.frozen
class Emit:
    """Announce a lifecycle event (``superv events`` and the supervisor's log)."""

    event: str
    fields: dict[str, Any] = attrs.Factory(dict)


@attrs.frozen
class Save:
    """Persist the registry: the new state must survive the supervisor's death."""


@attrs.frozen
class Refuse:
    """The request cannot be carried out; ``reason`` has ``{name}`` for the session."""

    reason: str


Action = Launch | SendStop | ReleaseWorker | ScheduleRestart | CancelRestart | Emit | Save | Refuse


# ---- the policy ----------------------------------------------------------------------------


@attrs.frozen
class Policy:
    restart: str = attrs.field(default="no", validator=attrs.validators.in_(RESTART_POLICIES))
    limit: int = 5  # quick restarts in a row
    backoff: float = 0.5  # the first delay, doubling...
    backoff_cap: float = 30.0  # ...up to this
    reset_after: float = 60.0  # a run this long starts the count of quick restarts afresh

    def delay(self, restarts: int) -> float:
        """The wait before restart number ``restarts + 1``."""
        return min(self.backoff * 2 ** min(restarts, 64), self.backoff_cap)

    def wants_restart(self, outcome: Outcome, rebooted: bool) -> bool:
        if self.restart == "always":
            return True
        if self.restart == "on-failure":
            return not outcome.success and not (rebooted and outcome.kind == "interrupted")
        return False


# ---- transitions ---------------------------------------------------------------------------

Transition = tuple[State, tuple[Action, ...]]


def begin() -> Transition:
    """A new session: launch its first worker."""
    return Starting(), (Save(), Launch(None))


def step(state: State, event: Event, policy: Policy) -> Transition:
    """The next state and what to do, for ``event`` happening to a session in ``state``."""
    match state, event:
        # -- launching
        case Starting(), Launched(at=at):
            return Running(started_at=at, restarts=state.restarts), (
                Emit("started", {"worker_pid": event.worker_pid, "agent_pid": event.agent_pid}),
                Save(),
            )
        case Starting(), LaunchFailed(at=at):
            return Ended(FAILED, ended_at=at, started_at=state.started_at,
                         restarts=state.restarts), (
                Emit("launch_failed", {"error": event.error}), Save())

        # -- the end, learnt twice: decided on the first, recorded on the second
        case Running(), AgentExited(at=at, outcome=outcome):
            return _ended(state, outcome, at, policy, worker_gone=False, rebooted=False)
        case Running(), WorkerExited(at=at):
            return _ended(state, event.last_word or INTERRUPTED, at, policy,
                          worker_gone=True, rebooted=False, ended_at=event.ended_at)
        case Ended(), WorkerExited(at=at):
            if state.resume_note is not None:
                return _launch(state.restarts, state.started_at, state.resume_note)
            return attrs.evolve(state, worker_gone=True), ()
        case RestartPending(), WorkerExited(at=at):
            return _restart_if_due(attrs.evolve(state, worker_gone=True), at)
        case RestartPending(), RestartDue(at=at):
            return _restart_if_due(state, at)

        # -- the supervisor starts again
        case Starting() | Running(), Recovered(worker_alive=True, at=at):
            started = state.started_at or at
            stopping = isinstance(state, Running) and state.stopping
            return Running(started_at=started, restarts=state.restarts, stopping=stopping), (Save(),)
        case Starting() | Running(), Recovered(at=at):
            return _ended(state, event.last_word or INTERRUPTED, at, policy,
                          worker_gone=True, rebooted=event.rebooted, ended_at=event.ended_at)
        case Ended(), Recovered():
            return attrs.evolve(state, worker_gone=not event.worker_alive, resume_note=None), ()
        case RestartPending(), Recovered(at=at):
            pending = attrs.evolve(state, worker_gone=not event.worker_alive)
            release = () if pending.worker_gone else (ReleaseWorker(),)
            return pending, (*release, ScheduleRestart(pending.due_at))

        # -- what users ask for
        case Running(), StopRequested():
            return attrs.evolve(state, stopping=True), (Save(), SendStop(event.grace))
        case RestartPending(), StopRequested():
            return Ended(state.outcome, state.ended_at, state.started_at, state.restarts,
                         user_stopped=True, worker_gone=state.worker_gone), (
                CancelRestart(), Emit("restart_cancelled"), Save())
        case Starting(), StopRequested():
            return state, (Refuse("session {name} is starting right now: stop it once it runs"),)
        case Ended(), StopRequested():
            return state, (Refuse(f"session {{name}} is not running ({label(state)})"),)

        case Ended(resume_note=None), ResumeRequested():
            return _resume(state, event.note, state.worker_gone)
        case RestartPending(), ResumeRequested():
            transition = _resume(state, event.note, state.worker_gone)
            return transition[0], (CancelRestart(), *transition[1])
        case Ended(), ResumeRequested():
            return state, (Refuse("session {name} is being resumed right now"),)
        case Starting(), ResumeRequested():
            return state, (Refuse("session {name} is being started right now"),)
        case Running(), ResumeRequested():
            return state, (Refuse("session {name} is running: 'superv attach {name}'"),)

    # Anything else is an event that no longer matters: a stale timer, a second word on
    # an end already recorded, a launch result for a session that moved on.
    return state, ()


def _ended(state: Starting | Running, outcome: Outcome, at: float, policy: Policy,
           worker_gone: bool, rebooted: bool, ended_at: float | None = None) -> Transition:
    """The run ended: record it, and decide (once) whether the policy restarts it.

    ``at`` is when we learnt of the end, ``ended_at`` when it happened if the worker said
    (a snapshot read seconds later).  The end is recorded as it happened, but the backoff
    counts from ``at``: counted from a past end it would already be over, and the restart
    would follow its announcement at once.
    """
    ended = ended_at if ended_at is not None else at
    started_at = state.started_at
    user_stopped = isinstance(state, Running) and state.stopping
    restarts = state.restarts
    if started_at is not None and ended - started_at >= policy.reset_after:
        restarts = 0
    exited = Emit("exited", {"state": outcome.label, "exit_code": outcome.exit_code,
                             "exit_signal": outcome.exit_signal})
    if user_stopped or not policy.wants_restart(outcome, rebooted):
        return Ended(outcome, ended, started_at, restarts, user_stopped, worker_gone), (exited, Save())
    if restarts >= policy.limit:
        # Given up on: an agent that keeps dying without a word has failed.
        final = FAILED if outcome.kind == "interrupted" else outcome
        return Ended(final, ended, started_at, restarts, False, worker_gone), (
            exited, Emit("restart_limit", {"restarts": restarts}), Save())
    delay = policy.delay(restarts)
    pending = RestartPending(outcome, ended, at + delay, restarts + 1, started_at, worker_gone)
    release = () if worker_gone else (ReleaseWorker(),)
    return pending, (
        exited,
        # Announced before the release (a message to the worker, which may be slow): the
        # restart comes at least its delay after this line.
        Emit("restarting", {"attempt": restarts + 1, "delay": delay}),
        *release,
        Save(),  # before waiting: the restart survives our own death meanwhile
        ScheduleRestart(pending.due_at),
    )


def _restart_if_due(state: RestartPending, at: float) -> Transition:
    if at < state.due_at:
        return state, (ScheduleRestart(state.due_at),)
    if not state.worker_gone:
        return state, ()  # launched when the lingering worker is gone (WorkerExited)
    note = f"restarted (attempt {state.restarts}) after {state.outcome.label}"
    return _launch(state.restarts, state.started_at, note)


def _resume(state: Ended | RestartPending, note: str, worker_gone: bool) -> Transition:
    if worker_gone:
        return _launch(0, state.started_at, note)
    waiting = Ended(state.outcome, state.ended_at, state.started_at, 0, worker_gone=False,
                    resume_note=note)
    return waiting, (ReleaseWorker(),)


def _launch(restarts: int, started_at: float | None, note: str) -> Transition:
    # Saved first: a supervisor that dies during the launch leaves "starting" with no
    # worker named, and the next one asks the session's socket rather than launch again.
    return Starting(restarts=restarts, started_at=started_at), (Save(), Launch(note))


# ---- persistence: the registry's fields ------------------------------------------------------


def to_fields(state: State) -> dict[str, Any]:
    """The registry's flat fields for ``state`` (format 1, plus ``restart_due_at``)."""
    fields: dict[str, Any] = {
        "state": label(state), "exit_code": None, "exit_signal": None,
        "started_at": state.started_at, "ended_at": None, "restarts": state.restarts,
        "user_stopped": False, "restart_pending": False, "restart_due_at": None,
    }
    if isinstance(state, Running):
        fields["user_stopped"] = state.stopping
    if isinstance(state, Ended | RestartPending):
        fields.update(exit_code=state.outcome.exit_code, exit_signal=state.outcome.exit_signal,
                      ended_at=state.ended_at)
    if isinstance(state, Ended):
        fields["user_stopped"] = state.user_stopped
    if isinstance(state, RestartPending):
        fields.update(restart_pending=True, restart_due_at=state.due_at)
    return fields


def from_fields(fields: dict[str, Any]) -> State:
    """The state the registry's fields describe; ValueError or TypeError if they do not.

    A worker's liveness is not stored: ``Recovered`` tells it after a start.
    """
    text = _typed(fields, "state", str, "starting")
    restarts = _typed(fields, "restarts", int, 0)
    started_at = _number(fields, "started_at")
    ended_at = _number(fields, "ended_at")
    user_stopped = _typed(fields, "user_stopped", bool, False)
    if text == "starting":
        return Starting(restarts=restarts, started_at=started_at)
    if text == "running":
        return Running(started_at=started_at or 0.0, restarts=restarts, stopping=user_stopped)
    outcome = Outcome.from_label(text, _typed(fields, "exit_code", int, None),
                                 _typed(fields, "exit_signal", int, None))
    if _typed(fields, "restart_pending", bool, False) and not user_stopped:
        # Written before restart_due_at existed: due at once.
        due_at = _number(fields, "restart_due_at") or 0.0
        return RestartPending(outcome, ended_at or 0.0, due_at, max(restarts, 1), started_at)
    return Ended(outcome, ended_at or 0.0, started_at, restarts, user_stopped)


def _typed(fields: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    value = fields.get(key, default)
    if value is None or value is default:
        return value
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"{key} is {value!r}, not a {kind.__name__}")
    return value


def _number(fields: dict[str, Any], key: str) -> float | None:
    value = fields.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{key} is {value!r}, not a number")
    return float(value)
