"""A styled cell, and SGR both ways: reading the program's, writing the repaint's.

Colours are lossless: a pyte colour name for the 16 ANSI colours (``"red"``,
``"brightblue"``), the decimal palette index for 256-colour (``"196"``), ``"#rrggbb"`` for
truecolor, ``"default"`` otherwise.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import pyte
from wcwidth import wcwidth as _wcwidth

wcwidth = functools.lru_cache(maxsize=4096)(_wcwidth)


class Cell(NamedTuple):
    """One styled cell.  pyte's ``Char`` fields first, so code that knows pyte reads it.

    ``data`` is ``""`` for the right half of a wide character (the cell the wide character
    in the cell to its left covers), otherwise one base character plus any combining marks.
    """

    data: str = " "
    fg: str = "default"
    bg: str = "default"
    bold: bool = False
    italics: bool = False
    underscore: bool = False
    strikethrough: bool = False
    reverse: bool = False
    blink: bool = False
    dim: bool = False
    conceal: bool = False


BLANK = Cell()

_FG_NAMES = {
    **{code: name for code, name in pyte.graphics.FG_ANSI.items() if code != 39},
    **pyte.graphics.FG_AIXTERM,
}
_FG_CODES = {name: code for code, name in _FG_NAMES.items()}
_BG_CODES = {name: code + 10 for code, name in _FG_NAMES.items()}

_SGR_RESET = {field: getattr(BLANK, field) for field in Cell._fields if field != "data"}
_SGR_SIMPLE: dict[int, dict[str, Any]] = {
    0: _SGR_RESET,
    1: {"bold": True},
    2: {"dim": True},
    3: {"italics": True},
    4: {"underscore": True},
    5: {"blink": True},
    6: {"blink": True},
    7: {"reverse": True},
    8: {"conceal": True},
    9: {"strikethrough": True},
    21: {"underscore": True},  # double underline: shown as underline
    22: {"bold": False, "dim": False},
    23: {"italics": False},
    24: {"underscore": False},
    25: {"blink": False},
    27: {"reverse": False},
    28: {"conceal": False},
    29: {"strikethrough": False},
    39: {"fg": "default"},
    49: {"bg": "default"},
    **{code: {"fg": name} for code, name in _FG_NAMES.items()},
    **{code + 10: {"bg": name} for code, name in _FG_NAMES.items()},
}
_SGR_FLAGS = (
    ("bold", "1"),
    ("dim", "2"),
    ("italics", "3"),
    ("underscore", "4"),
    ("blink", "5"),
    ("reverse", "7"),
    ("conceal", "8"),
    ("strikethrough", "9"),
)


def is_wide(cell: Cell) -> bool:
    return bool(cell.data) and not cell.data.isascii() and wcwidth(cell.data[0]) == 2


def _int(text: str) -> int:
    """A CSI parameter: empty or malformed is 0, values are capped like pyte's (9999)."""
    return min(int(text), 9999) if text.isdigit() else 0


def _colour(values: list[str]) -> str | None:
    """``5;N`` or ``2;R;G;B`` (after the 38/48), in this module's lossless colour form."""
    if not values:
        return None
    if values[0] == "5" and len(values) >= 2:
        return str(min(_int(values[1]), 255))
    if values[0] == "2" and len(values) >= 4:
        r, g, b = (min(_int(v), 255) for v in values[-3:])
        return f"#{r:02x}{g:02x}{b:02x}"
    return None


def _colour_sgr(colour: str, base: int, names: dict[str, int]) -> str | None:
    if colour == "default":
        return None
    if colour in names:
        return str(names[colour])
    if colour.startswith("#") and len(colour) == 7:
        return f"{base};2;{int(colour[1:3], 16)};{int(colour[3:5], 16)};{int(colour[5:7], 16)}"
    if colour.isdigit():
        return f"{base};5;{colour}"
    if len(colour) == 6:  # pyte's own "rrggbb" form, should one ever get in
        try:
            return f"{base};2;{int(colour[0:2], 16)};{int(colour[2:4], 16)};{int(colour[4:6], 16)}"
        except ValueError:
            return None
    return None


_sgr_cache: dict[tuple[Any, ...], bytes] = {}


def sgr(cell: Cell) -> bytes:
    """The SGR that sets exactly ``cell``'s attributes, from a reset (``0;...``)."""
    key = cell[1:]
    found = _sgr_cache.get(key)
    if found is None:
        parts = ["0"]
        parts.extend(code for field, code in _SGR_FLAGS if getattr(cell, field))
        fg = _colour_sgr(cell.fg, 38, _FG_CODES)
        bg = _colour_sgr(cell.bg, 48, _BG_CODES)
        parts.extend(p for p in (fg, bg) if p)
        found = ("\x1b[" + ";".join(parts) + "m").encode()
        if len(_sgr_cache) < 4096:
            _sgr_cache[key] = found
    return found


def apply_sgr(pen: Cell, params: str) -> Cell:
    """The pen after ``CSI params m``: ``;`` and ``:`` forms of 256-colour and truecolor,
    underline styles (``4:3``) as underline, underline colour (58) ignored."""
    if not params or params == "0":
        return BLANK
    replace: dict[str, Any] = {}
    groups = params.split(";")
    i, n = 0, len(groups)
    while i < n:
        group = groups[i]
        i += 1
        if ":" in group:
            sub = group.split(":")
            code = _int(sub[0])
            if code in (38, 48, 58):
                colour = _colour(sub[1:])
                if colour is not None and code != 58:
                    replace["fg" if code == 38 else "bg"] = colour
                continue
            if code == 4:
                replace["underscore"] = _int(sub[1]) != 0
                continue
        else:
            code = _int(group)
        if code in (38, 48, 58):
            kind = groups[i] if i < n else ""
            take = 2 if kind == "5" else 4 if kind == "2" else 1
            colour = _colour(groups[i : i + take])
            i += take
            if colour is not None and code != 58:
                replace["fg" if code == 38 else "bg"] = colour
            continue
        simple = _SGR_SIMPLE.get(code)
        if simple is not None:
            replace.update(simple)
    return pen._replace(**replace) if replace else pen
