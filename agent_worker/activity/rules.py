"""Screen and title rules per agent kind: data in ``rules.json``, overridable by the user.

The rules that ship are in ``rules.json`` next to this module; a user adds or replaces
rules per kind in ``$XDG_CONFIG_HOME/superv/activity-rules.json`` (same shape), whose rules
are tried first.  A rule is ``{"match": REGEX, "activity": STATE}``, with the attention
line from a ``(?P<attention>...)`` group or a fixed ``"attention"``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import attrs

from agent_worker import json_input
from agent_worker.activity.tracker import STATES

SHIPPED = Path(__file__).with_name("rules.json")
USER_FILE = "activity-rules.json"


class RulesError(ValueError):
    """A rules file that cannot be used; the message names the file and the rule."""


@attrs.frozen
class Rule:
    pattern: re.Pattern[str]
    activity: str
    attention: str | None = None

    def match(self, text: str) -> tuple[str, str | None] | None:
        found = self.pattern.search(text)
        if found is None:
            return None
        attention = found.groupdict().get("attention") or self.attention
        return self.activity, (" ".join(attention.split()) if attention else None)


@attrs.frozen
class KindRules:
    title: tuple[Rule, ...] = ()
    screen: tuple[Rule, ...] = ()

    def for_title(self, title: str) -> tuple[str, str | None] | None:
        return _first(self.title, title)

    def for_screen(self, text: str) -> tuple[str, str | None] | None:
        return _first(self.screen, text)


def _first(rules: tuple[Rule, ...], text: str) -> tuple[str, str | None] | None:
    for rule in rules:
        found = rule.match(text)
        if found is not None:
            return found
    return None


def user_rules_path() -> Path:
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(config) / "superv" / USER_FILE


def _compile(where: str, kind: str, part: str, items: Any) -> tuple[Rule, ...]:
    if not isinstance(items, list):
        raise RulesError(f"{where}: {kind}.{part} is not a list")
    rules = []
    for i, item in enumerate(items):
        try:
            pattern = re.compile(item["match"])
            activity = item["activity"]
        except (KeyError, TypeError, re.error) as exc:
            raise RulesError(f"{where}: {kind}.{part}[{i}]: {exc}") from None
        if not isinstance(activity, str) or activity not in STATES:
            raise RulesError(f"{where}: {kind}.{part}[{i}]: unknown activity {activity!r}")
        attention = item.get("attention")
        if attention is not None and not isinstance(attention, str):
            raise RulesError(f"{where}: {kind}.{part}[{i}]: attention {attention!r} is not a string")
        rules.append(Rule(pattern, activity, attention))
    return tuple(rules)


def _parse(where: str, data: Any) -> dict[str, KindRules]:
    if not isinstance(data, dict):
        raise RulesError(f"{where}: not a JSON object of kinds")
    parsed = {}
    for kind, parts in data.items():
        if kind.startswith("_"):
            continue
        if not isinstance(parts, dict):
            raise RulesError(f"{where}: {kind} is not an object")
        parsed[kind] = KindRules(_compile(where, kind, "title", parts.get("title", [])),
                                 _compile(where, kind, "screen", parts.get("screen", [])))
    return parsed


def load(kind: str, user_file: Path | None = None) -> tuple[KindRules, str | None]:
    """The rules for ``kind``, and a warning if the user's file had to be ignored."""
    shipped = _parse(str(SHIPPED), json.loads(SHIPPED.read_text())).get(kind, KindRules())
    path = user_file or user_rules_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return shipped, None
    except OSError as exc:
        return shipped, f"{path}: {exc.strerror}: using the shipped rules"
    try:
        mine = _parse(str(path), json_input.loads(text)).get(kind, KindRules())
    except (RulesError, ValueError) as exc:
        return shipped, f"{exc}: using the shipped rules"
    return KindRules(mine.title + shipped.title, mine.screen + shipped.screen), None
