"""The `rackwatch` command: agent, collector, check, probe, demo."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from telemetry.config import ConfigError

log = logging.getLogger("rackwatch")


def run_async(main: Coroutine[Any, Any, int]) -> int:
    """Run on uvloop where it is installed, else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


async def until_signalled(service: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await service(stop)
    return 0


def cmd_agent(args: argparse.Namespace) -> int:
    from agent.config import AgentConfig
    from agent.service import Agent
    from telemetry import config

    agent = Agent(config.load(args.config, AgentConfig))
    return run_async(until_signalled(agent.run))


def cmd_collector(args: argparse.Namespace) -> int:
    from collector.config import CollectorConfig
    from collector.service import Collector
    from telemetry import config

    collector = Collector(config.load(args.config, CollectorConfig))
    return run_async(until_signalled(collector.run))


def cmd_check(args: argparse.Namespace) -> int:
    from agent.config import AgentConfig
    from collector.config import CollectorConfig
    from telemetry import config

    failed = False
    for path in args.config:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            print(f"{path}: cannot read: {exc.strerror}", file=sys.stderr)
            failed = True
            continue
        try:
            data, lines = config.parse_yaml(text, str(path))
            is_agent = isinstance(data, dict) and "agent" in data
            model = AgentConfig if is_agent else CollectorConfig
            config.validate(data, model, str(path), lines)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            failed = True
        else:
            print(f"{path}: ok ({'agent' if is_agent else 'collector'} config)")
    return 1 if failed else 0


def cmd_probe(args: argparse.Namespace) -> int:
    from rackwatch.probe import probe

    return run_async(probe(args))


def cmd_demo(args: argparse.Namespace) -> int:
    from rackwatch.demo import demo

    return demo(duration_s=args.duration, shared=args.shared)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rackwatch", description=__doc__)
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    commands = parser.add_subparsers(dest="command", required=True)

    agent = commands.add_parser("agent", help="poll devices and ship samples over MQTT")
    agent.add_argument("-c", "--config", type=Path, required=True)
    agent.set_defaults(func=cmd_agent)

    collector = commands.add_parser("collector", help="take samples from MQTT into InfluxDB")
    collector.add_argument("-c", "--config", type=Path, required=True)
    collector.set_defaults(func=cmd_collector)

    check = commands.add_parser("check", help="validate config files without running")
    check.add_argument("-c", "--config", type=Path, required=True, action="append")
    check.set_defaults(func=cmd_check)

    probe = commands.add_parser("probe", help="poll one device once and print its samples")
    probe.add_argument("address", help="HOST, HOST:PORT or [V6]:PORT")
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
    probe.add_argument("--profile", help="profile name (default: detect by sysObjectID)")
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
        help="the shared/ folder with devices/snmprec (default: ../shared)",
    )
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        result: int = args.func(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
