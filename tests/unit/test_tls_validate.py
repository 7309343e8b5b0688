"""Is a certificate bundle fit to serve? (elemta_smtp/tls/bundle.py + validate.py)"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from elemta_smtp.certs.bundle import parse_bundle
from elemta_smtp.certs.validate import check_bundle
from elemta_smtp.errors import InvalidCertificate
from elemta_smtp.tls.bootstrap import make_self_signed
from tests.certs import CA, KeyType, cert_pem, make_ca, make_leaf

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=timezone.utc)
PATH = Path("/cache/live/mail.example.com.pem")


@pytest.fixture(scope="module")
def root() -> CA:
    return make_ca(not_before=NOW - timedelta(days=365), not_after=NOW + timedelta(days=3650))


@pytest.fixture(scope="module")
def sub(root: CA) -> CA:
    return make_ca("elemta Test Intermediate", parent=root,
                   not_before=NOW - timedelta(days=365), not_after=NOW + timedelta(days=3650))


def leaf_pem(ca: CA, names: list[str] | None = None, days_before: int = 1, days_after: int = 60) -> bytes:
    return make_leaf(ca, names or ["mail.example.com"], not_before=NOW - timedelta(days=days_before),
                     not_after=NOW + timedelta(days=days_after)).combined_pem


def check(data: bytes, required_name: str | None = "mail.example.com") -> None:
    check_bundle(parse_bundle(data, PATH), now=NOW, required_name=required_name)


def test_good_bundle_passes(sub: CA) -> None:
    """Key + leaf + intermediate, valid now, covering the name: no error."""
    check(leaf_pem(sub))
    assert len(parse_bundle(leaf_pem(sub), PATH).chain) == 1


def test_key_may_follow_certificates(sub: CA) -> None:
    """The key block may come after the certificates (some tools write it last)."""
    leaf = make_leaf(sub, ["mail.example.com"], not_before=NOW - timedelta(days=1),
                     not_after=NOW + timedelta(days=60))
    check(leaf.fullchain_pem + leaf.key_pem)


def _mismatched(sub: CA) -> bytes:
    a = make_leaf(sub, ["mail.example.com"], not_before=NOW - timedelta(days=1),
                  not_after=NOW + timedelta(days=60))
    b = make_leaf(sub, ["mail.example.com"], not_before=NOW - timedelta(days=1),
                  not_after=NOW + timedelta(days=60))
    return b.key_pem + a.fullchain_pem


def _out_of_order(sub: CA) -> bytes:
    leaf = make_leaf(sub, ["mail.example.com"], not_before=NOW - timedelta(days=1),
                     not_after=NOW + timedelta(days=60))
    root = sub.parent
    assert root is not None
    # leaf, root, intermediate: the leaf is not issued by the root.
    return leaf.key_pem + leaf.cert_pem + root.pem + cert_pem(sub.cert)


def _wrong_issuer(sub: CA) -> bytes:
    other = make_ca("Some Other CA")
    leaf = make_leaf(sub, ["mail.example.com"], not_before=NOW - timedelta(days=1),
                     not_after=NOW + timedelta(days=60))
    return leaf.key_pem + leaf.cert_pem + other.pem


def _forged_signature(sub: CA) -> bytes:
    # An intermediate with the same name as `sub` but another key: names chain, signatures do not.
    root = sub.parent
    assert root is not None
    twin = make_ca("elemta Test Intermediate", parent=root)
    leaf = make_leaf(sub, ["mail.example.com"], not_before=NOW - timedelta(days=1),
                     not_after=NOW + timedelta(days=60))
    return leaf.key_pem + leaf.cert_pem + twin.pem


def _truncated(sub: CA) -> bytes:
    data = leaf_pem(sub)
    return data[: len(data) - 100]


def _cut_after_leaf(tail: bytes) -> Callable[[CA], bytes]:
    """The combined PEM cut right after the leaf's END line, then ``tail``: the chain is gone."""
    def make(sub: CA) -> bytes:
        data = leaf_pem(sub)
        end = data.index(b"-----END CERTIFICATE-----") + len(b"-----END CERTIFICATE-----")
        return data[:end] + tail

    return make


def _half_written(sub: CA) -> bytes:
    data = leaf_pem(sub)
    return data[: len(data) // 2]


def _key_only(sub: CA) -> bytes:
    return make_leaf(sub, ["mail.example.com"]).key_pem


def _certs_only(sub: CA) -> bytes:
    return make_leaf(sub, ["mail.example.com"]).fullchain_pem


def _two_keys(sub: CA) -> bytes:
    leaf = make_leaf(sub, ["mail.example.com"])
    return leaf.key_pem + leaf.key_pem + leaf.fullchain_pem


def _rsa_1024(sub: CA) -> bytes:
    return make_leaf(sub, ["mail.example.com"], not_before=NOW - timedelta(days=1),
                     not_after=NOW + timedelta(days=60), key_type="rsa-1024").combined_pem


def _corrupt_base64(sub: CA) -> bytes:
    data = leaf_pem(sub)
    start = data.index(b"-----BEGIN CERTIFICATE-----") + 40
    return data[:start] + b"!!!!" + data[start + 4:]


BAD: list[tuple[str, Callable[[CA], bytes], str]] = [
    ("garbage", lambda _: b"hello, I am not PEM\n", "no PEM data"),
    ("empty", lambda _: b"", "no PEM data"),
    ("mismatched-key", _mismatched, "does not belong"),
    ("chain-out-of-order", _out_of_order, "chain out of order"),
    ("chain-wrong-issuer", _wrong_issuer, "chain incomplete: certificate 1 (mail.example.com) is issued "
                                          "by 'elemta Test Intermediate', which is not in the file"),
    ("chain-missing", _cut_after_leaf(b"\n"), "chain missing: the certificate (mail.example.com) is "
                                               "issued by 'elemta Test Intermediate', which is not in "
                                               "the file"),
    ("cut-after-leaf-dashes", _cut_after_leaf(b"\n---"), 'the file is cut off: it ends in "---"'),
    ("cut-after-leaf-begin", _cut_after_leaf(b"\n-----BEG"), 'it ends in "-----BEG"'),
    ("cut-after-leaf-one-dash", _cut_after_leaf(b"\n-\n"), 'it ends in "-"'),
    ("chain-forged-signature", _forged_signature, "not signed"),
    ("expired", lambda ca: leaf_pem(ca, days_before=90, days_after=-1), "expired"),
    ("not-yet-valid", lambda ca: leaf_pem(ca, days_before=-2, days_after=60), "not valid yet"),
    ("wrong-name", lambda ca: leaf_pem(ca, ["other.example.com"]), "not mail.example.com"),
    ("wildcard-too-deep", lambda ca: leaf_pem(ca, ["*.com"]), "not mail.example.com"),
    ("truncated", _truncated, "cut short"),
    ("half-written", _half_written, "cut short"),
    ("key-only", _key_only, "no CERTIFICATE"),
    ("certificates-only", _certs_only, "no private key"),
    ("two-keys", _two_keys, "2 private keys"),
    ("weak-rsa", _rsa_1024, "too weak"),
    ("corrupt-base64", _corrupt_base64, "cannot be read"),
]


@pytest.mark.parametrize(("make", "reason"), [pytest.param(m, r, id=i) for i, m, r in BAD])
def test_bad_bundles_are_rejected(sub: CA, make: Callable[[CA], bytes], reason: str) -> None:
    """Each kind of bad bundle raises InvalidCertificate naming the file and the reason."""
    with pytest.raises(InvalidCertificate) as info:
        check(make(sub))
    assert info.value.path == PATH
    assert reason in info.value.reason
    assert str(PATH) in str(info.value)


def test_chain_missing_says_how_clients_fail(sub: CA) -> None:
    """A leaf alone whose CA is not in the file names the error verifying clients report and
    the file to use instead (fullchain.pem)."""
    with pytest.raises(InvalidCertificate) as info:
        check(_cut_after_leaf(b"")(sub))
    assert "unable to verify the first certificate" in info.value.reason
    assert "fullchain.pem, not cert.pem" in info.value.reason


@pytest.mark.parametrize("chain", ["intermediate", "intermediate+root", "root-issued+root", "self-signed"])
def test_complete_chains_pass(root: CA, sub: CA, chain: str) -> None:
    """The root may be absent (clients have it) or present; a self-signed leaf needs no chain;
    a leaf issued by a root directly passes with that root after it."""
    def leaf(ca: CA) -> bytes:
        made = make_leaf(ca, ["mail.example.com"], not_before=NOW - timedelta(days=1),
                         not_after=NOW + timedelta(days=60))
        return made.key_pem + made.cert_pem

    if chain == "intermediate":
        data = leaf(sub) + sub.pem
    elif chain == "intermediate+root":
        data = leaf(sub) + sub.pem + root.pem
    elif chain == "root-issued+root":
        data = leaf(root) + root.pem
    else:
        data = make_self_signed("mail.example.com", NOW)
    bundle = parse_bundle(data, PATH)
    check_bundle(bundle, now=NOW, required_name="mail.example.com")
    assert len(bundle.chain) == {"intermediate": 1, "intermediate+root": 2, "root-issued+root": 1,
                                 "self-signed": 0}[chain]


def test_text_after_the_last_block_that_is_not_a_block_start_is_ignored(sub: CA) -> None:
    """Trailing blank lines or a note after the last block are not taken for a cut-off file."""
    check(leaf_pem(sub) + b"\n\n")
    check(leaf_pem(sub) + b"installed by hand on 2030-06-01\n")


def test_wildcard_covers_one_label(sub: CA) -> None:
    """A *.example.com certificate covers mail.example.com but not example.com."""
    data = leaf_pem(sub, ["*.example.com"])
    check(data, "mail.example.com")
    with pytest.raises(InvalidCertificate):
        check(data, "example.com")


def test_no_required_name_skips_name_check(sub: CA) -> None:
    """required_name=None (a hand-managed certificate) accepts any names."""
    check(leaf_pem(sub, ["other.example.net"]), None)


def test_rsa_and_p384_are_served(sub: CA) -> None:
    """RSA 2048 and ECDSA P-384 keys pass the key-type check."""
    key_types: tuple[KeyType, ...] = ("rsa", "ecdsa-p384")
    for key_type in key_types:
        check(make_leaf(sub, ["mail.example.com"], not_before=NOW - timedelta(days=1),
                        not_after=NOW + timedelta(days=60), key_type=key_type).combined_pem)


def test_encrypted_key_is_explained(sub: CA) -> None:
    """An encrypted private key is refused with a hint to decrypt it."""
    from cryptography.hazmat.primitives import serialization

    leaf = make_leaf(sub, ["mail.example.com"])
    encrypted = leaf.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.BestAvailableEncryption(b"secret"))
    with pytest.raises(InvalidCertificate) as info:
        check(encrypted + leaf.fullchain_pem)
    assert "encrypted" in info.value.reason
