"""Start-up work that grows with the profile count stays one C-speed parse per file.

Agent start-up and every `rackwatch probe` read all built-in profiles; with PyYAML's
pure-Python parser run twice per file that took ~1.7 s of CPU for 96 profiles, long enough for a
SIGTERM to find the agent half-started. Counted here rather than timed
(docs/benchmarks.md#profile-registry-start-up has the CPU times).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
import yaml.scanner

from agent import registry
from telemetry import config
from telemetry.config import KeyPath


def test_builtin_profiles_are_parsed_once_each_by_libyaml(monkeypatch: pytest.MonkeyPatch) -> None:
    assert yaml.__with_libyaml__, "PyYAML without libyaml: install its binary wheel"
    python_tokens = 0
    parsed: Counter[str] = Counter()
    check_token = yaml.scanner.Scanner.check_token
    parse_yaml = config.parse_yaml

    def counting_check_token(self: yaml.scanner.Scanner, *choices: Any) -> bool:
        nonlocal python_tokens
        python_tokens += 1
        return check_token(self, *choices)

    def counting_parse_yaml(text: str, source: str) -> tuple[Any, dict[KeyPath, int]]:
        parsed[source] += 1
        return parse_yaml(text, source)

    monkeypatch.setattr(yaml.scanner.Scanner, "check_token", counting_check_token)
    monkeypatch.setattr(config, "parse_yaml", counting_parse_yaml)
    found = registry._read_dir(registry.BUILTIN_DIR)  # not the cached copy: read it now
    files = [*registry.BUILTIN_DIR.glob("*.yaml"), *registry.BUILTIN_DIR.glob("fragments/*.yaml")]
    assert len(found.profiles) + len(found.fragments) == len(files)
    assert set(parsed.values()) == {1}  # no file twice (the schema may be read, once)
    read = {source for source in parsed if Path(source).is_relative_to(registry.BUILTIN_DIR)}
    assert read == {str(path) for path in files}
    assert python_tokens == 0  # the pure-Python scanner was not used


def test_the_registry_is_read_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    registry.load_registry()  # whatever the test order, read by now
    parsed: list[str] = []
    parse_yaml = config.parse_yaml

    def counting_parse_yaml(text: str, source: str) -> tuple[Any, dict[KeyPath, int]]:
        parsed.append(source)
        return parse_yaml(text, source)

    monkeypatch.setattr(config, "parse_yaml", counting_parse_yaml)
    assert registry.load_registry() is registry.load_registry()
    registry.builtin_profiles()
    registry.detect("1.3.6.1.4.1.318.1.3.4.5", "")
    assert parsed == []
