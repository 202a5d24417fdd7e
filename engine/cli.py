"""The ``radbridge`` command: validate, run, messages, send."""

from __future__ import annotations

import argparse
import logging
import sys
from importlib.metadata import entry_points
from pathlib import Path

from engine.config.errors import ConfigError

#: Entry point group of further subcommands: ``register(subparsers)`` adds parsers whose
#: ``func(args) -> int`` runs the command (the engine never imports those packages by name).
COMMANDS_GROUP = "radbridge.commands"


def load_config(path: str, *, check_ports: bool = True):
    """Validate *path*; print errors (and warnings) to stderr; ``None`` when invalid."""
    from engine.config.validate import validate_config

    try:
        vc = validate_config(path, check_ports=check_ports)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return None
    for warning in vc.warnings:
        print(warning.format(), file=sys.stderr)
    return vc


def cmd_validate(args: argparse.Namespace) -> int:
    """Check a config completely; print every error with file:line:col."""
    vc = load_config(args.config, check_ports=not args.no_port_check)
    if vc is None:
        return 1
    print(f"{args.config}: OK ({len(vc.channels)} channels)")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Validate exactly as ``validate`` does, then run every channel until SIGTERM/SIGINT."""
    vc = load_config(args.config)
    if vc is None:
        return 1
    from engine.reactor import install

    try:
        install()
    except Exception:  # noqa: BLE001 - a reactor is already installed (embedding): use it
        pass
    from twisted.internet import reactor

    from engine.app import App
    from engine.logs import setup_logging

    setup_logging(vc.root.logging.level, vc.root.logging.format)
    log = logging.getLogger("radbridge")
    outcome = {"code": 0}
    try:
        app = App(vc, reactor)
    except Exception as exc:  # noqa: BLE001 - a component that cannot be built: one line, not a traceback
        log.error("radbridge could not start: %s", exc)
        log.debug("build failure", exc_info=True)
        return 1

    def start() -> None:
        d = app.start()

        def ready(_: object) -> None:
            log.info("radbridge ready: %d channels, store %s", len(app.services), app.store.dialect)

        def failed(f) -> None:
            log.error("radbridge could not start: %s", f.getErrorMessage())
            outcome["code"] = 1
            reactor.stop()

        d.addCallbacks(ready, failed)

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", app.stop)
    reactor.run()
    return outcome["code"]


def cmd_send(args: argparse.Namespace) -> int:
    """Send the messages in FILEs over MLLP and print each ACK."""
    from engine.hl7.ack import parse_ack
    from engine.hl7.batch import split_messages
    from engine.hl7.mllp import BlockingMLLPClient

    failures = 0
    with BlockingMLLPClient(args.host, args.port, timeout=args.timeout) as client:
        for name in args.files:
            data = sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
            for payload in split_messages(data):
                ack = client.send(payload).decode(args.charset, errors="replace")
                try:
                    code = parse_ack(ack)[0]
                except ValueError:
                    code = "??"
                failures += code not in ("AA", "CA")
                msa = next((seg for seg in ack.split("\r") if seg.startswith("MSA")), ack)
                print(ack.replace("\r", "\n") if args.verbose else msa)
    return 1 if failures else 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    from engine import cli_messages, cli_replay
    from engine.testing import cli as testing_cli

    p = argparse.ArgumentParser(prog="radbridge", description="HL7 v2 / DICOM integration engine")
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate", help="check a config file; errors as file:line:col: path: message")
    v.add_argument("config")
    v.add_argument("--no-port-check", action="store_true", help="do not test whether listen ports are free")
    v.set_defaults(func=cmd_validate)
    r = sub.add_parser("run", help="validate, then run the engine")
    r.add_argument("config")
    r.set_defaults(func=cmd_run)
    s = sub.add_parser("send", help="send HL7 files over MLLP and print the ACKs")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--timeout", type=float, default=30.0)
    s.add_argument("--charset", default="utf-8", help="codec used to print ACKs")
    s.add_argument("-v", "--verbose", action="store_true", help="print whole ACKs, one segment per line")
    s.add_argument("files", nargs="+", metavar="FILE", help="files of HL7 messages ('-' for stdin)")
    s.set_defaults(func=cmd_send)
    cli_messages.add_parser(sub)
    testing_cli.add_parser(sub)
    cli_replay.add_parser(sub)
    for ep in entry_points(group=COMMANDS_GROUP):
        ep.load()(sub)  # other packages' subcommands, e.g. ``radbridge archive verify``
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``radbridge`` command."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
