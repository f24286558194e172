"""The `rackwatch` command: agent, collector, check, probe, demo."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from telemetry.config import ConfigError

if TYPE_CHECKING:
    from collector.service import Collector
    from rackwatch.daemon import C, Service

log = logging.getLogger("rackwatch")
T = TypeVar("T")
PROFILES_DIR_HELP = "the site's own profiles (docs/devices.md); overrides the config's profiles_dir"


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop where it is installed, else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


async def until_signalled(service: Service[C], load: Callable[[], C]) -> int:
    """Run until SIGTERM/SIGINT; SIGHUP reloads `load()`; systemd is notified throughout."""
    from rackwatch.daemon import serve

    return await serve(service, load)


def cmd_agent(args: argparse.Namespace) -> int:
    from rackwatch.daemon import hold_sigterm

    hold_sigterm()  # before the config and profiles are read
    from agent.config import AgentConfig
    from agent.service import Agent
    from agent.workers import ONLY, WorkerSpecError, for_worker, parse_worker
    from rackwatch.loader import load_agent

    config = load_agent(args.config, profiles_dir=args.profiles_dir)
    configured = config.agent.workers
    try:
        if args.worker is None and configured > 1:
            raise WorkerSpecError(
                f"{args.config}: agent.workers is {configured}: start each worker with "
                f"--worker 0 .. --worker {configured - 1} (rackwatch-agent-worker@.service)"
            )
        worker = parse_worker(args.worker, configured) if args.worker is not None else ONLY
    except WorkerSpecError as exc:
        print(f"rackwatch agent: {exc}", file=sys.stderr)
        return 2

    def load() -> AgentConfig:
        return for_worker(load_agent(args.config, profiles_dir=args.profiles_dir), worker)

    return run_async(until_signalled(Agent(for_worker(config, worker), worker), load))


def cmd_collector(args: argparse.Namespace) -> int:
    from rackwatch.daemon import hold_sigterm

    if not args.leave_group:
        hold_sigterm()  # before the config is read
    from collector.service import Collector
    from rackwatch.loader import load_collector

    collector = Collector(load_collector(args.config))
    if args.leave_group:
        return run_async(_leave_group(collector))
    return run_async(until_signalled(collector, lambda: load_collector(args.config)))


async def _leave_group(collector: Collector) -> int:
    from collector.service import LeaveError

    try:
        await collector.leave_group()
    except LeaveError as exc:
        log.error("cannot leave the group yet: %s", exc)
        return 1
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from rackwatch import loader

    failed = False
    for path in args.config:
        try:
            kind = loader.check(
                path, skip_secrets=args.skip_secrets, profiles_dir=args.profiles_dir
            )
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            failed = True
        else:
            print(f"{path}: ok ({kind}{'; secrets not read' if args.skip_secrets else ''})")
            if kind == "agent config":
                _print_workers(path, args)
    return 1 if failed else 0


def _print_workers(path: Path, args: argparse.Namespace) -> None:
    """Devices per worker of an agent split into several processes."""
    from agent.workers import device_counts
    from rackwatch.loader import load_agent

    config = load_agent(path, skip_secrets=True, profiles_dir=args.profiles_dir)
    if config.agent.workers > 1:
        counts = device_counts((d.name for d in config.devices), config.agent.workers)
        print(
            f"{path}: {len(config.devices)} devices over {len(counts)} workers: "
            + ", ".join(f"worker {i}: {n}" for i, n in enumerate(counts))
        )


def cmd_probe(args: argparse.Namespace) -> int:
    if args.nvml:
        from rackwatch.probe_nvml import probe_nvml

        return run_async(probe_nvml(args))
    if not args.address:
        print("rackwatch probe: give a device address, or --nvml", file=sys.stderr)
        return 2
    from rackwatch.probe import probe

    return run_async(probe(args))


def cmd_demo(args: argparse.Namespace) -> int:
    from rackwatch.demo import demo

    return demo(duration_s=args.duration, shared=args.shared)


def cmd_silence(args: argparse.Namespace) -> int:
    from collector.alerting import silences

    return silences.command(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rackwatch", description=__doc__)
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    parser.add_argument(
        "--log-format",
        choices=["plain", "json"],
        help="plain text or one JSON object per line (default: $RACKWATCH_LOG_FORMAT or plain)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    agent = commands.add_parser("agent", help="poll devices and ship samples over MQTT")
    agent.add_argument("-c", "--config", type=Path, required=True)
    agent.add_argument("--profiles-dir", type=Path, help=PROFILES_DIR_HELP)
    agent.add_argument(
        "--worker",
        metavar="INDEX[/COUNT]",
        help="be worker INDEX of the config's agent.workers: poll only the devices that hash to "
        "it (docs/operations.md, 'Several agents per host')",
    )
    agent.set_defaults(func=cmd_agent)

    collector = commands.add_parser("collector", help="take samples from MQTT into InfluxDB")
    collector.add_argument("-c", "--config", type=Path, required=True)
    collector.add_argument(
        "--leave-group",
        action="store_true",
        help="take over what the broker queued for this collector, write it, end its session "
        "and exit (before removing a collector from a share group for good)",
    )
    collector.set_defaults(func=cmd_collector)

    check = commands.add_parser(
        "check",
        help="validate config files, and the files they name, as the service would load them",
    )
    check.add_argument("-c", "--config", type=Path, required=True, action="append")
    check.add_argument(
        "--skip-secrets",
        action="store_true",
        help="check {env: ...}, {file: ...} and {credential: ...} secrets by form only, "
        "without reading them (their values are not at hand)",
    )
    check.add_argument("--profiles-dir", type=Path, help=PROFILES_DIR_HELP)
    check.set_defaults(func=cmd_check)

    probe = commands.add_parser("probe", help="poll one device once and print its samples")
    probe.add_argument("address", nargs="?", help="HOST, HOST:PORT or [V6]:PORT")
    probe.add_argument(
        "--nvml", action="store_true", help="read this host's NVIDIA GPUs instead (NVML)"
    )
    probe.add_argument("--community", default="public")
    probe.add_argument("--snmp-version", choices=["1", "2c", "3"], default="2c")
    probe.add_argument("--user", default="", help="SNMPv3 user")
    probe.add_argument(
        "--auth-protocol", choices=["md5", "sha", "sha224", "sha256", "sha384", "sha512"]
    )
    probe.add_argument("--priv-protocol", choices=["des", "aes", "aes192", "aes256"])
    # Passwords come from the environment, not argv, which every local user can read in ps.
    probe.epilog = (
        "SNMPv3 passwords are read from RACKWATCH_SNMP_AUTH_PASSWORD and "
        "RACKWATCH_SNMP_PRIV_PASSWORD."
    )
    probe.add_argument(
        "--profile", help="profile name or file (default: detect by sysObjectID, then fallbacks)"
    )
    probe.add_argument("--profiles-dir", type=Path, help=PROFILES_DIR_HELP)
    probe.add_argument("--timeout", type=float, default=2.0, help="seconds per request")
    probe.add_argument("--retries", type=int, default=1)
    probe.add_argument("--output", choices=["line-protocol", "table"], default="line-protocol")
    probe.set_defaults(func=cmd_probe)

    demo = commands.add_parser("demo", help="run a live demo on this machine")
    demo.add_argument(
        "--duration",
        type=float,
        default=None,
        help="run N seconds without interaction, then verify and exit",
    )
    demo.add_argument(
        "--shared",
        type=Path,
        default=None,
        help="the shared/ folder with devices/snmprec, or its devices/ folder "
        "(default: $RACKWATCH_SHARED, else ../shared)",
    )
    demo.set_defaults(func=cmd_demo)

    silence = commands.add_parser("silence", help="add, list or expire alert silences")
    from collector.alerting.silences import add_arguments

    add_arguments(silence)
    silence.set_defaults(func=cmd_silence)

    retention = commands.add_parser(
        "retention",
        help="create or update the history's retention policies and continuous queries "
        "(InfluxDB 1.x; the collector also does it at start)",
    )
    retention.add_argument("-c", "--config", type=Path, required=True, help="collector.yaml")
    retention.add_argument(
        "--backfill",
        metavar="DURATION",
        default=None,
        help="also aggregate the raw data of this last while (e.g. 7d) into the 5-minute policy",
    )
    retention.set_defaults(func=cmd_retention)

    mibs = commands.add_parser("mibs", help="compile MIB modules into trap names for the agent")
    mibs_commands = mibs.add_subparsers(dest="mibs_command", required=True)
    mibs_compile = mibs_commands.add_parser(
        "compile", help="write the traps (NOTIFICATION-TYPE, TRAP-TYPE) of MIB modules to a file"
    )
    mibs_compile.add_argument("dirs", nargs="+", metavar="DIR", help="folders of MIB modules")
    mibs_compile.add_argument(
        "--deps",
        action="append",
        default=[],
        metavar="DIR",
        help="a folder of the modules they import (SNMPv2-SMI, ...; e.g. /usr/share/snmp/mibs),"
        " read but not written out",
    )
    mibs_compile.add_argument(
        "-o", "--output", required=True, help="the file to write: JSON if it ends .json, else YAML"
    )
    mibs_compile.set_defaults(func=cmd_mibs_compile)
    return parser


def cmd_mibs_compile(args: argparse.Namespace) -> int:
    """Trap names for `traps.names_file` in the agent's config (needs pysmi)."""
    from rackwatch.mibs import compile_command

    return compile_command(args.dirs, args.output, args.deps)


def cmd_retention(args: argparse.Namespace) -> int:
    """Set up the collector config's history (retention policies, continuous queries) now."""
    from collector.retention import RetentionError, apply
    from rackwatch.loader import load_collector

    config = load_collector(args.config)
    try:
        for line in run_async(apply(config, args.backfill)):
            print(line)
    except RetentionError as exc:
        print(f"rackwatch retention: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from telemetry import logs

    try:
        log_format = args.log_format or logs.default_format()
    except ValueError as exc:
        print(f"rackwatch: {exc}", file=sys.stderr)
        return 2
    logs.configure(args.log_level, log_format)
    try:
        result: int = args.func(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
