"""Three ``elemta serve`` nodes sharing one Redis, for the cluster's end-to-end tests.

``start_nodes`` makes the chosen node the one that issues: the test holds the issuance
lock while the other nodes start (they find it held and wait a lease), then lets it go
and starts the chosen node, which takes it at once. Pebble validates HTTP-01 at the last
node, so a certificate is issued only if that node answers with what another node's
certbot wrote to Redis.
"""

from __future__ import annotations

import contextlib
import re
import smtplib
import ssl
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.pebble import EMAIL, Pebble
from tests.e2e.test_auto_acquire import served_certificate
from tests.redis_server import RedisServer
from tests.support import Daemon, Setup, running_daemon, stop_process

DOMAIN = "mail.example.com"
PREFIX = "elemta:"
LOCK = f"{PREFIX}lock:{DOMAIN}"


def node_setups(root: Path, count: int = 3) -> list[Setup]:
    return [Setup(root / f"node{i}") for i in range(count)]


def write_configs(setups: list[Setup], redis_server: RedisServer, directory_url: str, *,
                  cluster: Mapping[str, object] | None = None,
                  renewal: Mapping[str, object] | None = None,
                  letsencrypt: bool = True,
                  https_ports: list[int] | None = None) -> None:
    """With ``https_ports`` every node answers TLS-ALPN-01 (``challenge = "tls-alpn-01"``)
    on its port of the list."""
    for i, setup in enumerate(setups):
        alpn = ({"challenge": "tls-alpn-01", "https_addr": f"127.0.0.1:{https_ports[i]}"}
                if https_ports else {})
        setup.write({
            "tls.letsencrypt": {"enabled": letsencrypt, "email": EMAIL,
                                "directory_url": directory_url, **alpn},
            "tls.renewal": {"renewal_timeout": "60s", **(renewal or {})},
            "notify": {"recipients": ["postmaster@example.com"]},
            "cluster": {"redis_url": redis_server.url, "node_name": f"node{i}",
                        **(cluster or {})},
        })


def served_serial(setup: Setup) -> int:
    return served_certificate(setup).serial_number


def send_mail(setup: Setup) -> None:
    """One message over STARTTLS: the node accepts mail."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", setup.smtp_port, timeout=10) as client:
        client.starttls(context=context)
        client.sendmail("a@test.example", ["alice@example.com"],
                        b"Subject: hello\r\n\r\nwhile Redis is down\r\n")


def mails(setup: Setup, subject: str) -> int:
    """How many messages in the node's postmaster Maildir have this subject."""
    new = setup.maildir_root / "example.com" / "postmaster" / "new"
    if not new.is_dir():
        return 0
    return sum(f"Subject: {subject}".encode() in p.read_bytes() for p in new.iterdir())


def pebble_issued(pebble: Pebble) -> int:
    """Certificates Pebble issued so far (its log has one line per issuance)."""
    return len(re.findall(r"Issued certificate serial", pebble.logs["pebble"].read_text()))


@dataclass
class Cluster:
    setups: list[Setup]
    daemons: list[Daemon | None]
    stack: ExitStack
    env: dict[str, str]

    def node(self, i: int) -> Daemon:
        daemon = self.daemons[i]
        assert daemon is not None
        return daemon

    def alive(self) -> list[int]:
        return [i for i, d in enumerate(self.daemons) if d is not None]

    def logs(self) -> str:
        return "\n".join(d.log() for d in self.daemons if d is not None)

    def count(self, text: str) -> int:
        return sum(d.log().count(text) for d in self.daemons if d is not None)

    def restart(self, i: int) -> Daemon:
        """Stop node ``i`` (SIGTERM) and start it again with the same config and cache."""
        stop_process(self.node(i).process)
        return self.start(i)

    def start(self, i: int) -> Daemon:
        daemon = self.stack.enter_context(running_daemon(self.setups[i], env=self.env))
        self.daemons[i] = daemon
        return daemon


@contextlib.contextmanager
def start_nodes(setups: list[Setup], redis_server: RedisServer, env: Mapping[str, str],
                first: int = 0, lease_ms: int = 60_000) -> Iterator[Cluster]:
    """Start every node, ``first`` last and alone able to take the issuance lock."""
    client = redis_server.client()
    with ExitStack() as stack:
        stack.callback(client.close)
        cluster = Cluster(setups, [None] * len(setups), stack, dict(env))
        assert client.set(LOCK, "the-test 0", nx=True, px=lease_ms)
        for i in range(len(setups)):
            if i != first:
                cluster.start(i).wait_for_log("node the-test is obtaining or renewing", timeout=30)
        client.delete(LOCK)
        cluster.start(first)
        yield cluster
