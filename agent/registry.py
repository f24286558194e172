"""Profile discovery: which profiles an agent knows, and which one a device gets.

Profiles are the built-in ones (agent/profiles) and a site's own (the agent config's
`profiles_dir`, or `--profiles-dir`); a site profile with a built-in's name replaces it, for
detection and for every profile that includes it. In either place, `*.yaml` are profiles and
`fragments/<name>.yaml` are fragments (tables and scalars without detect, included by name);
a site fragment replaces a built-in one of the same name too.

A device gets the profile with the longest sysObjectID prefix that matches, else one whose
sysDescr substring matches. When neither does, the fallbacks are tried in order (the caller
asks the device, see `fallbacks`): vendor families whose enterprise subtree holds the
sysObjectID (longest first), then profiles found by a vendor's own subtree whatever the
sysObjectID (a net-snmp based card), then generic profiles of standard MIBs (UPS-MIB before
sensor MIBs).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from agent.profile import Fragment, Profile, Readings, read
from agent.profile_schema import schema_problems
from telemetry import config
from telemetry.config import KeyPath

_log = logging.getLogger(__name__)

BUILTIN_DIR = Path(__file__).parent / "profiles"
# Generic fallbacks of these kinds describe a whole device; sensor MIBs come last.
_GENERIC_ORDER = ("ups", "pdu", "cooling", "dc_power", "env_sensor")
_PRIVATE = "1.3.6.1.4.1."  # enterprises: a vendor's own objects, unlike standard MIBs


@dataclass(frozen=True)
class Registry:
    """The profiles and fragments one agent knows, by name, and the file each was read from."""

    profiles: Mapping[str, Profile]
    files: Mapping[str, Path]
    fragments: Mapping[str, Fragment] = field(default_factory=dict)

    def get(self, name: str) -> Profile | None:
        return self.profiles.get(name)

    def includable(self, name: str) -> Readings | None:
        """What `include: [name]` names: a fragment, else a profile."""
        return self.fragments.get(name) or self.profiles.get(name)

    def with_includes(self, profile: Readings) -> list[Readings]:
        """The profile followed by what it includes, and what that includes (each once)."""
        chain = [profile]
        for part in chain:  # grows while it is walked: includes of includes
            for name in part.include:
                included = self.includable(name)
                if included is None:
                    raise KeyError(f"include of unknown {name!r}")  # refused at load
                if all(included is not known for known in chain):
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
        vendor: list[tuple[int, str, Profile]] = []
        generic: list[tuple[int, str, Profile]] = []
        for profile in self.profiles.values():
            found = profile.detect
            if not found.answers:
                continue
            if found.enterprise:
                matched = [len(prefix) for prefix in found.enterprise if oid.startswith(prefix)]
                if matched:
                    family.append((-max(matched), profile.name, profile))
            elif all(f"{subtree}.".startswith(_PRIVATE) for subtree in found.answers):
                # Answering a vendor's own subtree says more than answering a standard MIB.
                vendor.append((0, profile.name, profile))
            else:
                generic.append((_GENERIC_ORDER.index(profile.kind), profile.name, profile))
        return [profile for *_, profile in sorted(family) + sorted(vendor) + sorted(generic)]


def _yaml_files(directory: Path) -> Iterator[Path]:
    yield from sorted(directory.glob("*.yaml"))
    yield from sorted(directory.glob("fragments/*.yaml"))


def _read_dir(directory: Path, *, builtin: bool = False) -> Registry:
    """A directory's profiles and fragments; ConfigError lists every problem. A built-in whose
    fields depart from the schema is kept with a warning: tests/test_schema.py fails for it,
    and refusing the whole built-in directory would stop every device the agent polls."""
    if not directory.is_dir():
        raise config.ConfigError(f"{directory}: profile directory does not exist")
    profiles: dict[str, Profile] = {}
    fragments: dict[str, Fragment] = {}
    files: dict[str, Path] = {}
    problems: list[str] = []
    for path in sorted(directory.glob("*.yaml")):
        try:
            profile, off_schema = read(path, Profile)
        except config.ConfigError as exc:
            problems.append(str(exc))
            continue
        if _refused(off_schema, builtin, problems):
            continue
        if profile.name in profiles:
            problems.append(
                f"{path}:1: name: profile name {profile.name!r} is also used by "
                f"{files[profile.name]}"
            )
            continue
        profiles[profile.name] = profile
        files[profile.name] = path
    for path in sorted(directory.glob("fragments/*.yaml")):
        try:
            fragment, off_schema = read(path, Fragment)
        except config.ConfigError as exc:
            problems.append(str(exc))
            continue
        if _refused(off_schema, builtin, problems):
            continue
        fragments[path.stem] = fragment
        files.setdefault(path.stem, path)
    if problems:
        raise config.ConfigError("\n".join(problems))
    return Registry(profiles, files, fragments)


def _refused(off_schema: list[str], builtin: bool, problems: list[str]) -> bool:
    """Whether a file whose fields depart from the schema is left out (a site's), else warn."""
    if off_schema and builtin:
        _log.warning("built-in profile off the schema (kept):\n%s", "\n".join(off_schema))
    elif off_schema:
        problems += off_schema
    return bool(off_schema) and not builtin


def _check_includes(registry: Registry) -> None:
    parts: dict[str, Readings] = {**registry.profiles, **registry.fragments}
    problems = [
        f"{registry.files[owner]}: include: no profile or fragment named {name!r}"
        for owner, part in parts.items()
        for name in part.include
        if registry.includable(name) is None
    ]
    if problems:
        raise config.ConfigError("\n".join(problems))


@cache
def _builtin() -> Registry:
    registry = _read_dir(BUILTIN_DIR, builtin=True)
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
    site = _read_dir(directory)
    # Site profiles first: among equally long sysObjectID prefixes, the site's wins.
    profiles = {**site.profiles}
    profiles.update((n, p) for n, p in builtin.profiles.items() if n not in site.profiles)
    registry = Registry(
        profiles, {**builtin.files, **site.files}, {**builtin.fragments, **site.fragments}
    )
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


def with_includes(profile: Readings) -> list[Readings]:
    """The profile followed by the built-in fragments and profiles it includes (each once)."""
    return _builtin().with_includes(profile)


def detect(sys_object_id: str, sys_descr: str) -> Profile | None:
    """The built-in profile a device gets by its sysObjectID or sysDescr (no fallbacks)."""
    return _builtin().detect(sys_object_id, sys_descr)


def is_profile(data: object) -> bool:
    """Whether parsed YAML is a device profile or fragment rather than a config: it has
    `detect`, or only what a fragment has."""
    if not isinstance(data, dict) or not data:
        return False
    return "detect" in data or set(data) <= set(Fragment.model_fields)


def check_profile(
    data: Any, source: str, lines: Mapping[KeyPath, int], profiles_dir: Path | None
) -> str:
    """Validate one profile or fragment file (`rackwatch check`): its own content, and that
    what it includes is known to the built-ins or the site directory; what it is."""
    model: type[Readings] = Profile if "detect" in data else Fragment
    part = config.validate(data, model, source, lines)
    off_schema = [f"{config.position(source, lines, k)}: {m}" for k, m in schema_problems(part)]
    if off_schema:
        raise config.ConfigError("\n".join(off_schema))
    registry = load_registry(profiles_dir)
    unknown = [name for name in part.include if registry.includable(name) is None]
    if unknown:
        line = lines.get(("include",), 1)
        known = sorted({*registry.profiles, *registry.fragments})
        raise config.ConfigError(
            f"{source}:{line}: include: no profile or fragment named {unknown[0]!r}; "
            f"known: {', '.join(known)}"
        )
    return "device profile" if model is Profile else "profile fragment"
