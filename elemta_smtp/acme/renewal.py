"""Is a renewal due? Pure decisions on plain values, "now" included.

``renewal_days`` comes from ``[tls.renewal]``. Certificates shorter-lived than
90 days exist (45-day and 6-day ones), and a window as long as the lifetime
would make every check renew again: the window is capped at a third of the
certificate's lifetime, and the cap is said out loud (log and config check).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from elemta_smtp.acme.ari import AriDecision
from elemta_smtp.config import LETSENCRYPT_PRODUCTION, LETSENCRYPT_STAGING, Config
from elemta_smtp.units import format_span as format_span  # noqa: PLC0414  (re-exported: manager, notices)

#: The lifetime of the certificates each CA elemta knows issues today, by ACME directory;
#: ``elemta config check`` explains the cap only when it shortens renewal_days for them.
KNOWN_LIFETIMES_DAYS = {
    LETSENCRYPT_PRODUCTION: ("Let's Encrypt", 90),
    LETSENCRYPT_STAGING: ("Let's Encrypt staging", 90),
}


@dataclass(frozen=True)
class CertFacts:
    """What the decisions need to know about the certificate being served."""

    serial: str  # hex, lower case, no separators
    not_before: datetime  # timezone-aware
    not_after: datetime  # timezone-aware
    names: tuple[str, ...]
    is_bootstrap: bool = False  # the self-signed stand-in served before a real one exists
    key_type: str = ""  # "ecdsa" | "rsa" ("" unknown)
    tlsa: str = ""  # the TLSA 3 1 1 value of its key, "3 1 1 <sha256 hex>"
    ari_id: str = ""  # its ACME Renewal Information identifier (ari.cert_id; "" none)

    @property
    def lifetime(self) -> timedelta:
        return self.not_after - self.not_before

    def covers(self, domain: str) -> bool:
        """Whether ``domain`` is one of the certificate's names (a wildcard covers one label)."""
        domain = domain.lower().rstrip(".")
        for name in (n.lower() for n in self.names):
            if name == domain:
                return True
            if name.startswith("*.") and domain.partition(".")[2] == name[2:]:
                return True
        return False


def name_mismatch(cert: CertFacts, wanted: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """How ``cert``'s names differ from the ``wanted`` ones (``[tls.letsencrypt] names``):
    (wanted names it does not cover, names it has that are not wanted); both empty when
    it is the certificate the configuration asks for."""
    missing = tuple(n for n in wanted if not cert.covers(n))
    wanted_set = {n.lower().rstrip(".") for n in wanted}
    extra = tuple(n for n in cert.names if n.lower().rstrip(".") not in wanted_set)
    return missing, extra


def mismatch_sentence(cert: CertFacts, missing: Sequence[str], extra: Sequence[str]) -> str:
    """The words for ``name_mismatch``'s result: which names are missing, which are extra."""
    parts = []
    if missing:
        parts.append(f"it does not cover {', '.join(missing)}")
    if extra:
        parts.append(f"it covers {', '.join(extra)}, no longer in elemta.toml")
    return f"the certificate served (serial {cert.serial}) does not match the configured names: " \
        + " and ".join(parts)


@dataclass(frozen=True)
class RenewalDecision:
    """The answer to "renew now?", with what it was based on."""

    due: bool
    remaining: timedelta  # time left before not_after (negative once expired)
    window: timedelta  # renew when remaining <= window
    capped: bool  # window is a third of the lifetime, not renewal_days

    @property
    def next_due(self) -> timedelta:
        """How long until the certificate enters its renewal window (zero when due)."""
        return max(self.remaining - self.window, timedelta(0))


def renewal_window(renewal_days: int, lifetime: timedelta) -> tuple[timedelta, bool]:
    """The renewal window: ``renewal_days``, capped at a third of ``lifetime``.

    Returns ``(window, capped)``. A non-positive lifetime (a broken certificate)
    yields the configured window uncapped.
    """
    configured = timedelta(days=renewal_days)
    if lifetime <= timedelta(0):
        return configured, False
    third = lifetime / 3
    if configured > third:
        return third, True
    return configured, False


def decide_renewal(cert: CertFacts, now: datetime, renewal_days: int) -> RenewalDecision:
    """Renew when the time left is within the (capped) renewal window."""
    window, capped = renewal_window(renewal_days, cert.lifetime)
    remaining = cert.not_after - now
    return RenewalDecision(due=remaining <= window, remaining=remaining, window=window,
                           capped=capped)


def cap_sentence(renewal_days: int, lifetime: timedelta) -> str | None:
    """The log sentence when the cap applies to a certificate of this lifetime, else None."""
    window, capped = renewal_window(renewal_days, lifetime)
    if not capped:
        return None
    return (f"renewal_days = {renewal_days} is more than a third of this certificate's "
            f"{format_span(lifetime)} lifetime: renewing when {format_span(window)} are left "
            "instead, so renewals do not repeat")


def ca_lifetime(config: Config) -> tuple[str, int] | None:
    """The configured CA's name and the lifetime in days of the certificates it issues
    today, when elemta knows it (Let's Encrypt: 90 days); None for another CA."""
    return KNOWN_LIFETIMES_DAYS.get(config.tls.letsencrypt.acme_directory)


def config_check_sentence(renewal_days: int, ca: str, lifetime_days: int) -> str | None:
    """One sentence for ``elemta config check`` when the cap shortens ``renewal_days`` for
    the configured CA's certificates, or None when it changes nothing for them."""
    window, capped = renewal_window(renewal_days, timedelta(days=lifetime_days))
    if not capped:
        return None
    return (f"[tls.renewal] renewal_days = {renewal_days} is more than a third of the "
            f"{lifetime_days}-day lifetime of {ca}'s certificates: elemta renews them when "
            f"{format_span(window)} are left (a window as long as the lifetime would renew at "
            "every check)")


def config_warnings(config: Config) -> list[str]:
    """Sentences about the renewal settings for ``elemta config check`` to print: only what
    changes something for the configured CA (for another CA the daemon logs the cap once
    it sees the certificate's real lifetime)."""
    le, renewal = config.tls.letsencrypt, config.tls.renewal
    known = ca_lifetime(config)
    if not le.enabled or not renewal.auto_renew or known is None:
        return []
    sentence = config_check_sentence(renewal.renewal_days, *known)
    return [sentence] if sentence else []


#: Waits after the 1st, 2nd, ... failed certbot run: minutes at first, growing to hours.
RETRY_FIRST = 120.0
RETRY_MAX = 6 * 3600.0


def retry_delay(failures: int, first: float = RETRY_FIRST, most: float = RETRY_MAX) -> float:
    """Seconds to wait after ``failures`` failures in a row: 2m, 4m, 8m, ... up to 6h."""
    if failures <= 0:
        return 0.0
    return float(min(first * 2 ** min(failures - 1, 32), most))


def describe_served(facts: CertFacts | None, now: datetime, domain: str) -> str:
    """What is served for ``domain`` now, in words (for "still serving ...")."""
    if facts is None:
        return "no certificate for it (TLS has nothing to offer)"
    if facts.is_bootstrap:
        return "the self-signed bootstrap certificate"
    if facts.not_after <= now:
        return (f"the EXPIRED certificate serial {facts.serial} "
                f"(expired {format_span(now - facts.not_after)} ago)")
    if not facts.covers(domain):
        return f"a certificate for {', '.join(facts.names)} (serial {facts.serial})"
    return f"serial {facts.serial} (valid until {facts.not_after.isoformat()})"


def why_renew(decision: RenewalDecision, by_ca: AriDecision) -> str:
    """Why a renewal starts, for its log line: the CA's window (ARI) when only that made it
    due, else the time left against the renewal window."""
    if by_ca.due and not decision.due and by_ca.window is not None:
        return (f"the CA's renewal window (ARI) {by_ca.window.start.isoformat()} .. "
                f"{by_ca.window.end.isoformat()} has begun ({format_span(decision.remaining)} "
                "left)")
    return (f"{format_span(decision.remaining)} left, renewal window "
            f"{format_span(decision.window)}")


def not_installed(domain: str, cache_dir: Path) -> str:
    """Why an acquisition whose certbot succeeded failed all the same."""
    return (f"certbot finished but no valid certificate for {domain} reached "
            f"{cache_dir / 'live'} (certbot may have kept an existing certificate; "
            "the next attempt forces a new one)")


def unchanged(cert_name: str, config_dir: Path) -> str:
    """Why a renewal whose certbot succeeded failed all the same."""
    return (f"certbot renew --cert-name {cert_name} --config-dir {config_dir} succeeded but "
            "the served certificate did not change (certbot may consider it not yet due, or "
            "the elemta installer did not write the cache)")
