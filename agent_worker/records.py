"""JSON forms of the attrs records superv keeps on disk (spec, snapshot, registry entry)."""

from __future__ import annotations

from typing import Any, Self

import attrs


class JsonRecord:
    """``to_json``/``from_json`` for an attrs class; unknown keys are ignored on load, so a
    file written by a newer superv still loads."""

    __slots__ = ()

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)  # type: ignore[arg-type]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        fields = {f.name for f in attrs.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in fields})
