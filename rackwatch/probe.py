"""`rackwatch probe`: poll one device once and print what the agent would send.

With `--output line-protocol`, stdout carries only line-protocol lines and `#` comments,
so an external check can feed it straight to InfluxDB; diagnostics go to stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from agent.config import Device
from agent.profile import Profile, load_profile
from agent.registry import Registry, load_registry
from agent.snmp import DeviceError, SnmpDevice, SnmpTarget
from rackwatch.probe_output import print_samples
from telemetry.config import ConfigError


async def probe(args: argparse.Namespace) -> int:
    try:
        host, port = Device(name="probe", address=args.address).host_port()
    except ValidationError as exc:  # one line, as `rackwatch check` says it
        problem = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
        print(f"rackwatch probe: {problem}", file=sys.stderr)
        return 2
    if args.snmp_version == "3" and not args.user:
        # Without a user a v3 agent drops the request unanswered: say so before trying.
        print(
            "rackwatch probe: --snmp-version 3 needs --user (passwords in "
            "RACKWATCH_SNMP_AUTH_PASSWORD / RACKWATCH_SNMP_PRIV_PASSWORD)",
            file=sys.stderr,
        )
        return 2
    try:
        registry = load_registry(args.profiles_dir)
        profile = _forced_profile(args.profile, registry)
    except ConfigError as exc:
        print(f"rackwatch probe: {exc}", file=sys.stderr)
        return 2
    target = SnmpTarget(
        host,
        port,
        args.community,
        args.snmp_version,
        args.timeout,
        args.retries,
        user=args.user,
        auth_protocol=args.auth_protocol,
        auth_password=os.environ.get("RACKWATCH_SNMP_AUTH_PASSWORD"),
        priv_protocol=args.priv_protocol,
        priv_password=os.environ.get("RACKWATCH_SNMP_PRIV_PASSWORD"),
    )
    device = SnmpDevice(args.address, target, {"device": args.address}, profile, registry)
    try:
        samples = await device.collect()
    except DeviceError as exc:
        print(f"rackwatch probe: {exc}", file=sys.stderr)
        if exc.reason == "no_answer" and args.snmp_version != "3":
            # v1/v2c agents drop a request with a community they do not know, unanswered.
            print(
                "rackwatch probe: hint: a wrong community, or an ACL that does not let this "
                "host in, looks the same as no device at all",
                file=sys.stderr,
            )
        return 1
    identity = device.identity
    assert identity is not None  # collect() identifies first
    header = (
        f"# {args.address}: profile {identity.profile.name}, vendor "
        f"{identity.profile.vendor}, model {identity.model or '?'}, "
        f"sysObjectID {identity.sys_object_id}, {len(samples)} samples "
        f"(profile chosen by {identity.matched_by})"
    )
    print(header)
    if not samples:
        print(
            f"rackwatch probe: profile {identity.profile.name} read nothing from this device "
            f"(sysObjectID {identity.sys_object_id or '(none)'}); is it the right profile?",
            file=sys.stderr,
        )
        return 1
    print_samples(samples, args.output)
    return 0


def _forced_profile(wanted: str | None, registry: Registry) -> Profile | None:
    """`--profile`: a profile file (a path, as a site writes one), or a known profile's name."""
    if not wanted:
        return None
    if wanted.endswith((".yaml", ".yml")) or os.sep in wanted:
        profile = load_profile(Path(wanted))
        unknown = [name for name in profile.include if registry.get(name) is None]
        if unknown:
            raise ConfigError(f"{wanted}: include: unknown profile {unknown[0]!r}")
        return profile
    found = registry.get(wanted)
    if found is None:
        known = ", ".join(sorted(registry.profiles))
        raise ConfigError(f"unknown profile {wanted!r}; known: {known}")
    return found
