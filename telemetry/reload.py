"""Splits a reloaded config into what a service applies live and what waits for a restart."""

from __future__ import annotations

from collections.abc import Set
from typing import TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)


def split_changes(
    running: M, new: M, live: Set[str], fixed: Set[str] = frozenset()
) -> tuple[M, list[str]]:
    """The config to run and the changed keys held for a restart.

    Top-level keys outside `live` keep their running values, as do `section.key` entries in
    `fixed` (parts of a live section that are built into running objects). Keys a service
    does not name (any added later) are therefore held, which is always safe.
    """
    held: list[str] = []
    update: dict[str, object] = {}
    for key in type(running).model_fields:
        old, value = getattr(running, key), getattr(new, key)
        if old == value:
            continue
        if key not in live:
            held.append(key)
            update[key] = old
            continue
        inner = {path.partition(".")[2] for path in fixed if path.partition(".")[0] == key}
        if inner and isinstance(old, BaseModel) and isinstance(value, BaseModel):
            kept = [name for name in sorted(inner) if getattr(old, name) != getattr(value, name)]
            held += [f"{key}.{name}" for name in kept]
            update[key] = value.model_copy(update={name: getattr(old, name) for name in kept})
    return new.model_copy(update=update), held
