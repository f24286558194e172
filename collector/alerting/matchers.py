"""Label matchers as Alertmanager writes them: `name="value"`, `name!="value"`, `name=~"re"`,
`name!~"re"`.

A missing label reads as the empty string (so `rack!="A01"` matches an alert without a rack),
and regular expressions are anchored at both ends, as in Prometheus and Alertmanager.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import PlainSerializer, PlainValidator

_MATCHER = re.compile(r'^\s*([^\s=!~"]+)\s*(=~|!~|!=|=)\s*(.*?)\s*$')


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    op: str
    value: str
    regex: re.Pattern[str] | None = None

    @classmethod
    def parse(cls, text: str) -> Matcher:
        match = _MATCHER.match(text)
        if not match:
            raise ValueError(
                f'{text!r} is not a matcher; write name="value", name!="value", '
                'name=~"regex" or name!~"regex"'
            )
        name, op, raw = match.groups()
        value = _unquote(raw)
        regex = None
        if op in ("=~", "!~"):
            try:
                regex = re.compile(value)
            except re.error as exc:
                raise ValueError(f"{text!r}: bad regular expression: {exc}") from None
        return cls(name, op, value, regex)

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        assert self.regex is not None
        found = self.regex.fullmatch(actual) is not None
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        return f"{self.name}{self.op}{json.dumps(self.value, ensure_ascii=False)}"


def _unquote(raw: str) -> str:
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        try:
            value = json.loads(raw)
        except ValueError:
            raise ValueError(f'{raw}: bad quoting (escape " and \\ with a backslash)') from None
        if isinstance(value, str):
            return value
    return raw


def matches_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)


def _to_matcher(value: Any) -> Matcher:
    if isinstance(value, Matcher):
        return value
    if not isinstance(value, str):
        raise ValueError('a matcher is a string such as rack="A01" or device=~"pdu-.*"')
    return Matcher.parse(value)


MatcherField = Annotated[Matcher, PlainValidator(_to_matcher), PlainSerializer(str)]
"""A matcher in a config: written as a string, validated into a Matcher."""
