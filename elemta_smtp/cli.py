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
    """The command line, with a one-line help and a description for every subcommand
    and action, so ``elemta X --help`` says what X does."""
    parser = argparse.ArgumentParser(
        prog="elemta",
        description="A hardened SMTP server that looks after its own TLS certificates.",
    )
    parser.add_argument("--version", action="version", version=f"elemta {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def sub(group: argparse._SubParsersAction[argparse.ArgumentParser], name: str, summary: str,
            description: str, config: bool = True) -> argparse.ArgumentParser:
        p = group.add_parser(name, help=summary, description=f"{summary[0].upper()}{summary[1:]}. "
                                                                f"{description}")
        if config:
            p.add_argument("-c", "--config", metavar="PATH",
                           help="elemta.toml (default: $ELEMTA_CONFIG, else /etc/elemta/elemta.toml)")
        return p

    serve = sub(commands, "serve", "run the SMTP server in the foreground",
                "Binds every listener, writes the pid file, logs one line per event to "
                "standard output; SIGHUP re-reads the certificates, SIGTERM stops gracefully.")
    serve.add_argument("--dev", action="store_true",
                       help="ignore config files and run the embedded default: 127.0.0.1:2525 "
                            "(STARTTLS), 127.0.0.1:4465 (implicit TLS), a self-signed "
                            "certificate, mail for @localhost and @example.com")
    serve.add_argument("--data-dir", metavar="DIR", default="elemta-data",
                       help="with --dev: where mail, certificates and the pid file go "
                            "(default: ./elemta-data)")

    config = sub(commands, "config", "work with elemta.toml",
                 "See `elemta config ACTION --help`.", config=False)
    config_cmds = config.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub(config_cmds, "check", "validate elemta.toml; exit non-zero on problems",
        "Prints every problem with its line (exit 78), or PATH: OK and notes (exit 0).")

    cert = sub(commands, "cert", "inspect, renew and diagnose certificates",
               "See `elemta cert ACTION --help`.", config=False)
    cert_cmds = cert.add_subparsers(dest="action", metavar="ACTION", required=True)
    info = sub(cert_cmds, "info", "show every certificate the daemon would serve",
               "Reads the certificate files only (and asks the running daemon which serial it "
               "serves); exit 1 when a file is rejected or nothing is usable.")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    sub(cert_cmds, "renew", "force a renewal now and have the daemon serve it",
        "Runs certbot renew for [tls.letsencrypt] domain and checks that the running daemon "
        "serves the new serial.")
    test = sub(cert_cmds, "test", "diagnose DNS, HTTP-01 and the ACME directory",
               "Each step prints ok, FAIL with what to fix, or skip; exit 1 when one fails.")
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

        return cert_renew_main(loaded, out)
    from elemta_smtp.acme.diagnose import cert_test_main

    return cert_test_main(loaded, args.dry_run, out)


def config_check(config: Config, out: TextIO) -> int:
    """``elemta config check``: the config loaded; print notes on its effects and a summary."""
    from elemta_smtp.acme.renewal import config_warnings

    for note in config_warnings(config):
        print(f"note: {note}", file=out)
    print(f"{config.path}: OK", file=out)
    return EXIT_OK
