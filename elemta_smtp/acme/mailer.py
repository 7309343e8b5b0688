"""Composing and sending notification mail to ``[notify] recipients``.

With ``[notify] relay = "host:port"`` mail goes through that relay (STARTTLS
when ``relay_starttls``, AUTH when ``relay_username`` is set). Without a relay
it is delivered locally by speaking SMTP to this daemon's own plain listener,
which works only for recipients in ``[delivery] local_domains``; anything else
is an error that says to set a relay. A failed send errbacks with
``NotifyError``: the caller keeps the notice and retries later.
"""

from __future__ import annotations

import hashlib
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from io import BytesIO
from typing import Protocol

from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.internet.defer import Deferred, fail
from twisted.internet.protocol import ClientFactory
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.mail.smtp import ESMTPSender, ESMTPSenderFactory
from twisted.python.failure import Failure

from elemta_smtp.acme.notices import Notice
from elemta_smtp.config import Config
from elemta_smtp.errors import ElemtaError

SEND_TIMEOUT = 60.0
MAX_PLAIN_LINE = 78  # longer body lines go quoted-printable (RFC 5322 2.1.1 "SHOULD")


class NotifyError(ElemtaError):
    """A notice could not be mailed; ``reason`` says why and what to do."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ConnectReactor(Protocol):
    """The part of IReactorTCP the mailer uses."""

    def connectTCP(self, host: str, port: int, factory: ClientFactory,
                   timeout: float = ...) -> object: ...


@dataclass(frozen=True)
class Route:
    """Where to hand the mail to, and how."""

    host: str
    port: int
    starttls: bool
    username: str
    password: str
    tls_hostname: str  # the name the relay's certificate must carry


def compose(notice: Notice, sender: str, recipients: Sequence[str], hostname: str,
            now: datetime) -> bytes:
    """The RFC 5322 message for ``notice``: CRLF line ends only, 7-bit, UTF-8 declared.

    The body goes out as plain 7-bit text when it is ASCII with short lines (readable raw),
    else quoted-printable: the sender does not negotiate 8BITMIME, and a certbot line
    longer than 998 characters must not make a relay (or elemta) refuse the notice."""
    message = EmailMessage(policy=SMTP)
    message["From"] = f"elemta <{sender}>"
    message["To"] = ", ".join(recipients)
    message["Subject"] = notice.subject
    message["Date"] = format_datetime(now)
    digest = hashlib.sha256(notice.key.encode()).hexdigest()[:24]
    message["Message-ID"] = f"<{digest}@{hostname}>"
    message["Auto-Submitted"] = "auto-generated"
    message["X-Elemta-Notice"] = notice.kind
    body = wrap_body(notice.body.replace("\r\n", "\n").replace("\r", "\n"))
    plain = body.isascii() and max(map(len, body.split("\n"))) <= MAX_PLAIN_LINE
    message.set_content(body, charset="utf-8", cte="7bit" if plain else "quoted-printable")
    return message.as_bytes()


def smtp_data(message: bytes) -> bytes:
    """``message`` as the text of an SMTP DATA command (RFC 5321 4.5.2): every line end
    CRLF (a lone CR or LF becomes one), a "." added before every line starting with ".",
    ending in CRLF. The sender adds the final ``.``."""
    text = message.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if not text.endswith(b"\n"):
        text += b"\n"
    text = text.replace(b"\n.", b"\n..")
    if text.startswith(b"."):
        text = b"." + text
    return text.replace(b"\n", b"\r\n")


def wrap_body(body: str, width: int = 72) -> str:
    """Fold long prose lines so the mail stays plain 7-bit text, readable as a raw Maildir
    file (no quoted-printable ``=3D``); shorter lines (certbot's output) and indented ones
    (DNS records to copy, which must stay on one line) are kept as they are."""
    return "\n".join(
        textwrap.fill(line, width, break_long_words=False, break_on_hyphens=False)
        if len(line) > 76 and not line.startswith(" ") else line for line in body.split("\n"))


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


def choose_route(config: Config, recipients: Sequence[str]) -> Route:
    """The relay, or this daemon's plain listener for local recipients; raises
    ``NotifyError`` when neither can take these recipients."""
    notify = config.notify
    if notify.relay:
        host, _, port = notify.relay.rpartition(":")
        host = host.strip("[]")
        return Route(host, int(port), notify.relay_starttls, notify.relay_username,
                     notify.relay_password, host)
    local = set(config.delivery.local_domains)
    remote = [r for r in recipients if _domain(r) not in local]
    if remote:
        raise NotifyError(f"cannot mail {', '.join(remote)}: not in [delivery] local_domains and "
                          "no [notify] relay is set; set relay = \"host:port\" (your provider's "
                          "submission server) or notify a local address")
    listen = config.server.listen_addr
    if listen is None:
        raise NotifyError("cannot deliver notices locally: [server] listen_addr is off; set "
                          "[notify] relay = \"host:port\" or turn the plain listener on")
    return Route(listen.connect_host, listen.port, False, "", "", "")


class _VerbatimSender(ESMTPSender):
    """Twisted's ESMTP client, sending the message bytes as they are.

    Twisted's own ``transformChunk`` turns every LF into CRLF (a CRLF message goes out
    with CR CR LF line ends: a blank line after the first header) and stuffs dots per
    16 KiB chunk (a "." starting a chunk is missed). ``smtp_data`` prepares the bytes."""

    def transformChunk(self, chunk: bytes) -> bytes:
        # as Twisted's does: a long message is progress, not idleness
        self.resetTimeout()  # type: ignore[no-untyped-call]
        return chunk


class _SenderFactory(ESMTPSenderFactory):
    protocol = _VerbatimSender
    noisy = False  # no "Starting factory" / "Stopping factory" lines per notice


def _reason(failure: Failure) -> str:
    value = failure.value
    text = str(value) or type(value).__name__
    text = re.sub(r"\s+", " ", text).strip()
    return text


class Mailer:
    """Sends notices over SMTP through ``reactor``; ``trust_root`` overrides the CA
    store used to verify the relay's certificate (the system store by default)."""

    def __init__(self, config: Config, reactor: ConnectReactor,
                 trust_root: IOpenSSLTrustRoot | Certificate | None = None,
                 timeout: float = SEND_TIMEOUT) -> None:
        self._config = config
        self._reactor = reactor
        self._trust_root = trust_root
        self._timeout = timeout

    @property
    def recipients(self) -> tuple[str, ...]:
        return self._config.notify.recipients

    def send(self, notice: Notice, now: datetime) -> Deferred[None]:
        """Mail ``notice`` to every recipient; errbacks with ``NotifyError``."""
        config = self._config
        recipients = list(self.recipients)
        if not recipients:
            return fail(NotifyError("no [notify] recipients and no [tls.letsencrypt] email: "
                                    "nobody to mail"))
        try:
            route = choose_route(config, recipients)
        except NotifyError as exc:
            return fail(exc)
        message = compose(notice, config.notify.sender, recipients, config.server.hostname, now)
        done: Deferred[object] = Deferred()
        context = None
        if route.starttls:
            context = optionsForClientTLS(route.tls_hostname, trustRoot=self._trust_root)
        factory = _SenderFactory(  # type: ignore[no-untyped-call]
            route.username.encode() or None, route.password.encode() or None,
            config.notify.sender, recipients, BytesIO(smtp_data(message)), done,
            retries=0, timeout=self._timeout, contextFactory=context,
            heloFallback=not route.starttls, requireAuthentication=bool(route.username),
            requireTransportSecurity=route.starttls)
        factory.domain = config.server.hostname.encode()
        self._reactor.connectTCP(route.host, route.port, factory, timeout=self._timeout)
        where = f"{route.host}:{route.port}"

        def sent(_: object) -> None:
            return None

        def failed(failure: Failure) -> None:
            raise NotifyError(f"sending to {', '.join(recipients)} via {where} "
                              f"failed: {_reason(failure)}")

        return done.addCallbacks(sent, failed)
