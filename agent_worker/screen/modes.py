"""The terminal modes a program sets that the model keeps and the repaint restores."""

from __future__ import annotations

import attrs

# Private modes (``CSI ? n h``) kept in ``VTScreen.mode`` (pyte's convention: shifted by 5)
# and replayed by render.  Alternate screen and mouse modes are tracked on their own.
DECCKM = 1 << 5  # application cursor keys
BLINK = 12 << 5  # blinking cursor (xterm, tmux)
FOCUS = 1004 << 5  # focus in/out reports
PASTE = 2004 << 5  # bracketed paste
KEPT_PRIVATE = frozenset({1, 5, 6, 7, 12, 25, 1004, 2004})
ALT_MODES = frozenset({47, 1047, 1049})
MOUSE_TRACKING = frozenset({9, 1000, 1001, 1002, 1003})
MOUSE_ENCODING = frozenset({1005, 1006, 1015, 1016})


@attrs.frozen
class TerminalModes:
    """The modes that change how the terminal talks back to the program.

    The worker can use them too: ``superv send`` should wrap pasted text in bracketed-paste
    markers only when ``bracketed_paste`` is on, and arrow keys must be encoded as ``ESC O A``
    when ``app_cursor_keys`` is on.
    """

    alt_screen: bool
    app_cursor_keys: bool
    app_keypad: bool
    mouse_tracking: int | None  # 9, 1000, 1001, 1002 or 1003: the last one set
    mouse_encoding: int | None  # 1005, 1006, 1015 or 1016
    focus_events: bool
    bracketed_paste: bool
    autowrap: bool
    cursor_visible: bool
    origin: bool
    insert: bool
