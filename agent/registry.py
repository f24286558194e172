"""Profile discovery: which profiles an agent knows, and which one a device gets.

The built-in profiles ship in agent/profiles; detection picks one by the longest matching
sysObjectID prefix, else a sysDescr substring; a profile's includes are polled beside it.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from agent.profile import Profile, load_profile
from telemetry import config


@cache
def builtin_profiles() -> dict[str, Profile]:
    """The profiles shipped in agent/profiles, by name; includes must name shipped profiles."""
    found: dict[str, Profile] = {}
    for entry in sorted(resources.files("agent.profiles").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            with resources.as_file(entry) as path:
                profile = load_profile(path)
            if profile.name in found:
                raise config.ConfigError(f"{path}: profile name {profile.name!r} used twice")
            found[profile.name] = profile
    for profile in found.values():
        for name in profile.include:
            if name not in found:
                raise config.ConfigError(f"profile {profile.name}: includes unknown {name!r}")
    return found


def with_includes(profile: Profile) -> list[Profile]:
    """The profile followed by the profiles it includes (each once)."""
    chain = [profile]
    for name in profile.include:
        included = builtin_profiles()[name]
        if included not in chain:
            chain.append(included)
    return chain


def detect(sys_object_id: str, sys_descr: str) -> Profile | None:
    """Pick a profile by the longest matching sysObjectID prefix, else a sysDescr substring."""
    oid = sys_object_id.strip(".") + "."
    profiles = builtin_profiles().values()
    best: tuple[int, Profile] | None = None
    for profile in profiles:
        for prefix in profile.detect.sys_object_id:
            if oid.startswith(prefix) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), profile)
    if best:
        return best[1]
    for profile in profiles:
        if any(text in sys_descr for text in profile.detect.sys_descr):
            return profile
    return None
