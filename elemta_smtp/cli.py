"""The ``elemta`` command: argument parsing only; each subcommand calls one function."""

from __future__ import annotations

import argparse
import gc
import os
import sys
from pathlib import Path
from typing import TextIO

from elemta_smtp import __version__
from elemta_smtp.config import Config, ConfigError, config_path, dev_config, load_config
from elemta_smtp.errors import ElemtaError
from elemta_smtp.schema import dns_server

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 78  # EX_CONFIG from sysexits.h: systemd shows it as "CONFIG"
#: read-only reports: run as the process itself they skip garbage collection and teardown
_REPORTS = {("config", "check"), ("cert", "info"), ("dane", "status")}


def _resolver_arg(text: str) -> str:
    """--resolver: the "IP:port" of a DNS server, checked before anything runs."""
    try:
        return dns_server(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter, sized like it (COLUMNS, else the terminal, else 80) without
    importing shutil (and with it bz2, lzma, threading) for every argument added."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position, width or _columns())


def _columns() -> int:
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return 80


def build_parser() -> argparse.ArgumentParser:
    """The command line, with a one-line help and a description for every subcommand
    and action, so ``elemta X --help`` says what X does."""
    parser = argparse.ArgumentParser(
        prog="elemta",
        description="A hardened SMTP server that looks after its own TLS certificates.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"elemta {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def sub(group: argparse._SubParsersAction[argparse.ArgumentParser], name: str, summary: str,
            description: str, config: bool = True) -> argparse.ArgumentParser:
        p = group.add_parser(name, help=summary, formatter_class=_Formatter,
                             description=f"{summary[0].upper()}{summary[1:]}. {description}")
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
    renew = sub(cert_cmds, "renew", "force a renewal now and have the daemon serve it",
                "Runs certbot renew for the certificate's lineage, in the certbot folders it "
                "was installed from, and checks that the running daemon serves the new serial.")
    renew.add_argument("--if-due", action="store_true",
                       help="renew only when certbot says it is due (what the packaged timer "
                            "runs); without it the renewal is forced")
    test = sub(cert_cmds, "test", "diagnose DNS, HTTP-01 and the ACME directory",
               "Each step prints ok, FAIL with what to fix, or skip; exit 1 when one fails.")
    test.add_argument("--dry-run", action="store_true",
                      help="also run a full test issuance with certbot --dry-run")

    dns = sub(commands, "dns", "the DNS records this configuration needs",
              "See `elemta dns ACTION --help`.", config=False)
    dns_cmds = dns.add_subparsers(dest="action", metavar="ACTION", required=True)
    records = sub(dns_cmds, "records", "print the DNS records to publish, or check them",
                  "MX, addresses, MTA-STS and TLS-reporting TXT, and TLSA records, as zone-file "
                  "lines with fully qualified names; with --check each is looked up and marked "
                  "present, MISSING or DIFFERENT (exit 1 unless all are present).")
    records.add_argument("--check", action="store_true",
                         help="look each record up in DNS and compare")
    records.add_argument("--resolver", metavar="HOST:PORT", type=_resolver_arg,
                         help="with --check: ask this DNS server (default: the system's resolvers)")

    dane = sub(commands, "dane", "DANE (TLSA) records of the served keys and staged key rollovers",
               "See `elemta dane ACTION --help`.", config=False)
    dane_cmds = dane.add_subparsers(dest="action", metavar="ACTION", required=True)
    resolver_help = ("ask this DNS server (default: [tls.dane] resolver, else the system's "
                     "resolvers)")
    status = sub(dane_cmds, "status", "show the TLSA records of the current and next keys",
                 "One TLSA 3 1 1 record per MX name for the key served and, during a staged "
                 "rollover, for the next key; with --check each is looked up and marked present "
                 "or MISSING (exit 1 unless all are present).")
    status.add_argument("--check", action="store_true", help="look each record up in DNS")
    status.add_argument("--resolver", metavar="HOST:PORT", type=_resolver_arg, help=resolver_help)
    rollover = sub(dane_cmds, "rollover", "change keys without a moment of unpublished key",
                   "See `elemta dane rollover ACTION --help`.", config=False)
    rollover_cmds = rollover.add_subparsers(dest="step", metavar="ACTION", required=True)
    sub(rollover_cmds, "start", "make the next key and print its TLSA record to publish",
        "The next key is kept in the cache (0600); its record is to be added next to the current "
        "one (both stay published until the rollover is finished); the running daemon mails it.")
    finish = sub(rollover_cmds, "finish", "renew with the next key once DNS publishes it",
                 "Refused (exit 1) while DNS does not publish the next key's record; then renews "
                 "the certificate with the next key at once and prints the record that can be "
                 "removed.")
    finish.add_argument("--force", action="store_true",
                        help="do not look the next key's record up in DNS first")
    finish.add_argument("--resolver", metavar="HOST:PORT", type=_resolver_arg, help=resolver_help)
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
    if argv is None and (args.command, getattr(args, "action", None)) in _REPORTS:
        gc.disable()  # a short-lived report: collecting garbage while importing is wasted (~4 ms)
    if args.command == "serve":
        from elemta_smtp.commands.serve import serve

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
        from elemta_smtp.commands.config_check import config_check

        return _report_done(config_check(loaded, out), own_process=argv is None)
    if args.command == "dane":
        try:
            return _dane(args, loaded, out, own_process=argv is None)
        except ElemtaError as exc:  # the cache: unreadable, not writable, a broken file
            print(f"error: {exc}", file=err)
            return 1
    if args.command == "dns":
        from elemta_smtp.commands.dns_records import dns_records_main

        try:
            return dns_records_main(loaded, out, check_dns=args.check, resolver=args.resolver)
        except ElemtaError as exc:  # the cache: a broken next-key file of a rollover
            print(f"error: {exc}", file=err)
            return 1
    if args.action == "info":
        from elemta_smtp.commands.cert_info import cert_info_main

        return _report_done(cert_info_main(loaded, args.json, out),
                            own_process=argv is None)
    if args.action == "renew":
        from elemta_smtp.commands.cert_renew import cert_renew_main

        return cert_renew_main(loaded, out, if_due=args.if_due)
    from elemta_smtp.commands.cert_test import cert_test_main

    return cert_test_main(loaded, args.dry_run, out)


def _dane(args: argparse.Namespace, loaded: Config, out: TextIO, own_process: bool) -> int:
    from elemta_smtp.commands import dane as dane_commands

    if args.action == "status":
        return _report_done(dane_commands.dane_status_main(loaded, out, check=args.check,
                                                           resolver=args.resolver),
                            own_process=own_process)
    if args.step == "start":
        return dane_commands.rollover_start_main(loaded, out)
    return dane_commands.rollover_finish_main(loaded, out, force=args.force,
                                              resolver=args.resolver)


def _report_done(status: int, own_process: bool) -> int:
    """After a read-only report run as the process itself (``argv`` from the command line,
    see ``_REPORTS``): flush the output and exit at once. The interpreter's teardown, freeing
    every module imported (~10 ms, more than the report takes), does nothing a report
    needs: it holds no files open for writing, no locks, no atexit work. Called as a
    function (tests), return."""
    if not own_process:
        return status
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # a closed pipe (`elemta cert info | head -1`): nothing more to say
        pass
    os._exit(status)
