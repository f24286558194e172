"""A service's config loaded whole: the file and every file it names, as the service reads them.

`rackwatch agent`/`collector` start and reload (SIGHUP) through here, and `rackwatch check`
runs the same code, so a config that checks clean is one the service can start with: a
missing or broken alert rules file or rack inventory is found by `check`, and refuses a
reload before anything is applied. Every problem reads `file:line: key: problem`; one in a
named file carries that file's own position.

A relative path to a file the config names (`alerting.rules_file`, `rollup.inventory`) is
taken from the config file's folder, as Prometheus does with its rule files, so a config and
its rules move together. State paths (spools, state files) stay relative to the working
directory: the StateDirectory under systemd.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from agent.config import AgentConfig, TrapNamesFile
from agent.registry import check_profile, is_profile
from collector.alerting.rules import RuleFile
from collector.alerting.silences import SilenceFile
from collector.config import CollectorConfig
from collector.inventory import Inventory
from telemetry import config
from telemetry.config import ConfigError, KeyPath

# What a file is, by its top-level keys: (a key it has, model, what `check` calls it); a
# file with none of them is a collector config.
KINDS: tuple[tuple[str, type[BaseModel], str], ...] = (
    ("agent", AgentConfig, "agent config"),
    ("rules", RuleFile, "alert rules"),
    ("racks", Inventory, "rack inventory"),
)
M = TypeVar("M", bound=BaseModel)


def load_agent(
    path: Path, *, skip_secrets: bool = False, profiles_dir: Path | None = None
) -> AgentConfig:
    """`profiles_dir` (`--profiles-dir`) replaces the config's own key."""
    return _load(path, AgentConfig, skip_secrets, profiles_dir)


def load_collector(path: Path, *, skip_secrets: bool = False) -> CollectorConfig:
    return _load(path, CollectorConfig, skip_secrets)


def check(path: Path, *, skip_secrets: bool = False, profiles_dir: Path | None = None) -> str:
    """Load `path` as what its top-level keys say it is; what it is (for the report)."""
    data, lines = config.parse_file(path)
    if is_profile(data):
        return check_profile(data, str(path), lines, profiles_dir)
    model: type[BaseModel] = CollectorConfig
    kind = "collector config"
    if isinstance(data, Mapping):
        model, kind = next(((m, k) for key, m, k in KINDS if key in data), (model, kind))
    _load(path, model, skip_secrets, profiles_dir)
    return kind


def _load(path: Path, model: type[M], skip_secrets: bool, profiles_dir: Path | None = None) -> M:
    data, lines = config.parse_file(path)
    if model is AgentConfig and isinstance(data, dict):
        # The site's profile folder is relative to the config's folder, like the files a
        # config names; --profiles-dir (relative to the working directory) replaces it.
        if profiles_dir is not None:
            data["profiles_dir"] = str(profiles_dir.absolute())
        elif isinstance(data.get("profiles_dir"), str):
            data["profiles_dir"] = str(path.parent / data["profiles_dir"])
    loaded = config.validate(data, model, str(path), lines, skip_secrets=skip_secrets)
    for key, named, _ in named_files(loaded):
        if not named.is_absolute():
            loaded = _replaced(loaded, key, path.parent / named)
    problems = []
    for key, named, named_model in named_files(loaded):
        try:
            config.read(named)
        except ConfigError as exc:
            problems.append(f"{config.position(str(path), lines, key)}: {exc}")
            continue
        try:
            config.load(named, named_model, skip_secrets=skip_secrets)
        except ConfigError as exc:
            problems.append(str(exc))
    silences = _silences_file(loaded)
    if silences is not None:
        try:  # a missing file holds no silences; one that is there must be readable
            SilenceFile(silences).read()
        except ValueError as exc:
            key = ("alerting", "silences_file")
            problems.append(f"{config.position(str(path), lines, key)}: {exc}")
    if problems:
        raise ConfigError("\n".join(problems))
    return loaded


def _replaced(model: M, key: KeyPath, value: object) -> M:
    """A copy of frozen `model` with the value at `key` (a path of attribute names) replaced."""
    name = str(key[0])
    inner = value if len(key) == 1 else _replaced(getattr(model, name), key[1:], value)
    return model.model_copy(update={name: inner})


def _silences_file(loaded: BaseModel) -> Path | None:
    if isinstance(loaded, CollectorConfig) and loaded.alerting is not None:
        return loaded.alerting.silences_file
    return None


def named_files(loaded: Any) -> list[tuple[KeyPath, Path, type[BaseModel]]]:
    """The files a config names that its service reads at start: (key, path, model)."""
    found: list[tuple[KeyPath, Path, type[BaseModel]]] = []
    if isinstance(loaded, CollectorConfig):
        if loaded.alerting is not None:
            found.append((("alerting", "rules_file"), loaded.alerting.rules_file, RuleFile))
        if loaded.rollup is not None:
            found.append((("rollup", "inventory"), loaded.rollup.inventory, Inventory))
    if isinstance(loaded, AgentConfig) and loaded.traps and loaded.traps.names_file:
        found.append((("traps", "names_file"), loaded.traps.names_file, TrapNamesFile))
    return found
