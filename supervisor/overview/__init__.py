"""``superv top``: the live overview of every session (issue 11 item 3).

- :mod:`.model`: the rows, their order and what each key does, pure and unit-tested.
- :mod:`.stream`: the supervisor's events socket read without blocking (a selectors fd).
- :mod:`.app`: the curses loop: draws the model, runs attach/peek/stop... as children.

stdlib curses and selectors only, no trio: the overview must start in well under 300 ms.
"""
