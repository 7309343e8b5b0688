"""Which recipients elemta accepts: a pure decision on plain values."""

from __future__ import annotations

from elemta_smtp.smtp import replies
from elemta_smtp.smtp.commands import CommandRejected, Mailbox
from elemta_smtp.smtp.settings import SessionSettings


def accept_recipient(mailbox: Mailbox, settings: SessionSettings) -> str:
    """The recipient as handed to the sink (``local@domain``, lower-case), or
    ``CommandRejected`` with 554 5.7.1 (not our domain) / 550 5.1.1 (no such user).

    ``<postmaster>`` without a domain (RFC 5321 4.5.1) means postmaster at our host name.
    """
    domain = mailbox.domain.lower() or _postmaster_domain(settings)
    if domain not in settings.local_domains:
        raise CommandRejected(replies.RELAY_DENIED)
    local = mailbox.local.lower()
    if settings.local_users and local not in settings.local_users:
        raise CommandRejected(replies.USER_UNKNOWN)
    return f"{local}@{domain}"


def _postmaster_domain(settings: SessionSettings) -> str:
    host = settings.hostname.lower()
    if host in settings.local_domains or not settings.local_domains:
        return host
    return min(settings.local_domains)
