"""`gearshift`: serve one service, run the local mesh, talk to it."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from gearshift import __version__
from gearshift.cli.registry import SERVICES, ServiceNotAvailable, load_service


def _serve(argv: Sequence[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: gearshift serve {" + ",".join(SERVICES) + "} [--help] [flags]")
        for entry in SERVICES.values():
            print(f"  {entry.name:<8} {entry.summary}")
        return 0 if argv else 2
    name, rest = argv[0], list(argv[1:])
    try:
        module = load_service(name)
    except ServiceNotAvailable as exc:
        print(f"gearshift serve: {exc}", file=sys.stderr)
        return 2
    from gearshift.runtime.server import (
        EXIT_SERVICE_FAILED,
        run_service,
        setup_process_telemetry,
    )

    parser = argparse.ArgumentParser(
        prog=f"gearshift serve {name}",
        description=f"Run the {name} service. Every flag is also an env var "
        f"({module.Settings.model_config.get('env_prefix', '')}<NAME>).",
    )
    module.Settings.add_arguments(parser)
    args = parser.parse_args(rest)
    try:
        settings = module.Settings.from_args(args)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        print(f"gearshift serve {name}: invalid settings: {exc}", file=sys.stderr)
        return 2

    if getattr(settings, "workers", 1) > 1:
        from gearshift.runtime.workers import run_workers

        return run_workers(name, rest, settings)

    async def build_and_run() -> int:
        # Built inside the running loop: apps open grpc.aio channels, which bind to it,
        # and after tracing is decided, since a channel's interceptors are fixed at birth.
        setup_process_telemetry(settings)
        try:
            app = module.build_app(settings)
        except (ValueError, OSError) as exc:
            print(f"gearshift serve {name}: invalid configuration: {exc}", file=sys.stderr)
            return 2
        return await run_service(app, settings)

    from gearshift.runtime.eventloop import run

    code = run(build_and_run())
    if code == EXIT_SERVICE_FAILED:
        # The service already drained and said why. Exit now: a dead engine's clean-up
        # hooks (vLLM's) took 25 s here, all of it time the service is down for.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gearshift", description=__doc__)
    parser.add_argument("--version", action="version", version=f"gearshift {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("serve", help="run one service (the container entrypoint)", add_help=False)

    from gearshift.cli import bench, chat, models, scorer, sources, up

    up.add_parser(sub)
    chat.add_chat_parser(sub)
    chat.add_route_parser(sub)
    models.add_parser(sub)
    bench.add_parser(sub)
    sources.add_parser(sub)
    scorer.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "serve":
        return _serve(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
