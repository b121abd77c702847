"""The feed policy alone (sans-I/O, a simulated clock): what it keeps in flight to a client
on a link of known rate and round trip, and when it skips to the screen."""

from __future__ import annotations

import collections

import pytest

from agent_worker.feed_policy import (
    EARLY_SCREENS,
    FLOOD_MEMORY,
    MARGIN,
    QUIET_GAP,
    SCREENS_WORTH,
    SKIP_AFTER,
    UNBOUNDED,
    FeedPolicy,
)


def one_wake(feed: FeedPolicy, position: int, produced: int, now: float,
             quiet_for: float) -> list[tuple[int, int]]:
    """What the worker's sender sends in one wake, from ``position`` with the log at
    ``produced``: each frame as (the offset it brings the client to, its wire bytes)."""
    frames = []
    while position < produced and feed.room():
        if feed.should_hold(position, produced, now, quiet_for):
            feed.caught_up()  # idle by choice, as the sender says
            break
        feed.backlogged(now)
        if feed.should_skip(position, produced, now, quiet_for):
            position = produced
            size = 3000  # a screen
            feed.skipped(position, size, now)
        else:
            size = min(feed.chunk(), feed.room(), produced - position)
            position += size
        feed.sent(position, size, now)
        frames.append((position, size))
    return frames


def drive(feed: FeedPolicy, rate: float, rtt: float, produced: int, seconds: float,
          step: float = 0.001, flood: float = 0.0) -> tuple[int, int, int]:
    """Feed a client on a link of ``rate`` bytes/s and ``rtt`` s from a backlog of
    ``produced`` bytes (``flood`` more each second, for the first half), for ``seconds``;
    (most bytes in flight, offset reached, skips)."""
    now, position, link_free, last_output = 0.0, 0, 0.0, 0.0
    arrivals: collections.deque[tuple[float, int]] = collections.deque()
    most = 0
    while now < seconds:
        while arrivals and arrivals[0][0] <= now:
            feed.acked(arrivals.popleft()[1], now)
        for reached, size in one_wake(feed, position, produced, now, now - last_output):
            position = reached
            link_free = max(link_free, now) + size / rate
            arrivals.append((link_free + rtt, reached))
        if position >= produced:
            feed.caught_up()
        most = max(most, feed.in_flight)
        now += step
        if now < seconds / 2 and flood:
            produced += int(flood * step)
            last_output = now
    return most, position, feed.skips


@pytest.mark.parametrize("rate", [200_000.0, 1_000_000.0])
def test_in_flight_stays_near_a_round_trip_of_the_link(rate: float) -> None:
    feed = FeedPolicy(acks=True, may_skip=False)
    most, position, skips = drive(feed, rate, 0.1, produced=30_000_000, seconds=10)
    assert skips == 0
    assert position > 0.9 * rate * 10  # the link is kept busy
    # About one round trip of the link, plus the margin: not the megabytes a socket holds.
    assert most < 2 * rate * 0.1 + 2 * MARGIN + 64 * 1024
    assert feed.rate(10) == pytest.approx(rate, rel=0.15)


def test_a_fast_link_is_found_quickly() -> None:
    feed = FeedPolicy(acks=True, may_skip=False)
    _, position, _ = drive(feed, 500_000_000.0, 0.0005, produced=10**9, seconds=1)
    assert position > 100_000_000  # a fifth of the link in the first second


def test_a_client_behind_by_more_than_half_a_second_is_skipped_once_to_the_present() -> None:
    feed = FeedPolicy(acks=True, may_skip=True)
    _, position, skips = drive(feed, 200_000.0, 0.1, produced=30_000_000, seconds=3)
    assert position == 30_000_000 and skips == 1


def test_a_backlog_under_half_a_second_is_sent_whole() -> None:
    feed = FeedPolicy(acks=True, may_skip=True)
    backlog = int(200_000 * SKIP_AFTER * 0.8)
    _, position, skips = drive(feed, 200_000.0, 0.1, produced=backlog, seconds=3)
    assert position == backlog and skips == 0


def test_a_client_that_does_not_ack_gets_every_byte_unbounded() -> None:
    feed = FeedPolicy(acks=False, may_skip=True)
    assert feed.window() == UNBOUNDED and not feed.should_skip(0, 10**9, 0.0, 1.0)
    feed.sent(100, 100, 0.0)
    assert feed.in_flight == 0 and feed.room() > 0


def test_a_client_kept_behind_by_a_long_flood_is_skipped_again_at_the_link_pace() -> None:
    """The flood goes on after the first skip: the client is skipped again (one screen a
    round trip at most) and ends at the present."""
    feed = FeedPolicy(acks=True, may_skip=True)
    _, position, skips = drive(feed, 200_000.0, 0.1, produced=0, seconds=6, flood=5_000_000)
    assert position == 15_000_000
    assert 3 <= skips <= 3 / 0.1


def test_acks_in_clumps_do_not_make_the_link_look_faster() -> None:
    """The slow-link bench at 200 kB/s measured 470-710 kB/s: acks reach the worker in
    clumps (SSH packets, the client's reads), and a rate taken over 20 ms between two
    clumps close together is far above the link's; the window (rate x round trip) grew
    with it, and so did the time to the present after a Ctrl-C."""
    import random

    rng = random.Random(12)
    rate, rtt = 200_000.0, 0.1
    feed = FeedPolicy(acks=True, may_skip=False)
    now, position, link_free = 0.0, 0, 0.0
    arrivals: collections.deque[tuple[float, int]] = collections.deque()
    next_clump = 0.0
    highest = 0.0
    while now < 10:
        if now >= next_clump:  # the client reads what came, in one clump of acks
            while arrivals and arrivals[0][0] <= now:
                feed.acked(arrivals.popleft()[1], now)
            next_clump = now + rng.uniform(0.005, 0.08)
        while feed.room():
            feed.backlogged(now)
            size = min(feed.chunk(), feed.room())
            position += size
            feed.sent(position, size, now)
            link_free = max(link_free, now) + size / rate
            arrivals.append((link_free + rtt, position))
        if now > 2:
            highest = max(highest, feed.rate(now) or 0.0)
        now += 0.001
    assert highest < 1.3 * rate


def test_after_a_skip_a_client_far_behind_is_sent_nothing_until_it_shows_the_screen() -> None:
    """The output sent after a screen was mostly skipped by the next one, and in flight it
    delayed that screen by window / rate: a 30 MB burst's marker took 0.6 s to show at
    200 kB/s, and the link carried 330 kB for it."""
    feed = FeedPolicy(acks=True, may_skip=True)
    flowing = 0.0  # seconds since the last output: the flood goes on
    feed.sent(100_000, 60_000, now=0.0)  # a window of output, then far behind: a skip
    assert feed.should_skip(100_000, 5_000_000, 0.01, flowing)
    feed.sent(5_000_000, 3_000, now=0.01)
    feed.skipped(5_000_000, 3_000, now=0.01)
    assert feed.should_hold(5_000_000, 9_000_000, 0.02, flowing)  # the flood goes on
    assert not feed.should_hold(5_000_000, 5_000_100, 0.02, flowing)  # nearly live: send it
    feed.acked(100_000, now=0.3)
    assert feed.should_hold(5_000_000, 9_000_000, 0.3, flowing)
    feed.acked(5_000_000, now=0.35)  # the screen is shown: the next one, at once
    assert not feed.should_hold(5_000_000, 9_000_000, 0.35, flowing)
    assert feed.should_skip(5_000_000, 9_000_000, 0.35, flowing)
    feed.skipped(9_000_000, 3_000, now=0.4)
    # A client that acks a screen only with more output after it: the hold ends.
    assert not feed.should_hold(9_000_000, 20_000_000, feed.hold_until(), flowing)


def test_a_floods_last_screen_goes_out_at_once_not_a_round_trip_later() -> None:
    """The slow-link bench's Ctrl-C at 1 MB/s: the prompt came after the flood's tail, and
    the tail (69 kB, under half a second of the link) was sent whole behind the last
    screen, once that screen's ack came back: 0.26 s against tmux's 0.19 s."""
    feed = FeedPolicy(acks=True, may_skip=True)
    feed.sent(80_000_000, 1_300, now=0.0)
    feed.skipped(80_000_000, 1_300, now=0.0)
    tail = 80_069_000  # what the flood printed after that screen, then the prompt
    # While it flows, the tail waits for the screen's ack, as any flood does.
    assert feed.should_hold(80_000_000, tail, 0.005, 0.0)
    assert not feed.should_skip(80_000_000, tail, 0.005, 0.0)
    # Quiet for QUIET_GAP: the flood's last screen, though the one before is not shown.
    assert feed.look_again_at(0.005, tail, 0.0) == pytest.approx(0.005 + QUIET_GAP)
    assert not feed.should_hold(80_000_000, tail, 0.016, QUIET_GAP)
    assert feed.should_skip(80_000_000, tail, 0.016, QUIET_GAP)
    position, now = tail, 0.016
    for _ in range(EARLY_SCREENS):  # a pause in the flood, and another
        feed.sent(position, 1_300, now=now)
        feed.skipped(position, 1_300, now=now)
        position, now = position + 100_000, now + 0.02
    # Then no more before one is shown: output in bursts gets a few screens a round trip.
    assert not feed.should_skip(position - 100_000, position, now, QUIET_GAP)
    assert feed.should_hold(position - 100_000, position, now, QUIET_GAP)
    assert feed.look_again_at(now, position, QUIET_GAP) == feed.hold_until()
    # A key typed (the Ctrl-C): no screen for what was there before it...
    feed.typed(position)
    assert not feed.should_skip(position - 100_000, position, now, QUIET_GAP)
    assert feed.look_again_at(now, position, 0.0) == feed.hold_until()
    # ...but the output after it (the prompt), once quiet, goes at once.
    answer = position + 20
    assert feed.look_again_at(now, answer, 0.0) == pytest.approx(now + QUIET_GAP)
    assert feed.should_hold(position - 100_000, answer, now, 0.0)
    assert feed.should_skip(position - 100_000, answer, now, QUIET_GAP)
    feed.skipped(answer, 1_300, now=now)
    assert not feed.should_skip(answer, answer + 100_000, now + 0.02, QUIET_GAP)  # once
    feed.acked(answer, now=now + 0.1)  # shown: the next one at once, as ever
    assert feed.should_skip(answer, answer + 100_000, now + 0.1, 0.0)


def test_a_few_screens_of_backlog_are_skipped_only_in_a_flood() -> None:
    """In a flood, output worth more than a few screens scrolls past unseen: a screen is
    cheaper.  Outside one, a backlog under half a second of the link is sent whole."""
    tail = 69_000  # 0.07 s at 1 MB/s, 0.35 s at the assumed rate: under SKIP_AFTER
    calm = FeedPolicy(acks=True, may_skip=True)
    assert not calm.should_skip(0, tail, 5.0, 1.0)
    flood = FeedPolicy(acks=True, may_skip=True)
    flood.sent(1_000_000, 1_300, now=0.0)
    flood.skipped(1_000_000, 1_300, now=0.0)
    flood.acked(1_000_000, now=0.1)
    assert flood.should_skip(1_000_000, 1_000_000 + tail, 0.1, 0.0)
    assert not flood.should_skip(1_000_000, 1_000_000 + SCREENS_WORTH * 1_300, 0.1, 0.0)
    assert not flood.should_skip(1_000_000, 1_000_000 + tail, FLOOD_MEMORY + 0.1, 0.0)


def test_a_floods_tail_is_not_sent_live_behind_its_last_screen() -> None:
    """The reader's fast path sends a caught-up client output as it is logged; after a
    flood's screen it sent the 45 kB before a Ctrl-C's prompt whole, behind that screen
    (0.20 s against tmux's 0.16 s on the slow-link bench)."""
    feed = FeedPolicy(acks=True, may_skip=True)
    assert feed.takes_live(0, 45_000, 0.0)  # no flood: live as ever
    feed.sent(1_000_000, 1_300, now=0.0)
    feed.skipped(1_000_000, 1_300, now=0.0)
    assert not feed.takes_live(1_000_000, 1_045_000, 0.01)
    assert feed.takes_live(1_000_000, 1_000_100, 0.01)  # a prompt alone: live
    exact = FeedPolicy(acks=True, may_skip=False)
    assert exact.takes_live(0, 10**9, 0.0)


def test_a_repaints_answer_is_not_a_flood() -> None:
    """The screen a status line's Repaint asks for is not a skip: output after it is
    streamed as before, however big a frame (a TUI's redraw)."""
    feed = FeedPolicy(acks=True, may_skip=True)
    feed.repaint()
    feed.sent(1_000_000, 1_300, now=0.0)
    feed.skipped(1_000_000, 1_300, now=0.0)
    feed.acked(1_000_000, now=0.1)
    assert not feed.should_skip(1_000_000, 1_030_000, 0.1, 0.0)
    assert feed.takes_live(1_000_000, 1_030_000, 0.1)



def lag_behind_a_flood(rate: float, rtt: float, flood: float, seconds: float = 12.0,
                       step: float = 0.001) -> float:
    """Over a link of ``rate`` bytes/s and ``rtt`` s, under a flood of ``flood`` bytes/s,
    the longest time (after the first second) between output being printed and the client
    showing it or a screen after it: how far from the present the client ever was."""
    feed = FeedPolicy(acks=True, may_skip=True)
    now, position, link_free, produced, shown = 0.0, 0, 0.0, 0, 0
    arrivals: collections.deque[tuple[float, int]] = collections.deque()  # shown then
    acks: collections.deque[tuple[float, int]] = collections.deque()  # its ack back then
    printed: list[tuple[float, int]] = []  # (time, log end then)
    worst = 0.0
    while now < seconds:
        while arrivals and arrivals[0][0] <= now:
            shown = max(shown, arrivals.popleft()[1])
        while acks and acks[0][0] <= now:
            feed.acked(acks.popleft()[1], now)
        for reached, size in one_wake(feed, position, produced, now, 0.0):
            position = reached
            link_free = max(link_free, now) + size / rate
            arrivals.append((link_free + rtt / 2, reached))
            acks.append((link_free + rtt, reached))
        produced += int(flood * step)
        printed.append((now, produced))
        if now > 1.0:
            i = next(i for i, (_, end) in enumerate(printed) if end >= shown)
            worst = max(worst, now - printed[i][0])
            del printed[:max(0, i - 1)]
        now += step
    return worst


@pytest.mark.parametrize(("rate", "rtt"), [(20_000.0, 0.1), (50_000.0, 0.3), (200_000.0, 0.1)])
def test_a_flood_over_a_slow_link_keeps_the_client_about_a_second_from_the_present(
        rate: float, rtt: float) -> None:
    """A link of 20 kB/s under a flood of 160 kB/s was 2.5 s behind at worst here (2-5 s
    through a throttling proxy), 50 kB/s with a 0.3 s round trip 2.3 s: the screens waited
    behind a window of 16 kB on top of the round trip's, and 64 kB before any measure.
    (Now 1.1 s and 0.57 s: half a second of backlog, a round trip, the screen itself.)"""
    assert lag_behind_a_flood(rate, rtt, flood=8 * rate) < 1.2
