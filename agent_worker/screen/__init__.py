"""The terminal model behind "attach shows the current screen" and ``superv peek``.

A worker keeps one :class:`ScreenModel` per session and feeds it the session's output
bytes, straight from the log.  pyte parses a few hundred kB/s, about 40 times slower than
a PTY delivers, so the worker feeds the model lazily (on attach, on peek, or coalesced in
the background), never inline with the PTY reader.

On attach the worker sends :meth:`ScreenModel.render`: a byte string that repaints the
client's terminal to the model's screen and leaves it in the model's state, so that the
live stream can continue from exactly the log offset the model was fed up to.  "State"
means everything the next bytes of the stream could depend on: the cells, the cursor and
its pending-wrap flag, the pen (SGR), the character sets, the saved cursor, the scroll
region, the main screen hidden behind the alternate one, and the private modes that change
how the terminal talks back (cursor keys, keypad, mouse, bracketed paste, focus events).

What pyte gets wrong, and this module therefore owns:

* **Parsing.**  pyte's parser applies ``CSI > 4 ; 2 m`` (vim's modifyOtherKeys) as an SGR,
  prints the payload of DCS/APC strings and the tail of ``CSI = 1 u`` / ``CSI ! p`` as
  text, and drops colon sub-parameters (``38:2::r:g:b``).  The model reads its input with
  :mod:`agent_worker.escapes` instead (the VT500 grammar; an incomplete sequence is kept
  across ``feed`` calls), and :mod:`.parser` maps the tokens onto the screen.
* **Drawing.**  pyte stops drawing a text run at the first zero-width non-combining
  character (ZWJ, VS16: every coloured emoji), writes a wide character into the last
  column instead of wrapping it, loses the pending-wrap state on a line feed, and ignores
  the DEC line-drawing set in UTF-8 mode (curses boxes would read ``lqqqk``).
* **Erasing and scrolling** fill with the pen's background only (BCE, as xterm and tmux
  do), not with the whole pen; pyte only erased cells that had been written before.
* **The alternate screen** (``?47``, ``?1047``, ``?1049``), which pyte does not model, and
  the private modes it keeps only as opaque numbers.
* **SGR**: pyte folds 256-colour indexes into RGB, so ``38;5;1`` (palette red) could not be
  told from ``38;2;205;0;0``; it has no dim.  Cells here are :class:`Cell` (pyte's ``Char``
  fields plus ``dim`` and ``conceal``) and colours are lossless: a pyte colour name for the
  16 ANSI colours (``"red"``, ``"brightblue"``), the decimal palette index for 256-colour
  (``"196"``), ``"#rrggbb"`` for truecolor, ``"default"`` otherwise.

Memory is bounded: the screen is ``rows x cols`` cells (plus one hidden main screen while
the alternate one is shown), and the optional scrollback is a ``deque(maxlen=history)``.

The package, along its seams:

* :mod:`.cells`: a styled :class:`Cell`, and SGR both ways (read the program's, write the
  repaint's);
* :mod:`.modes`: the private modes kept, :class:`TerminalModes`;
* :mod:`.buffer`: rows of cells, the saved-cursor slot, the hidden main screen;
* :mod:`.vt`: pyte's ``Screen`` with the fixes above (drawing, scrolling, erasing, modes,
  the alternate screen, resizing);
* :mod:`.parser`: escape tokens onto the screen;
* :mod:`.render`: the repaint of a client's terminal;
* :mod:`.model`: :class:`ScreenModel`, the public face of all of the above;
* :mod:`.keeper`: the worker's model, fed from the log off the hot path and rebuilt when
  it fails (imported by the worker only: it logs, and peek must start fast).
"""

from agent_worker.screen.cells import BLANK, Cell
from agent_worker.screen.model import ScreenModel
from agent_worker.screen.modes import TerminalModes

__all__ = ["BLANK", "Cell", "ScreenModel", "TerminalModes"]
