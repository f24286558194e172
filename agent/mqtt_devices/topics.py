"""Topic patterns with named wildcards: `bms/{site}/{room}/crah/{unit}/telemetry`.

A `{name}` level is MQTT's `+` whose value is kept under that name (usually to become a tag);
plain `+` and a final `#` match without keeping anything. The pattern gives the filter to
subscribe with and matches received topics, returning the named values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NAMED = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_TEMPLATE_NAME = re.compile(r"\{([^{}]*)\}")


@dataclass(frozen=True, slots=True)
class TopicPattern:
    pattern: str
    levels: tuple[str | None, ...]  # a literal level, None for `+`, or "{name}" captures
    names: tuple[str, ...]
    multi_level: bool  # ends in `#`

    @classmethod
    def parse(cls, pattern: str) -> TopicPattern:
        """ValueError says what is wrong with the pattern."""
        if not pattern:
            raise ValueError("the topic pattern is empty")
        parts = pattern.split("/")
        multi_level = parts[-1] == "#"
        if multi_level:
            parts = parts[:-1]
        levels: list[str | None] = []
        names: list[str] = []
        for part in parts:
            named = _NAMED.match(part)
            if named:
                name = named.group(1)
                if name in names:
                    raise ValueError(f"{{{name}}} appears twice in {pattern!r}")
                names.append(name)
                levels.append("{" + name + "}")
            elif part == "+":
                levels.append(None)
            elif "#" in part:
                raise ValueError(f"'#' must be the last level on its own in {pattern!r}")
            elif "+" in part or "{" in part or "}" in part:
                raise ValueError(
                    f"level {part!r} of {pattern!r}: a wildcard ('+' or {{name}}) must be a "
                    "whole level"
                )
            else:
                levels.append(part)
        return cls(pattern, tuple(levels), tuple(names), multi_level)

    @property
    def filter(self) -> str:
        """The MQTT subscription filter."""
        parts = ["+" if level is None or level.startswith("{") else level for level in self.levels]
        return "/".join([*parts, "#"] if self.multi_level else parts)

    def match(self, topic: str) -> dict[str, str] | None:
        """The named levels' values if `topic` matches, else None."""
        parts = topic.split("/")
        if len(parts) < len(self.levels) or (
            len(parts) > len(self.levels) and not self.multi_level
        ):
            return None
        found: dict[str, str] = {}
        for level, part in zip(self.levels, parts, strict=False):
            if level is None:
                continue
            if level.startswith("{"):
                found[level[1:-1]] = part
            elif level != part:
                return None
        return found


def template_names(template: str) -> list[str]:
    """The `{name}`s a template refers to."""
    return _TEMPLATE_NAME.findall(template)


def render(template: str, values: dict[str, str]) -> str:
    """Fill a template's `{name}`s (checked at config load, so every name has a value)."""
    return _TEMPLATE_NAME.sub(lambda m: values.get(m.group(1), ""), template)
