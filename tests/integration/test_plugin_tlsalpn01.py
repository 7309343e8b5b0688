"""The authenticator's TLS-ALPN-01 work against real sockets on 127.0.0.1: the challenge
class in acme's registry, get_chall_pref, answer files, the plugin's own listener while no
daemon listens, the self-check (a foreign TLS server is reported), cleanup, and the same
answers served by a real daemon."""

from __future__ import annotations

import socket
import ssl
import stat
from pathlib import Path

import pytest
from acme import challenges
from certbot import errors

from certbot_elemta._internal.tlsalpn01 import TLSALPN01, AlpnServer, TLSALPN01Responder
from elemta_smtp.cache import layout
from elemta_smtp.cache.tlsalpn import fetch_validation, validates
from elemta_smtp.units import Address
from tests.plugin_support import ACCOUNT_KEY, CONFIG, Root, alpn_achall
from tests.support import Setup, free_port, running_daemon

TOKEN = b"0123456789abcdef0123456789abcdef"


def test_challenge_class_is_registered_and_answers_with_an_empty_payload() -> None:
    """acme knows tls-alpn-01 (certbot parses --preferred-challenges and authorizations with
    it); the response posted to the CA is {} like http-01's; the validation is the key
    authorization."""
    achall = alpn_achall()
    assert isinstance(achall.chall, TLSALPN01)
    assert challenges.Challenge.TYPES["tls-alpn-01"] is TLSALPN01
    response = achall.response(ACCOUNT_KEY)
    assert response.to_partial_json() == {}
    assert achall.chall.validation(ACCOUNT_KEY) == achall.chall.key_authorization(ACCOUNT_KEY)
    assert achall.chall.key_authorization(ACCOUNT_KEY).startswith(
        "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY.")


def own_listener(responder: TLSALPN01Responder) -> AlpnServer | None:
    """The plugin's own listener, if it started one."""
    return responder.server


def plugin_for(root: Root, extra: str = "", *args: str) -> object:
    root.write(CONFIG.format(root=root.path, http_port=9) + extra)
    return root.plugin(*args)


def test_get_chall_pref_offers_tls_alpn_when_configured_or_asked(tmp_path: Path) -> None:
    """HTTP-01 only by default; TLS-ALPN-01 too when asked with --preferred-challenges, and
    first when [tls.letsencrypt] challenge = "tls-alpn-01"."""
    root = Root(tmp_path)
    plugin = plugin_for(root)
    assert list(plugin.get_chall_pref("mail.example.com")) == [challenges.HTTP01]  # type: ignore[attr-defined]
    asked = plugin_for(root, "", "certonly", "--preferred-challenges", "tls-alpn-01")
    assert list(asked.get_chall_pref("mail.example.com")) == [challenges.HTTP01, TLSALPN01]  # type: ignore[attr-defined]
    configured = plugin_for(root, 'challenge = "tls-alpn-01"\nhttps_addr = "127.0.0.1:9"\n')
    assert list(configured.get_chall_pref("mail.example.com")) == [TLSALPN01, challenges.HTTP01]  # type: ignore[attr-defined]


def test_plugin_answers_itself_while_no_daemon_listens(tmp_path: Path) -> None:
    """perform writes <cache>/tls-alpn-01/<name> (0644), starts its own listener, passes its
    self-check; the CA's handshake gets the validation certificate; cleanup removes the file
    and closes the port."""
    port = free_port()
    responder = TLSALPN01Responder(tmp_path / "cache", Address("127.0.0.1", port))
    achall = alpn_achall()
    [response] = responder.perform([achall])
    assert response.to_partial_json() == {}
    answer = layout.tls_alpn_dir(tmp_path / "cache") / "mail.example.com"
    assert answer.read_text() == achall.chall.key_authorization(ACCOUNT_KEY)
    assert stat.S_IMODE(answer.stat().st_mode) == 0o644
    assert own_listener(responder) is not None
    cert = fetch_validation("127.0.0.1", port, "mail.example.com")
    assert validates(cert, "mail.example.com", answer.read_bytes()) is None
    with pytest.raises(ssl.SSLError):  # anything else: a failed handshake
        fetch_validation("127.0.0.1", port, "other.example.com")
    responder.cleanup([achall])
    assert not answer.exists()
    assert own_listener(responder) is None
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_foreign_tls_server_on_the_port_is_reported(tmp_path: Path) -> None:
    """Another program on https_addr (here: a TLS server without acme-tls/1) fails the
    self-check with a sentence naming the address, before the CA is asked."""
    other = AlpnServer(Address("127.0.0.1", 0), tmp_path / "elsewhere")  # answers nothing
    try:
        responder = TLSALPN01Responder(tmp_path / "cache", Address("127.0.0.1", other.port))
        with pytest.raises(errors.PluginError, match=r"could not be checked on 127\.0\.0\.1:\d+"):
            responder.perform([alpn_achall()])
        assert responder.server is None  # something listened: no listener of our own
    finally:
        other.stop()


def test_port_taken_by_a_non_listener_is_a_clear_error(tmp_path: Path) -> None:
    """A bind failure of the plugin's own listener says what to do."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))  # bound, not listening: connect fails, bind fails
        port = holder.getsockname()[1]
        responder = TLSALPN01Responder(tmp_path / "cache", Address("127.0.0.1", port))
        with pytest.raises(errors.PluginError, match=r"already in use.*https_addr"):
            responder.perform([alpn_achall()])


def test_empty_https_addr_is_refused(tmp_path: Path) -> None:
    """Without https_addr there is nothing to answer on: a sentence, not a CA failure."""
    with pytest.raises(errors.PluginError, match="https_addr is empty"):
        TLSALPN01Responder(tmp_path / "cache", None).perform([alpn_achall()])


def test_running_daemon_answers_what_the_plugin_writes(tmp_path: Path) -> None:
    """With elemta serving https_addr (challenge = "tls-alpn-01"), the plugin starts no
    listener of its own: its self-check passes against the daemon, which logs the answer."""
    setup = Setup(tmp_path / "elemta")
    port = free_port()
    setup.write({"tls.letsencrypt": {"https_addr": f"127.0.0.1:{port}", "challenge": "tls-alpn-01"}})
    with running_daemon(setup) as daemon:
        daemon.wait_for_log("listening for HTTPS")
        responder = TLSALPN01Responder(setup.cache_dir, Address("127.0.0.1", port))
        achall = alpn_achall()
        responder.perform([achall])
        assert responder.server is None
        daemon.wait_for_log("tls-alpn-01 challenge served for mail.example.com")
        responder.cleanup([achall])
        assert list(layout.tls_alpn_dir(setup.cache_dir).iterdir()) == []
