"""The commands of tools/containers (the Makefile's image, image-base, images, test-containers
and k8s-play targets)."""

from __future__ import annotations

import argparse
import sys

from parley_dev import images

from . import build, engine


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.containers", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    base = commands.add_parser("base", help="the Debian bookworm + Python 3.11 base, with debootstrap")
    base.add_argument("--force", action="store_true", help="rebuild it even when it exists")
    commands.add_parser("app", help="Parley's image from the Dockerfile")
    infra = commands.add_parser("infra", help="the RabbitMQ, Redis, Cassandra and S3 images")
    infra.add_argument("names", nargs="*", choices=[*images.INFRA, []], help="only these")
    with_api = commands.add_parser("with-api", help="run a command with DOCKER_HOST at podman's API")
    with_api.add_argument("argv", nargs=argparse.REMAINDER)
    commands.add_parser("play", help="play the local overlay, probe it, run a turn, tear it down")
    args = parser.parse_args(argv)
    try:
        if args.command == "base":
            build.build_base(force=args.force)
        elif args.command == "app":
            build.build_app()
        elif args.command == "infra":
            build.build_infra(tuple(args.names) or images.INFRA)
        elif args.command == "with-api":
            command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
            if not command:
                parser.error("with-api needs a command after --")
            return engine.run_with_api(command)
        elif args.command == "play":
            from .play import play_local

            return play_local()
    except engine.EngineError as exc:
        print(f"tools.containers {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0
