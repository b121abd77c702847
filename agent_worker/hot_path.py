"""The hot path, outside trio's scheduler (issue 13): one thread with its own epoll that
reads the PTY, appends to the log, writes to the handed terminals (as output is logged
when they are caught up, from the log when they are behind), and types the keys read from
the handed terminals into the PTY.

Why a thread: a keystroke's echo through trio costs a scheduler pass per hop (the key's
read, the PTY's read, the write), each tens of microseconds in Python; here it is two
wake-ups of one blocked ``epoll.poll``.  Everything else stays in trio, and hears of
output by :meth:`HotPath.take_news`, called through one pending
``TrioToken.run_sync_soon`` at a time: output from several batches is told at once.  How
late it may be told depends on who waits for it in trio (:func:`tell_delay`): a socket
client streaming, at once; no client at all, :data:`QUERY_DELAY` (the worker answers the
agent's terminal queries then); only handed terminals, which the hot path writes itself,
once the output pauses for :data:`TELL_QUIET`, and while the agent's own goes on,
:data:`TELL_LONGEST` after it began.  A keystroke's echo (:data:`ECHO_WINDOW`) is not the
agent's own: typing into a handed terminal wakes trio once it pauses, not once per key
nor once a second: each telling wakes several of trio's tasks (the reader, the activity
monitor, the screen model's keeper), and the activity would count the echo as work.

The native lane (:mod:`agent_worker.hot_lane`, where it was built): while exactly one
handed terminal is live and caught up and nothing else waits (:meth:`HotPath._lane_terminal`),
the thread hands the loop to C, which types its keys and logs then shows the output without
the interpreter, and returns for everything else with what it read; the rules below stay
here.  On this VM that took a key's CPU in the thread from ~110 us to ~50 us, and the echo
from behind screen's to level with it.

The one lock, :attr:`HotPath.lock` (a :class:`~agent_worker.hot_lane.LaneLock`, which the
lane holds while it waits in C and gives up at once when another thread asks), guards
everything the two threads share: the log's appends (so ``OutputLog.end`` and what a
terminal was written agree), each handed terminal's place and carry, whether it is live
(written here) or held (trio writes to it: the screen on attach, a status line, a
repaint; ``agent_worker.client_service``), and the news not yet told.  Only trio changes
which of the two writes to a terminal, under the lock (:meth:`HotPath.go_live`,
:meth:`HotPath.hold`).

The guarantees hold as in trio's reader: a batch is logged before any terminal sees it; a
terminal that falls behind is written from the log at its own offset by a thread of its
own (:mod:`agent_worker.catch_up`), so it never stalls the agent and costs at most one
carry (:data:`~agent_worker.handed_terminal.LOG_CHUNK`, or one batch); a full disk keeps
the batch, stops reading the PTY (so the agent blocks on its own writes) and retries
every :data:`DISK_RETRY` seconds.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import threading
import time
from collections.abc import Callable

import attrs
import trio

from agent_worker import hot_lane
from agent_worker.catch_up import CatchUp, install_interrupt
from agent_worker.handed_terminal import HandedTerminal
from agent_worker.log import OutputLog
from agent_worker.outage import Outage

READ_BATCH = 1 << 20  # most bytes taken from the PTY before they are logged and shown
READ_SIZE = 65536
# A read this short ends the batch: the agent wrote a little and stopped (a keystroke's
# echo), so a second read would only hear EAGAIN.  A flood comes in reads of ~4 kB (the
# line discipline's buffer) while more waits: those go on to make a batch.
DRAINED_BELOW = 1024
DISK_RETRY = 1.0  # a full disk gives no event when it has room again: try again this often
# While only handed terminals watch, trio hears of output once it has paused this long,
# and while it goes on (typing, a stream) this long after it began at the latest.
TELL_QUIET = 0.25
TELL_LONGEST = 1.0
# ... unless that much output is untold: a flood is told each TELL_QUIET as it goes, not
# held for trio a second at a time (a `yes` drain at 6 MB/s passed NEWS_LIMIT in that
# second, and trio heard of the range without the bytes).
TELL_FLOOD = 64 * 1024
# Output this soon after keys were typed, up to this much of it a read of keys, is their
# echo (a shell's line, a TUI redrawing its input box), not the agent at work: it does not
# make the session ``working`` (the activity's quiet-time rule, which saw typing into a
# quiet agent as work, and its pause as a turn finished), and trio hears of it once the
# typing pauses, not each TELL_LONGEST while it goes on.  A TUI draws a key within a frame
# or two (Ink: ~30 ms).  Keys with an Enter in them (CR or LF) have no echo: what follows
# is the agent's answer (a shell's command, a prompt sent), however soon it comes.
ECHO_WINDOW = 0.1
ECHO_BUDGET = 16 * 1024
QUERY_DELAY = 0.005  # ... and while no client is attached (the query answerer waits for it)
NEWS_LIMIT = 4 * READ_BATCH  # bytes of untold output kept for trio (the query answerer)
LANE_NEWS = READ_BATCH  # the native lane comes back to account for its output this often
# The PTY and the terminals are watched edge-triggered: level-triggered, epoll polled each
# descriptor it had reported once more at the next wait, and the TTY's poll then waited for
# its flip-buffer work (a sleep and a wake-up: 0.7 more a key, ~5 us of CPU on this VM).
# So a read that fills its buffer may have left more, which no edge will announce: its
# descriptor is read again before the loop waits (HotPath._again).  And a hang-up that
# comes with output or keys is one edge with them: once a descriptor has reported one, it
# is read to its end (EIO), not left after a short read (the agent's end would be seen
# only at EXIT_DRAIN, a handed terminal's never).
EDGE = select.EPOLLIN | select.EPOLLET
HANG_UP = select.EPOLLHUP | select.EPOLLERR


@attrs.define
class News:
    """What happened on the hot path since trio last heard."""

    start: int  # log offset of the first byte not told before
    end: int  # the log's end now
    data: bytes | None  # the bytes between (None: more than NEWS_LIMIT, not kept)
    disk_error: str | None = None  # the disk refused output (first refusal of an outage)
    disk_resumed: bool = False
    disk_failing: bool = False  # the disk refuses the log now (the last of the two above)
    unlogged: int = 0  # bytes read from the PTY that the disk has not taken yet
    eof: bool = False  # the PTY reported its end and everything read is logged
    failure: BaseException | None = None  # the thread died of this (a bug): the worker ends
    # time.time() of the agent's own output last logged in the range (not a keystroke's
    # echo: ECHO_WINDOW); None: there was none.
    agent_output_at: float | None = None
    terminals: list[HandedTerminal] = attrs.Factory(list)  # each with something for trio


class HotPath:
    def __init__(self, master_fd: int, output: OutputLog, delay: Callable[[], Telling]) -> None:
        self.fd = master_fd
        self.output = output
        self.lock = hot_lane.LaneLock()
        self._lane = hot_lane.chosen()  # the native lane, None: the Python loop only
        self._delay = delay  # how late trio may hear of output now (see tell_delay)
        self._token: trio.lowlevel.TrioToken | None = None
        self._tell: Callable[[], None] = lambda: None  # runs in trio, calls take_news
        self._epoll = select.epoll()
        self._epoll.register(master_fd, EDGE)
        self._epoll.register(self.lock.wake_fd, select.EPOLLIN)
        self._terminals: dict[int, HandedTerminal] = {}  # by descriptor, read for keys
        self._catch_ups: dict[int, CatchUp] = {}  # by descriptor: those that fell behind once
        self._told = output.end  # trio has heard of the log up to here
        self._untold: list[bytes] = []
        self._untold_size = 0
        self._unlogged = b""
        self._retry_at: float | None = None
        self._disk_error: str | None = None
        self._disk = Outage()  # the log's appends: its refusal is told to trio once
        self._disk_resumed = False
        self._eof = False
        self._pty_hung_up = False  # the PTY reported a hang-up (HANG_UP): read it to its end
        self._failure: BaseException | None = None
        self._flagged: dict[int, HandedTerminal] = {}  # terminals with news for trio
        self._again: set[int] = set()  # descriptors a full read may have left more on (EDGE)
        # When trio is to hear next (time.monotonic()): for something it must hear of at
        # once or soon (keys for it, a lost terminal, the disk, the PTY's end), and for
        # output (_output_logged: once it pauses, at the latest a while after it began).
        self._urgent_at: float | None = None
        self._output_at: float | None = None
        self._untold_since: float | None = None  # when the output trio has not heard of began
        # ... and the agent's own of it (not a keystroke's echo): its first and its last.
        self._agent_untold_since: float | None = None
        self._agent_output_at: float | None = None
        self._key_at: float | None = None  # when keys were last typed into the PTY
        self._echo_left = 0  # bytes of output still taken as their echo (ECHO_BUDGET)
        self._telling = False  # a run_sync_soon is pending
        self._thread = threading.Thread(target=self._run, name="hot-path", daemon=True)

    def start(self, tell: Callable[[], None]) -> None:
        """Start the thread (from trio): ``tell`` runs in trio when there is news."""
        self._token = trio.lowlevel.current_trio_token()
        self._tell = tell
        install_interrupt()  # (trio runs in the main thread) for CatchUp.stop
        self._thread.start()

    # ---- called from trio (under the lock where the state is shared) ---------------------

    def add_terminal(self, term: HandedTerminal) -> None:
        """Read this terminal's keys here from now on."""
        with self.lock:
            self._terminals[term.fd] = term
            self._epoll.register(term.fd, EDGE)
        term.on_close = lambda: self.remove_terminal(term)

    def remove_terminal(self, term: HandedTerminal) -> None:
        """Stop reading and writing it here (before its descriptor is closed)."""
        with self.lock:
            if self._terminals.pop(term.fd, None) is not None:
                with contextlib.suppress(OSError):
                    self._epoll.unregister(term.fd)
            term.live = False
            self._stop_catch_up(term)

    def go_live(self, term: HandedTerminal) -> bool:
        """Let the hot path write to ``term`` from now on, from its place in the log on
        (catching up first if it is behind); True if it is live now."""
        with self.lock:
            if (term.closed or term.fd not in self._terminals or term.shown_pending
                    or term.repaint_wanted):
                return False
            term.live = True
            self._serve_behind(term)
            self._look_again()
            return True

    def hold(self, term: HandedTerminal) -> None:
        """Stop writing to ``term`` here (trio has something to write to it first)."""
        with self.lock:
            term.live = False  # a catch-up write going out ends first: term.writing

    def watchers_changed(self) -> None:
        """(From trio.)  A socket client began or ended streaming: the native lane, if it
        is running, comes back to find that trio wants each batch at once now; the Python
        loop, if it is waiting, looks whether the lane may serve again."""
        with self.lock:
            self._look_again()

    def _look_again(self) -> None:
        """(Under the lock.)  Something the lane's rules depend on changed: wake the loop
        (in the lane or in Python's poll) to look again, or it would wait for the next key
        or output to find out (:meth:`_lane_terminal`)."""
        if self._lane is not None:
            self.lock.wake()

    def news_delay(self) -> float:
        """How late trio hears of output now, after it pauses (:func:`tell_delay`): a
        telling this late has gathered the output of that long already, and while output
        flows the next one comes first (trio's tasks wait for it, not on timers of their
        own: each wake-up of trio costs CPU, see :func:`tell_delay`)."""
        return self._delay().quiet

    def keys_typed(self, keys: bytes) -> None:
        """(From trio.)  It writes ``keys`` into the PTY (a socket client's): what the
        agent prints at once is their echo (ECHO_WINDOW)."""
        with self.lock:
            self._keys_typed_locked(keys)

    def agent_output_untold(self) -> bool:
        """(From trio.)  The agent has printed something trio has not heard of yet."""
        with self.lock:
            return self._agent_untold_since is not None

    def take_news(self) -> News:
        with self.lock:
            data = b"".join(self._untold) if self._untold_size <= NEWS_LIMIT else None
            agent_at = None if self._agent_output_at is None else \
                time.time() - (time.monotonic() - self._agent_output_at)
            news = News(start=self._told, end=self.output.end, data=data,
                        disk_error=self._disk_error, disk_resumed=self._disk_resumed,
                        disk_failing=self._disk.failing,
                        unlogged=len(self._unlogged), eof=self._eof and not self._unlogged,
                        failure=self._failure, terminals=list(self._flagged.values()),
                        agent_output_at=agent_at)
            self._told = self.output.end
            self._untold, self._untold_size = [], 0
            self._disk_error, self._disk_resumed = None, False
            self._flagged.clear()
            self._telling = False
            self._urgent_at = self._output_at = self._untold_since = None
            self._agent_untold_since = self._agent_output_at = None
            return news

    # ---- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            # For the worker's whole life, not just the PTY's: after the agent's end the
            # handed terminals still catch up and their keys (the detach key) still come.
            while True:
                if self._lane is not None and self._in_lane():
                    continue
                ready = dict(self._epoll.poll(0 if self._again else self._timeout()))
                for fd in self._again:
                    ready.setdefault(fd, 0)
                self._again.clear()
                for fd, events in ready.items():
                    hung_up = bool(events & HANG_UP)
                    if fd == self.fd:
                        self._pty_hung_up |= hung_up
                        self._read_pty()
                    elif fd == self.lock.wake_fd:
                        self.lock.drain()
                    else:
                        self._read_keys(fd, hung_up)
                if self._retry_at is not None and time.monotonic() >= self._retry_at:
                    self._log(self._unlogged)
                self._tell_if_due()
        except BaseException as exc:
            self._failure = exc  # raised in trio, by the PTY reader
            self._soon(0.0)

    def _in_lane(self) -> bool:
        """Let the native lane run the loop while it can (:mod:`agent_worker.hot_lane`);
        False if it cannot now (the Python loop runs a round)."""
        assert self._lane is not None
        with self.lock:
            term = self._lane_terminal()
            appends = self.output.native_appends()
            if term is None or appends is None:
                return False
            due, latest, telling = self._due(), self._latest(), self._delay()
            key_at = -1.0 if self._key_at is None else self._key_at
            self.lock.in_lane = True
            try:
                if self.lock.wanted():
                    self.lock.stood_aside = True  # woken when the waiter is done
                    return False  # (looked at after in_lane is set: see LaneLock.acquire)
                (why, news, rest, unshown, last_at, first_mono, last_mono, key_at,
                 self._echo_left, agent_first, agent_last, more, indexed_at,
                 last_indexed) = self._lane(
                    self._epoll.fileno(), self.fd, appends.log_fd, term.fd, term.detach_key,
                    term.read_only, -1 if due is None else due, -1 if latest is None else latest,
                    self._agent_untold_since is not None, telling.quiet, telling.longest,
                    appends.index_at, self._lane_news(), READ_BATCH, READ_SIZE, DRAINED_BELOW,
                    key_at, self._echo_left, ECHO_WINDOW, ECHO_BUDGET,
                    appends.index_fd, appends.end, appends.last_indexed, appends.index_every)
            finally:
                self.lock.in_lane = False
            self._key_at = None if key_at < 0 else key_at
            if more & hot_lane.MORE_PTY:
                self._again.add(self.fd)
            if more & hot_lane.MORE_KEYS:
                self._again.add(term.fd)
            if more & hot_lane.MORE_PTY_HUNG_UP:
                self._pty_hung_up = True
            if more & hot_lane.MORE_KEYS_HUNG_UP:
                term.hung_up = True
            if news or indexed_at:
                self.output.appended_natively(len(news), last_at,
                                              (last_indexed, indexed_at) if indexed_at else None)
            if news:
                term.took(news, len(news) - unshown)  # written from its place, the log's end
                self._keep_news(news)
                self._output_logged(first_mono, last_mono,
                                    (agent_first, agent_last) if agent_last else None)
                if unshown:
                    self._serve_behind(term)
            if why in (hot_lane.KEYS, hot_lane.TERM_END):
                self._keys_read(term.fd, term, rest)
            elif why == hot_lane.TERM_GONE:
                self._lose(term)
            elif why == hot_lane.WOKEN:
                # Read the wake-up now, under the lock: the waiter's own wake-up when it is
                # done comes after it, and read with this one the loop would wait in
                # Python's poll for the next key or output.
                self.lock.drain()
                self.lock.stood_aside = True  # for a waiter: woken again when it is done
        if why == hot_lane.UNLOGGED:
            self._log(rest)
        elif why == hot_lane.PTY_END:
            self._read_pty()
        self._tell_if_due()
        return why != hot_lane.WOKEN  # woken: another thread waits; the Python loop's round

    def _lane_terminal(self) -> HandedTerminal | None:
        """(Under the lock.)  The one terminal the lane may serve now, if it may run:
        nothing else waits (the disk, the PTY's end, keys for trio, a catch-up, a socket
        client that wants every batch told at once)."""
        if (len(self._terminals) != 1 or self._unlogged or self._eof or self._retry_at is not None
                or self._again or self._delay().at_once):
            return None
        (term,) = self._terminals.values()
        if (not term.live or term.closed or term.carry or term.keys_pending or term.writing
                or term.lost or term.detach_pressed or term.position != self.output.end):
            return None
        return term

    def _timeout(self) -> float:
        at = _earliest(self._retry_at, self._due())
        return -1 if at is None else max(0.0, at - time.monotonic())

    def _read_pty(self) -> None:
        if self._unlogged:
            return  # the disk has not taken the last batch: nothing more is read till then
        chunks = []
        total = 0
        while total < READ_BATCH:
            try:
                data = os.read(self.fd, READ_SIZE)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.EIO:  # EIO: every slave fd is closed
                    raise
                data = b""
            if not data:
                self._eof = True
                with contextlib.suppress(OSError):
                    self._epoll.unregister(self.fd)
                break
            chunks.append(data)
            total += len(data)
            if len(data) < DRAINED_BELOW and not self._pty_hung_up:
                break  # the agent wrote a little and stopped: no second read to hear EAGAIN
        else:
            self._again.add(self.fd)  # a full batch: more may wait, and no edge will tell
        if chunks:
            self._log(b"".join(chunks) if len(chunks) != 1 else chunks[0])
        elif self._eof:
            self._soon(0.0)

    def _log(self, batch: bytes) -> None:
        """Log ``batch``, write it to the live terminals; keep what the disk refused."""
        with self.lock:
            try:
                written = self.output.append(batch)
            except OSError as exc:
                written = 0
                if self._disk.failed():
                    self._disk_error = str(exc)
            else:
                if self._disk.succeeded():
                    self._disk_resumed = True
            if written:
                logged = batch[:written] if written < len(batch) else batch
                self._show(self.output.end - written, logged)
            self._unlogged = batch[written:]
            self._pause_reading(bool(self._unlogged))
            if self._disk_error or self._disk_resumed:
                self._soon_locked(0.0)
            elif written:
                now = time.monotonic()
                self._output_logged(now, now, None if self._is_echo(now, written) else (now, now))
        self._tell_if_due()

    def _show(self, start: int, logged: bytes) -> None:
        """(Under the lock.)  The live terminals that are caught up get the batch now; what
        one does not take, its catch-up thread writes, and the rest from the log."""
        # A copy: a terminal found gone is dropped from the dict (_lose) during the loop.
        for term in list(self._terminals.values()):
            if not term.live or term.position != start or term.carry:
                continue  # not ours, or behind: it catches up from the log
            try:
                taken = term.write_output(start, logged)
            except OSError:
                self._lose(term)
                continue
            if taken < len(logged):
                term.carry = logged[taken:]
                self._serve_behind(term)
        self._keep_news(logged)

    def _keep_news(self, logged: bytes) -> None:
        """(Under the lock.)  Output logged: kept for trio till it hears."""
        self._untold.append(logged)
        self._untold_size += len(logged)
        if self._untold_size > NEWS_LIMIT:
            self._untold = []  # trio is far behind: it hears of the range without the bytes

    def _serve_behind(self, term: HandedTerminal) -> None:
        """(Under the lock.)  A live terminal that is behind is written by its catch-up
        thread (started the first time it is needed)."""
        if not term.live or term.fd not in self._terminals:
            return
        if not term.carry and term.position >= self.output.end:
            return
        catch_up = self._catch_ups.get(term.fd)
        if catch_up is None:
            try:
                catch_up = CatchUp(term, self.lock, lambda: self.output.end,
                                   self.output.reader.read, self._caught_up, self._tell_trio)
            except OSError:
                self._lose(term)  # it cannot be opened again: it is gone
                return
            self._catch_ups[term.fd] = catch_up
        catch_up.wake()

    def _caught_up(self, term: HandedTerminal, lost: bool) -> bool:
        """(Under the lock, in the catch-up thread.)  A catch-up write ended: True if trio
        must hear of it now (the terminal is gone, or trio waits to write to it)."""
        if lost:
            self._lose(term)
            return True
        if not term.live:  # held meanwhile: trio waits for term.writing to clear
            self._flagged[term.fd] = term
            return True
        if not term.carry and term.position == self.output.end:
            self._flagged[term.fd] = term  # caught up: trio may want to know (the end)
            self._look_again()  # and the lane may serve it again
            return True
        return False

    def _stop_catch_up(self, term: HandedTerminal) -> None:
        """(Under the lock.)"""
        catch_up = self._catch_ups.pop(term.fd, None)
        if catch_up is not None:
            catch_up.stop()

    def _lose(self, term: HandedTerminal) -> None:
        """(Under the lock.)  A write failed: the terminal is gone; trio ends its attach."""
        term.live = False
        term.lost = True
        self._terminals.pop(term.fd, None)
        with contextlib.suppress(OSError):
            self._epoll.unregister(term.fd)
        self._stop_catch_up(term)
        self._flagged[term.fd] = term
        self._soon_locked(0.0)

    def _pause_reading(self, paused: bool) -> None:
        """Hold the PTY's reading while the disk refuses a batch, and try it again each
        DISK_RETRY; also once the PTY has ended (its last batch may be the refused one)."""
        if paused:
            if self._retry_at is None and not self._eof:
                # Out of the epoll, not just EPOLLIN off: a hang-up is reported whatever
                # the mask, and reading then would replace the batch the disk still owes.
                self._epoll.unregister(self.fd)
            self._retry_at = time.monotonic() + DISK_RETRY
        elif self._retry_at is not None:
            self._retry_at = None
            if not self._eof:
                self._epoll.register(self.fd, EDGE)

    def _read_keys(self, fd: int, hung_up: bool) -> None:
        with self.lock:
            term = self._terminals.get(fd)
            if term is None or term.closed:
                return
            term.hung_up |= hung_up
            try:
                data = os.read(fd, READ_SIZE)
            except BlockingIOError:
                return
            except OSError:
                data = b""  # EIO: the terminal hung up
            if len(data) == READ_SIZE or (data and term.hung_up):
                self._again.add(fd)  # more may wait, or its end (EDGE, HANG_UP)
            self._keys_read(fd, term, data)
        self._tell_if_due()

    def _keys_read(self, fd: int, term: HandedTerminal, data: bytes) -> None:
        """(Under the lock.)  ``data`` read from the terminal (b"": it hung up)."""
        if not data:
            term.lost = True
        else:
            cut = data.find(term.detach_key)
            keys = data if cut < 0 else data[:cut]
            if keys and term.read_only:
                term.refused = True
            elif keys:
                self._type(term, keys)
            if cut >= 0:
                term.detach_pressed = True
        if term.lost or term.detach_pressed:
            del self._terminals[fd]
            with contextlib.suppress(OSError):
                self._epoll.unregister(fd)
            term.live = False
            self._stop_catch_up(term)
        if term.lost or term.detach_pressed or term.refused or term.keys_pending:
            self._flagged[fd] = term
            self._soon_locked(0.0)

    def _type(self, term: HandedTerminal, keys: bytes) -> None:
        """(Under the lock.)  Keys to the agent: straight into the PTY, unless earlier keys
        still wait for trio (a full PTY input buffer), then after them, in order."""
        if not term.keys_pending:
            try:
                written = os.write(self.fd, keys)
            except BlockingIOError:
                written = 0
            except OSError:
                return  # the agent has gone; its end is reported elsewhere
            if written:
                self._keys_typed_locked(keys[:written])
                keys = keys[written:]
        term.keys_pending += keys

    def _keys_typed_locked(self, keys: bytes) -> None:
        """(Under the lock.)  ``keys`` went into the PTY: the output that follows at once
        is their echo, unless an Enter is among them (ECHO_WINDOW, ECHO_BUDGET; the native
        lane keeps the same rule)."""
        self._key_at = time.monotonic()
        self._echo_left = 0 if b"\r" in keys or b"\n" in keys else ECHO_BUDGET

    def _is_echo(self, now: float, size: int) -> bool:
        """(Under the lock.)  Whether ``size`` bytes logged at ``now`` are the echo of the
        keys typed last; once the agent's own output comes, the rest is its own too."""
        if self._key_at is None or now - self._key_at > ECHO_WINDOW or size > self._echo_left:
            self._echo_left = 0
            return False
        self._echo_left -= size
        return True

    def _soon(self, delay: float) -> None:
        with self.lock:
            self._soon_locked(delay)
        if delay == 0.0:
            self._tell_trio()

    def _soon_locked(self, delay: float) -> None:
        """(Under the lock.)  Trio is to hear within ``delay``, whatever the output does."""
        at = time.monotonic() + delay
        if self._urgent_at is None or at < self._urgent_at:
            self._urgent_at = at

    def _output_logged(self, first: float, last: float, agent: tuple[float, float] | None
                       ) -> None:
        """(Under the lock.)  Output was logged from ``first`` to ``last``
        (time.monotonic()), the agent's own of it (not a keystroke's echo) from
        ``agent``'s first to its last: trio hears of it once it has paused for the
        telling's ``quiet``, and while the agent's own goes on, at the latest ``longest``
        after the first of it that trio has not heard of (:class:`Telling`)."""
        if self._untold_since is None:
            self._untold_since = first
        if agent is not None:
            if self._agent_untold_since is None:
                self._agent_untold_since = agent[0]
            self._agent_output_at = agent[1]
        self._output_at = _earliest(last + self._delay().quiet, self._untold_cap())

    def _untold_cap(self) -> float | None:
        """(Under the lock.)  The latest trio may hear of the output it has not heard of,
        however that goes on: ``longest`` after the first of the agent's own, ``quiet``
        once it is a flood (TELL_FLOOD untold); None: there is none, or only a keystroke's
        echo (told once the typing pauses)."""
        if self._untold_since is None:
            return None
        telling = self._delay()
        if self._untold_size >= TELL_FLOOD:
            return self._untold_since + telling.quiet
        if self._agent_untold_since is not None:
            return self._agent_untold_since + telling.longest
        return None

    def _lane_news(self) -> int:
        """(Under the lock.)  How much output the lane may log before it comes back: a
        flood's start (TELL_FLOOD untold) changes when trio is due."""
        if self._untold_size < TELL_FLOOD:
            return TELL_FLOOD - self._untold_size
        return LANE_NEWS

    def _latest(self) -> float | None:
        """(Under the lock.)  The latest trio may hear, whatever output comes (None: any
        time after output comes): what the native lane's own telling rule is bound by."""
        return _earliest(self._urgent_at, self._untold_cap())

    def _due(self) -> float | None:
        """When trio is to hear next (time.monotonic()); None: nothing to tell."""
        return _earliest(self._urgent_at, self._output_at)

    def _tell_if_due(self) -> None:
        due = self._due()
        if due is not None and due <= time.monotonic():
            self._tell_trio()

    def _tell_trio(self) -> None:
        with self.lock:
            # A telling pending takes all the news there is when it runs.
            self._urgent_at = self._output_at = None
            if self._telling:
                return
            self._telling = True
        assert self._token is not None
        with contextlib.suppress(trio.RunFinishedError):  # the worker is exiting
            self._token.run_sync_soon(self._tell)


def _earliest(*times: float | None) -> float | None:
    """The earliest of the times that are set; None if none is."""
    return min((t for t in times if t is not None), default=None)


@attrs.frozen
class Telling:
    """How late trio may hear of output: ``quiet`` after it pauses, and while it goes on,
    ``longest`` after the first of it trio has not heard of."""

    quiet: float
    longest: float

    @property
    def at_once(self) -> bool:
        return self.longest <= 0


AT_ONCE = Telling(0.0, 0.0)
NO_CLIENT = Telling(QUERY_DELAY, QUERY_DELAY)
HANDED_ONLY = Telling(TELL_QUIET, TELL_LONGEST)


def tell_delay(socket_clients: bool, handed_terminals: bool) -> Telling:
    """How late trio may hear of output: at once when a socket client streams it (trio
    sends it), within :data:`QUERY_DELAY` with no client (trio answers the agent's terminal
    queries), and when only handed terminals watch (the hot path writes them), once the
    output pauses for :data:`TELL_QUIET` or :data:`TELL_LONGEST` after the agent's own
    began (:meth:`HotPath._untold_cap`): trio's own uses, the activity and the screen
    model, do not mind a second while output flows, and hear of a pause (a prompt waiting)
    within a quarter of a second.  Each telling wakes trio's reader, activity monitor and
    screen keeper: with a telling every quarter second while typing, the bench's CPU per
    key was 1.44-1.55x screen's, 1.24-1.28x with one a second (README, Performance)."""
    if socket_clients:
        return AT_ONCE
    return HANDED_ONLY if handed_terminals else NO_CLIENT
