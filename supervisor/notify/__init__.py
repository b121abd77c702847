"""Notifications: telling a person which session needs them, wherever they are.

- :mod:`.message`: what a supervisor event means for a person (sans-I/O): which change it
  is (``needs_approval``, ``idle`` after ``working``, ``ended``, ``error``...), its one line
  ("box:fix-tests needs approval: Bash: rm -rf build"), and the debounce that sends one
  notification per change that lasts.
- :mod:`.routes`: delivery, each route on its own: webhook (JSON POST), ntfy (plain-text
  POST with headers), a command (JSON on stdin), with timeouts and retries.
- :mod:`.notifier`: the supervisor's task that follows its events and delivers, never
  blocking the supervisor or a session.
- :mod:`.attach_notices`: the attach client's side: notices of every session on its
  status line, and the bell.

The configuration (``[notify]`` in config.toml) is :mod:`supervisor.config`'s.
"""
