"""Strict YAML config loading: every error names `file:line: key.path: problem`.

Configs are parsed with PyYAML (safe loader, on libyaml where it is built in) and validated
by pydantic models that forbid unknown keys. YAML positions are kept beside the data so
pydantic's error locations can be turned back into line numbers. Secrets (passwords, tokens,
SNMP communities) may be written inline or as `{env: NAME}`, `{file: /path}` or
`{credential: NAME}`; the last reads systemd's `$CREDENTIALS_DIRECTORY/NAME` (LoadCredential=).
Validated with `skip_secrets`, a secret's reference is checked but not read
(`rackwatch check --skip-secrets`, where the values are not at hand).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationError,
    ValidationInfo,
)

KeyPath = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


class ConfigError(Exception):
    """A config file that cannot be used; the message lists every problem found."""


class StrictModel(BaseModel):
    """Base for config models: unknown keys are errors, values are immutable after load."""

    model_config = ConfigDict(extra="forbid", frozen=True)


SKIP_SECRETS_HINT = "or check without reading secrets: rackwatch check --skip-secrets"


def _context(info: ValidationInfo) -> Mapping[str, Any]:
    return info.context if isinstance(info.context, Mapping) else {}


def _resolve_secret(value: Any, info: ValidationInfo) -> Any:
    if not isinstance(value, Mapping):
        return value
    if len(value) != 1:
        raise ValueError(
            "a secret is a string or exactly one of {env: NAME}, {file: PATH}, {credential: NAME}"
        )
    ((kind, ref),) = value.items()
    if kind not in ("env", "file", "credential"):
        raise ValueError(f"unknown secret source {kind!r}; use env, file or credential")
    if not isinstance(ref, str) or not ref:
        raise ValueError(f"{{{kind}: ...}} needs a name or path")
    if _context(info).get("skip_secrets"):
        # Long enough for every length rule (SNMPv3 passwords), obviously not a real value.
        return f"<secret {kind} {ref} not read>"
    if kind == "env":
        if ref not in os.environ:
            raise ValueError(f"environment variable {ref!r} is not set ({SKIP_SECRETS_HINT})")
        return os.environ[ref]
    if kind == "credential":
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise ValueError(
                f"credential {ref!r}: CREDENTIALS_DIRECTORY is not set "
                f"(use LoadCredential= in the unit, {SKIP_SECRETS_HINT})"
            )
        return _read_secret_file(Path(directory) / ref)
    return _read_secret_file(Path(ref))


def _read_secret_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ValueError(f"cannot read secret file {path}: {exc.strerror}") from None


Secret = Annotated[str, BeforeValidator(_resolve_secret)]
"""A string that may come from the environment, a file or a systemd credential."""


def _index_lines(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int], source: str) -> None:
    """Record the 1-based line of every key and list item; refuse duplicate keys."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                raise ConfigError(
                    f"{source}:{key_node.start_mark.line + 1}: {_dotted((*path, key))}: "
                    "duplicate key"
                )
            seen.add(key)
            lines[(*path, key)] = key_node.start_mark.line + 1
            _index_lines(value_node, (*path, key), lines, source)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*path, i)] = item.start_mark.line + 1
            _index_lines(item, (*path, i), lines, source)


def _dotted(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


# libyaml's parser is ~15x faster than PyYAML's pure-Python one; agent start-up parses every
# profile, so it matters. Both resolve and construct values the same (safe) way.
_Loader = yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader


def parse_yaml(text: str, source: str) -> tuple[Any, dict[KeyPath, int]]:
    """Parse YAML text; return the data and a map from key path to line number."""
    # One parse: the node tree gives both the line numbers and the data.
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        lines: dict[KeyPath, int] = {}
        if node is None:
            return None, lines
        _index_lines(node, (), lines, source)
        return loader.construct_document(node), lines
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = f"{mark.line + 1}" if mark else "?"
        raise ConfigError(f"{source}:{line}: YAML syntax: {exc.problem}") from None
    finally:
        loader.dispose()


def validate(
    data: Any,
    model: type[M],
    source: str,
    lines: Mapping[KeyPath, int],
    *,
    skip_secrets: bool = False,
) -> M:
    """Validate parsed data against a model; errors carry `source:line: key: problem`.

    After type validation, a model may report cross-field problems (a reference to an
    undefined name, a duplicate device) through a `problems()` method returning
    `(key path, message)` pairs, so those get line numbers too.
    """
    context = {"skip_secrets": skip_secrets}
    try:
        config = model.model_validate(data if data is not None else {}, context=context)
    except ValidationError as exc:
        found = []
        for error in exc.errors(include_url=False):
            loc = tuple(part for part in error["loc"] if isinstance(part, str | int))
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "unknown key"
            found.append((loc, message))
    else:
        check = getattr(config, "problems", None)
        found = check() if check else []
        if not found:
            return config
    raise ConfigError(
        "\n".join(
            f"{source}:{_nearest_line(loc, lines)}: {_dotted(loc)}: {message}"
            for loc, message in found
        )
    )


def _nearest_line(loc: KeyPath, lines: Mapping[KeyPath, int]) -> int:
    for end in range(len(loc), 0, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return 1


def position(source: str, lines: Mapping[KeyPath, int], key: KeyPath) -> str:
    """`source:line: key` for a message about `key`."""
    return f"{source}:{_nearest_line(key, lines)}: {_dotted(key)}"


def read(path: Path) -> str:
    """A config file's text; ConfigError naming the file (and line) if it cannot be used."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); save it as UTF-8"
        ) from None


def parse_file(path: Path) -> tuple[Any, dict[KeyPath, int]]:
    """Read and parse a YAML config file; a file with nothing in it is an error, not defaults."""
    data, lines = parse_yaml(read(path), str(path))
    if data is None:
        raise ConfigError(f"{path}:1: (top level): the file is empty (only comments or nothing)")
    return data, lines


def load(path: Path | str, model: type[M], *, skip_secrets: bool = False) -> M:
    """Read, parse and validate a YAML config file."""
    path = Path(path)
    data, lines = parse_file(path)
    return validate(data, model, str(path), lines, skip_secrets=skip_secrets)
