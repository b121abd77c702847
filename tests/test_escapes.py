"""The one reader of terminal escape sequences (agent_worker.escapes)."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from agent_worker.escapes import (
    CSI,
    OSC,
    Control,
    Escape,
    StringSequence,
    Text,
    Token,
    Tokenizer,
)

PIECES = st.sampled_from([
    "\x1b", "[", "]", "P", "_", "^", "X", "?", ">", "1", "0", ";", ":", " ", "!", "(", "#",
    "m", "h", "l", "H", "J", "c", "q", "\\", "\x07", "\x18", "\x1a", "\r", "\n", "\t",
    "a", "text", "é", "漢", "\x9b", "\x7f",
])
STREAMS = st.lists(PIECES, max_size=60).map("".join)


def tokens(chunks: list[str], **options: bool) -> list[Token]:
    """Every token of ``chunks`` fed one after another, adjacent text runs joined."""
    tokenizer = Tokenizer(**options)
    out: list[Token] = []
    for chunk in chunks:
        for token in tokenizer.feed(chunk):
            if type(token) is Text and out and type(out[-1]) is Text:
                out[-1] = Text(out[-1].text + token.text)
            else:
                out.append(token)
    return out


def test_each_kind_of_token() -> None:
    stream = (
        "ab\r\n\x1b[?1049h\x1b[38:2::1:2:3m\x1b[ q\x1b]0;title\x07\x1b]8;;u\x1b\\"
        "\x1bP1$r\x07x\x1b\\\x1b_kitty\x1b\\\x1b(0\x1b7\x1bc"
    )
    assert tokens([stream]) == [
        Text("ab"), Control("\r"), Control("\n"),
        CSI("?1049", "", "h"), CSI("38:2::1:2:3", "", "m"), CSI("", " ", "q"),
        OSC("0;title", "\x07"), OSC("8;;u", "\x1b\\"),
        StringSequence("P", "1$r\x07x"), StringSequence("_", "kitty"),
        Escape("(", "0"), Escape("", "7"), Escape("", "c"),
    ]
    sequences = tokens([stream], text=False, controls=False)
    assert sequences == [t for t in tokens([stream]) if type(t) not in (Text, Control)]
    assert tokens([stream], text=False) == [Control("\r"), Control("\n"), *sequences]
    assert tokens(["a\x07b\x1b]0;t\x07"], text=False) == [Control("\x07"), OSC("0;t", "\x07")]
    assert CSI("?1049;25", "", "h").values() == [1049, 25]
    assert CSI("?1049", "", "h").prefix == "?" and CSI("1;2", "", "H").prefix == ""


def test_the_vt500_recoveries() -> None:
    assert tokens(["\x1b[1\r2H"]) == [Control("\r"), CSI("12", "", "H")]  # C0 inside a CSI
    assert tokens(["\x1b[12\x18x"]) == [Text("x")]  # CAN aborts
    assert tokens(["\x1b[1\x1b[2J"]) == [CSI("2", "", "J")]  # ESC starts afresh
    assert tokens(["\x1b[1 1m", "z"]) == [Text("z")]  # parameter after intermediate: dropped
    assert tokens(["\x1b]0;ab\x1b[5m"]) == [CSI("5", "", "m")]  # ESC abandons the string
    assert tokens(["\x1bPq\x1a!"]) == [Text("!")]  # SUB aborts the string


@settings(max_examples=300, deadline=None)
@given(STREAMS, st.data())
def test_any_chunking_gives_the_same_tokens(stream: str, data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    for options in ({}, {"text": False}, {"controls": False}, {"text": False, "controls": False}):
        assert tokens(chunks, **options) == tokens([stream], **options), (chunks, options)


@settings(max_examples=300, deadline=None)
@given(STREAMS, STREAMS)
def test_an_esc_resynchronises(before: str, after: str) -> None:
    """The sequences read from an ESC on are the last sequences of the whole stream."""
    after = "\x1b" + after
    if after.startswith("\x1b\\"):
        return  # ST: it ends what came before
    tail = tokens([after], text=False, controls=False)
    whole = tokens([before + after], text=False, controls=False)
    assert whole[len(whole) - len(tail) :] == tail


def test_unfinished_strings_use_bounded_memory() -> None:
    tokenizer = Tokenizer(max_pending=1000)
    assert list(tokenizer.feed("\x1bPq" + "#0;2" * 1000)) == []
    assert not tokenizer.idle and tokenizer.unfinished == "\x1bP"  # skipped, not kept
    assert list(tokenizer.feed("#1" * 10**5)) == [] and tokenizer.unfinished == "\x1bP"
    assert list(tokenizer.feed("\x1b\\after")) == [Text("after")]
    assert tokenizer.idle
    assert list(tokenizer.feed("\x1b]0;" + "t" * 500)) == []
    assert tokenizer.unfinished == "\x1b]0;" + "t" * 500  # short enough: kept whole
    assert list(tokenizer.feed("\x07")) == [OSC("0;" + "t" * 500, "\x07")]


MODES = re.compile(r"\x1b(?:\[\?|[=>c])")
OSCS = re.compile(r"\x1b\]")


def wanted(token: Token) -> bool:
    """What MODES and OSCS pick out of a stream, told from the tokens of all of it."""
    if type(token) is CSI:
        return token.params.startswith("?")
    if type(token) is Escape:
        return token in (("", "="), ("", ">"), ("", "c"))
    return type(token) is OSC


@settings(max_examples=500, deadline=None)
@given(STREAMS, st.data())
def test_feed_at_reads_what_feed_reads_there(stream: str, data: st.DataObject) -> None:
    # A control between a CSI's [ and its ? makes a mode change MODES does not look for.
    cut = re.compile(r"\x1b\[[\x00-\x17\x19\x1c-\x1f]+\?")
    while cut.search(stream):
        stream = cut.sub("", stream)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    modes, oscs = Tokenizer(text=False, controls=False), Tokenizer(text=False, controls=False)
    got = []
    for chunk in chunks:
        got += list(modes.feed_at(chunk, MODES, 3))
        got += list(oscs.feed_at(chunk, OSCS, 2))
    expected = [t for t in tokens([stream], text=False, controls=False) if wanted(t)]
    assert sorted(got) == sorted(expected), chunks


def test_feed_at_finds_titles_and_bells() -> None:
    signals = Tokenizer(text=False)
    wanted = re.compile(r"\x1b\]|\x07")
    chunks = ["ding\x07 \x1b]0;work", "ing\x07 \x1b[1mx\x1b]9;done\x1b", "\\ \x1bPq\x1b\\"]
    got = [t for chunk in chunks for t in signals.feed_at(chunk, wanted, 2)]
    assert got == [Control("\x07"), OSC("0;working", "\x07"), OSC("9;done", "\x1b\\")]
