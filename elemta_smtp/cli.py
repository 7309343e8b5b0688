"""The ``elemta`` command: argument parsing only; each subcommand calls one function."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from elemta_smtp import __version__
from elemta_smtp.config import Config, ConfigError, config_path, dev_config, load_config

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 78  # EX_CONFIG from sysexits.h: systemd shows it as "CONFIG"


def build_parser() -> argparse.ArgumentParser:
    """The command line, with help text for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="elemta",
        description="A hardened SMTP server that looks after its own TLS certificates.",
    )
    parser.add_argument("--version", action="version", version=f"elemta {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument("-c", "--config", metavar="PATH",
                       help="elemta.toml (default: $ELEMTA_CONFIG, else /etc/elemta/elemta.toml)")

    serve = commands.add_parser("serve", help="run the SMTP server in the foreground")
    with_config(serve)
    serve.add_argument("--dev", action="store_true",
                       help="ignore config files and run the embedded default: 127.0.0.1:2525 "
                            "(STARTTLS), 127.0.0.1:4465 (implicit TLS), a self-signed "
                            "certificate, mail for @localhost and @example.com")
    serve.add_argument("--data-dir", metavar="DIR", default="elemta-data",
                       help="with --dev: where mail, certificates and the pid file go "
                            "(default: ./elemta-data)")

    config = commands.add_parser("config", help="work with elemta.toml")
    config_cmds = config.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = config_cmds.add_parser("check", help="validate elemta.toml; exit non-zero on problems")
    with_config(check)

    cert = commands.add_parser("cert", help="inspect, renew and diagnose certificates")
    cert_cmds = cert.add_subparsers(dest="action", metavar="ACTION", required=True)
    info = cert_cmds.add_parser("info", help="show every certificate the daemon would serve")
    with_config(info)
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    renew = cert_cmds.add_parser("renew", help="force a renewal now and have the daemon serve it")
    with_config(renew)
    renew.add_argument("--if-due", action="store_true",
                       help="renew only when certbot says it is due (what the packaged timer "
                            "runs); without it the renewal is forced")
    test = cert_cmds.add_parser("test", help="diagnose DNS, HTTP-01 and the ACME directory")
    with_config(test)
    test.add_argument("--dry-run", action="store_true",
                      help="also run a full test issuance with certbot --dry-run")
    return parser


def _load(path_arg: str | None, err: TextIO, serving: bool = False) -> Config | None:
    path = config_path(path_arg)
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=err)
        outcome = "; elemta did not start" if serving else ""
        print(f"{len(exc.problems)} problem(s) in {path}{outcome}.", file=err)
        return None


def main(argv: list[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Run the ``elemta`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        from elemta_smtp.run import serve

        if args.dev:
            if args.config:
                print("error: --dev runs the embedded default; do not combine it with -c",
                      file=err)
                return EXIT_CONFIG
            return serve(dev_config(Path(args.data_dir).absolute()), out, err)
        loaded = _load(args.config, err, serving=True)
        return EXIT_CONFIG if loaded is None else serve(loaded, out, err)

    loaded = _load(args.config, err)
    if loaded is None:
        return EXIT_CONFIG
    if args.command == "config":
        return config_check(loaded, out)
    if args.action == "info":
        from elemta_smtp.tls.info import cert_info_main

        return cert_info_main(loaded, args.json, out)
    if args.action == "renew":
        from elemta_smtp.acme.commands import cert_renew_main

        return cert_renew_main(loaded, out, if_due=args.if_due)
    from elemta_smtp.acme.diagnose import cert_test_main

    return cert_test_main(loaded, args.dry_run, out)


def config_check(config: Config, out: TextIO) -> int:
    """``elemta config check``: the config loaded; print notes on its effects and a summary."""
    from elemta_smtp.acme.renewal import config_warnings

    for note in config_warnings(config):
        print(f"note: {note}", file=out)
    print(f"{config.path}: OK", file=out)
    return EXIT_OK
