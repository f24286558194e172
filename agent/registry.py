"""Profile discovery: which profiles an agent knows, and which one a device gets.

Profiles are the built-in ones (agent/profiles) and a site's own (the agent config's
`profiles_dir`, or `--profiles-dir`); a site profile with a built-in's name replaces it, for
detection and for every profile that includes it. In either place, `*.yaml` and
`fragments/*.yaml` are read.

A device gets the profile with the longest sysObjectID prefix that matches, else one whose
sysDescr substring matches. When neither does, the fallbacks are tried in order (the caller
asks the device, see `fallbacks`): vendor families whose enterprise subtree holds the
sysObjectID (longest first), then generic profiles of standard MIBs (UPS-MIB before sensor MIBs).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from agent.profile import Profile, load_profile
from telemetry import config
from telemetry.config import KeyPath

BUILTIN_DIR = Path(__file__).parent / "profiles"
# Generic fallbacks of these kinds describe a whole device; sensor MIBs come last.
_GENERIC_ORDER = ("ups", "pdu", "cooling", "env_sensor")


@dataclass(frozen=True)
class Registry:
    """The profiles one agent knows, by name, and the file each was read from."""

    profiles: Mapping[str, Profile]
    files: Mapping[str, Path]

    def get(self, name: str) -> Profile | None:
        return self.profiles.get(name)

    def with_includes(self, profile: Profile) -> list[Profile]:
        """The profile followed by the profiles it includes (each once)."""
        chain = [profile]
        for name in profile.include:
            included = self.profiles[name]
            if included not in chain:
                chain.append(included)
        return chain

    def detect(self, sys_object_id: str, sys_descr: str) -> Profile | None:
        """The profile with the longest matching sysObjectID prefix, else a sysDescr match."""
        oid = sys_object_id.strip(".") + "."
        best: tuple[int, Profile] | None = None
        for profile in self.profiles.values():
            for prefix in profile.detect.sys_object_id:
                if oid.startswith(prefix) and (best is None or len(prefix) > best[0]):
                    best = (len(prefix), profile)
        if best:
            return best[1]
        for profile in self.profiles.values():
            if any(text in sys_descr for text in profile.detect.sys_descr):
                return profile
        return None

    def fallbacks(self, sys_object_id: str) -> list[Profile]:
        """Profiles to try, in order, for a device `detect` found nothing for: the first whose
        `detect.answers` the device has objects under is the device's profile."""
        oid = sys_object_id.strip(".") + "."
        family: list[tuple[int, str, Profile]] = []
        generic: list[tuple[int, str, Profile]] = []
        for profile in self.profiles.values():
            found = profile.detect
            if not found.answers:
                continue
            if not found.enterprise:
                generic.append((_GENERIC_ORDER.index(profile.kind), profile.name, profile))
                continue
            matched = [len(prefix) for prefix in found.enterprise if oid.startswith(prefix)]
            if matched:
                family.append((-max(matched), profile.name, profile))
        return [profile for *_, profile in sorted(family) + sorted(generic)]


def _yaml_files(directory: Path) -> Iterator[Path]:
    yield from sorted(directory.glob("*.yaml"))
    yield from sorted(directory.glob("fragments/*.yaml"))


def _read_dir(directory: Path) -> tuple[dict[str, Profile], dict[str, Path]]:
    if not directory.is_dir():
        raise config.ConfigError(f"{directory}: profile directory does not exist")
    profiles: dict[str, Profile] = {}
    files: dict[str, Path] = {}
    problems: list[str] = []
    for path in _yaml_files(directory):
        try:
            profile = load_profile(path)
        except config.ConfigError as exc:
            problems.append(str(exc))
            continue
        if profile.name in profiles:
            problems.append(
                f"{path}:1: name: profile name {profile.name!r} is also used by "
                f"{files[profile.name]}"
            )
            continue
        profiles[profile.name] = profile
        files[profile.name] = path
    if problems:
        raise config.ConfigError("\n".join(problems))
    return profiles, files


def _check_includes(registry: Registry) -> None:
    problems = [
        f"{registry.files[profile.name]}: include: unknown profile {name!r}"
        for profile in registry.profiles.values()
        for name in profile.include
        if name not in registry.profiles
    ]
    if problems:
        raise config.ConfigError("\n".join(problems))


@cache
def _builtin() -> Registry:
    profiles, files = _read_dir(BUILTIN_DIR)
    registry = Registry(profiles, files)
    _check_includes(registry)
    return registry


def _signature(directory: Path) -> tuple[tuple[str, int, int], ...]:
    """What a directory's profiles are read from: a changed file is read again (on reload)."""
    found = []
    for path in _yaml_files(directory):
        stat = path.stat()
        found.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(found)


@cache
def _with_site(directory: Path, signature: tuple[tuple[str, int, int], ...]) -> Registry:
    del signature  # part of the cache key only
    builtin = _builtin()
    site, site_files = _read_dir(directory)
    # Site profiles first: among equally long sysObjectID prefixes, the site's wins.
    profiles = {**site, **{n: p for n, p in builtin.profiles.items() if n not in site}}
    files = {**builtin.files, **site_files}
    registry = Registry(profiles, files)
    _check_includes(registry)
    return registry


def load_registry(profiles_dir: Path | None = None) -> Registry:
    """The built-in profiles, with a site directory's over them; ConfigError names the file
    and line of every problem (a bad profile, a name used twice, an unknown include)."""
    if profiles_dir is None:
        return _builtin()
    if not profiles_dir.is_dir():
        raise config.ConfigError(f"{profiles_dir}: profile directory does not exist")
    return _with_site(profiles_dir.resolve(), _signature(profiles_dir))


def builtin_profiles() -> dict[str, Profile]:
    """The profiles shipped in agent/profiles, by name."""
    return dict(_builtin().profiles)


def with_includes(profile: Profile) -> list[Profile]:
    """The profile followed by the built-in profiles it includes (each once)."""
    return _builtin().with_includes(profile)


def detect(sys_object_id: str, sys_descr: str) -> Profile | None:
    """The built-in profile a device gets by its sysObjectID or sysDescr (no fallbacks)."""
    return _builtin().detect(sys_object_id, sys_descr)


def is_profile(data: object) -> bool:
    """Whether parsed YAML is a device profile (it has `detect`) rather than a config."""
    return isinstance(data, dict) and "detect" in data


def check_profile(
    data: Any, source: str, lines: Mapping[KeyPath, int], profiles_dir: Path | None
) -> Profile:
    """Validate one profile file (`rackwatch check`): its own content, and that what it
    includes is known to the built-ins or the site directory."""
    profile = config.validate(data, Profile, source, lines)
    registry = load_registry(profiles_dir)
    unknown = [name for name in profile.include if registry.get(name) is None]
    if unknown:
        line = lines.get(("include",), 1)
        raise config.ConfigError(
            f"{source}:{line}: include: unknown profile {unknown[0]!r}; known: "
            f"{', '.join(sorted(registry.profiles))}"
        )
    return profile
