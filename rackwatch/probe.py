"""`rackwatch probe`: poll one device once and print what the agent would send.

With `--output line-protocol`, stdout carries only line-protocol lines and `#` comments,
so an external check can feed it straight to InfluxDB; diagnostics go to stderr.
"""

from __future__ import annotations

import argparse
import os
import sys

from agent.config import Device
from agent.registry import builtin_profiles
from agent.snmp import DeviceError, SnmpDevice, SnmpTarget
from rackwatch.probe_output import print_samples


async def probe(args: argparse.Namespace) -> int:
    try:
        host, port = Device(name="probe", address=args.address).host_port()
    except ValueError as exc:
        print(f"rackwatch probe: {exc}", file=sys.stderr)
        return 2
    profile = None
    if args.profile:
        profile = builtin_profiles().get(args.profile)
        if profile is None:
            print(
                f"rackwatch probe: unknown profile {args.profile!r}; known: "
                f"{', '.join(sorted(builtin_profiles()))}",
                file=sys.stderr,
            )
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
    device = SnmpDevice(args.address, target, {"device": args.address}, profile)
    try:
        samples = await device.collect()
    except DeviceError as exc:
        print(f"rackwatch probe: {exc}", file=sys.stderr)
        return 1
    identity = device.identity
    assert identity is not None  # collect() identifies first
    header = (
        f"# {args.address}: profile {identity.profile.name}, vendor "
        f"{identity.profile.vendor}, model {identity.model or '?'}, "
        f"sysObjectID {identity.sys_object_id}, {len(samples)} samples"
    )
    print(header)
    print_samples(samples, args.output)
    return 0
