"""``elemta cert test [--dry-run]``: diagnose, step by step, what certificate issuance
needs (acme/diagnose.py has the steps: HTTP-01, or TLS-ALPN-01 on port 443 with
``challenge = "tls-alpn-01"`` or MTA-STS); exit 0 only when nothing failed."""

from __future__ import annotations

from typing import TextIO

from elemta_smtp.acme.blocking import run_blocking
from elemta_smtp.acme.diagnose import (
    Report,
    Resolver,
    check_directory,
    check_http01,
    check_tlsalpn01,
    is_local_address,
    resolve,
)
from elemta_smtp.acme.runner import certonly_command
from elemta_smtp.cache.lineages import wrong_user
from elemta_smtp.config import Config

EXIT_OK = 0
EXIT_FAILURE = 1


def cert_test_main(config: Config, dry_run: bool, out: TextIO,
                   resolver: Resolver = resolve) -> int:
    """``elemta cert test``: diagnose step by step; exit 0 only when nothing failed."""
    report = Report(out)
    le = config.tls.letsencrypt
    report.ok(f"config {config.path or '(embedded)'} is valid")
    if not le.enabled:
        report.warn("[tls.letsencrypt] enabled = false: elemta will not obtain certificates "
                    "by itself")
    try:
        addresses = resolver(le.domain)
    except (OSError, UnicodeError) as exc:
        addresses = []
        report.fail(f"DNS: {le.domain} does not resolve: {exc}",
                    f"create an A (and/or AAAA) record for {le.domain} pointing at this server")
    if addresses:
        report.ok(f"DNS: {le.domain} resolves to {', '.join(addresses)}")
        local = [a for a in addresses if is_local_address(a)]
        if len(local) == len(addresses):
            report.ok(f"DNS: {', '.join(local)} {'is' if len(local) == 1 else 'are'} "
                      "this host's")
        elif local:
            others = [a for a in addresses if a not in local]
            report.warn(f"DNS: {', '.join(others)} {'is' if len(others) == 1 else 'are'} not "
                        "this host's: the CA may pick any of the addresses, so every one must "
                        "reach this server")
        else:
            report.warn(f"DNS: none of {', '.join(addresses)} is an address of this host: fine "
                        "behind NAT with port forwarding, otherwise fix the DNS record")
    if le.challenge == "tls-alpn-01":
        check_tlsalpn01(config, addresses, report)
    else:
        check_http01(config, addresses, report)
        if config.mta_sts.enabled:  # senders fetch the policy on port 443
            check_tlsalpn01(config, addresses, report)
    check_directory(le.acme_directory, report)
    refusal = wrong_user(le.cache_dir, f"elemta cert test --dry-run -c {config.path or 'PATH'}")
    if dry_run and refusal:
        report.fail("certbot --dry-run: not run as root", refusal.removeprefix("error: "))
    elif dry_run:
        if report.failed:
            report.skip("certbot --dry-run: fix the failures above first")
        else:
            try:
                argv = certonly_command(config, dry_run=True)
            except ValueError as exc:
                report.fail(f"certbot --dry-run: {exc}", "pass -c PATH")
            else:
                done = run_blocking(argv, config.tls.renewal.renewal_timeout)
                if done.ok:
                    report.ok("certbot --dry-run: a test certificate was issued (nothing saved)")
                else:
                    report.fail(f"certbot --dry-run failed: {done.reason}",
                                "read the reason above and certbot's log in "
                                f"{le.cache_dir / 'certbot' / 'logs'}")
    if report.failed:
        print(f"{report.failed} check(s) failed.", file=out)
        return EXIT_FAILURE
    print("all checks passed.", file=out)
    return EXIT_OK
