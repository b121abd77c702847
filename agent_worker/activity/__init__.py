"""What the agent in a session is doing: its *activity*, separate from its process state.

- :mod:`.tracker`: the sans-I/O state (``starting``, ``working``, ``needs_approval``,
  ``needs_input``, ``idle``, ``ended``, ``unknown``) resolved from every signal, most exact
  first: hooks, screen rules, terminal signals, quiet time.
- :mod:`.hooks`: what a hook call from the agent means, and the per-launch hook settings.
- :mod:`.hook_client`: the tiny stdlib program the agent runs for each hook.
- :mod:`.terminal`: titles, OSC 9/777/99 notifications and real BELs in the output.
- :mod:`.rules` and ``rules.json``: the screen rules per agent kind, as data.
- :mod:`.monitor`: the worker's side, the only part that does I/O.
"""
