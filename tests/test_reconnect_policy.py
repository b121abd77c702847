"""The reconnect timing of the remote attach, as a pure policy: no clock, no sleeps."""

from __future__ import annotations

import pytest

from supervisor.reconnect_policy import (
    BACKOFF_MAX,
    FIRST_CONNECT_BUDGET,
    RECONNECT_BUDGET_MAX,
    RECONNECT_BUDGET_MIN,
    STAGGER_MIN,
    ReconnectPolicy,
)


def test_quick_failures_are_retried_within_half_a_second_forever() -> None:
    policy = ReconnectPolicy()
    policy.connected(0.3)
    assert policy.dropped(lived=60.0) == 0.0  # a blip after a long session: at once
    waits = [policy.failed(0.001, timed_out=False) for _ in range(50)]
    assert waits[0] < waits[1] <= BACKOFF_MAX
    assert max(waits) <= BACKOFF_MAX and waits[-1] > 0.4


def test_a_try_that_took_long_is_followed_at_once() -> None:
    policy = ReconnectPolicy()
    policy.connected(0.3)
    policy.dropped(lived=60.0)
    assert policy.failed(2.0, timed_out=True) == 0.0


def test_a_box_that_drops_us_right_after_each_welcome_is_not_hammered() -> None:
    policy = ReconnectPolicy()
    policy.connected(0.3)
    assert all(policy.dropped(lived=0.1) > 0 for _ in range(5))


def test_the_budget_of_a_try_adapts_to_the_link() -> None:
    policy = ReconnectPolicy()
    assert policy.budget() == FIRST_CONNECT_BUDGET
    policy.connected(0.2)  # a fast link: short tries
    assert policy.budget() == RECONNECT_BUDGET_MIN
    policy.connected(1.5)  # a slow one: four times its set-up
    assert policy.budget() == 6.0
    # Tries that run out of time get longer ones, so a slow link is never cut off for good;
    # a network change cutting a try short does not count.
    budgets = []
    for _ in range(6):
        policy.failed(policy.budget(), timed_out=True)
        budgets.append(policy.budget())
    assert budgets[0] == 12.0 and budgets[-1] == RECONNECT_BUDGET_MAX
    policy.connected(0.2)
    assert policy.budget() == RECONNECT_BUDGET_MIN


def test_the_stagger_follows_the_quickest_answer_not_an_outage() -> None:
    policy = ReconnectPolicy()
    assert policy.stagger() == STAGGER_MIN
    policy.connected(2.0, answer=0.6)  # a slow link: its connections get time to answer
    assert policy.stagger() == pytest.approx(1.8)
    policy.connected(9.0, answer=8.0)  # answered only at a resent SYN after an outage
    assert policy.stagger() == pytest.approx(1.8)
