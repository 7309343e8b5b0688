"""elemta.toml keys of the port-443 work: [tls.letsencrypt] https_addr, challenge and
extra_names, the [mta_sts] section with its defaults, the names the certificate covers,
and the rules across keys."""

from __future__ import annotations

import pytest

from elemta_smtp.config import ConfigError, parse_config
from elemta_smtp.units import Address

BASE = '[server]\nhostname = "mail.example.com"\n[delivery]\nlocal_domains = ["example.com", "example.org"]\n'


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "e.toml")
    return [str(p) for p in info.value.problems]


def test_defaults() -> None:
    """https_addr ":443", challenge "http-01", no extra names, MTA-STS off in testing mode for
    7 days, its mx and policy domains defaulting to the certificate's names and the local
    domains; the certificate covers the domain only."""
    config = parse_config(BASE)
    le, sts = config.tls.letsencrypt, config.mta_sts
    assert le.https_addr == Address("", 443)
    assert le.challenge == "http-01"
    assert le.extra_names == ()
    assert le.names == ("mail.example.com",)
    assert (sts.enabled, sts.mode, sts.max_age, sts.tlsrpt_rua) == (False, "testing", 604800, "")
    assert sts.mx == ("mail.example.com",)
    assert sts.policy_domains == ("example.com", "example.org")


def test_names_with_extra_names_and_mta_sts() -> None:
    """The certificate's names: domain, extra_names (deduplicated, the domain not twice),
    then mta-sts.<d> for each policy domain when [mta_sts] is enabled; mx follows them."""
    config = parse_config(BASE + '[tls.letsencrypt]\nextra_names = ["MX2.example.com.", '
                                 '"mail.example.com", "mx2.example.com"]\n'
                                 '[mta_sts]\nenabled = true\n')
    assert config.tls.letsencrypt.extra_names == ("mx2.example.com",)
    assert config.tls.letsencrypt.names == ("mail.example.com", "mx2.example.com",
                                            "mta-sts.example.com", "mta-sts.example.org")
    assert config.mta_sts.mx == ("mail.example.com", "mx2.example.com")


def test_explicit_mta_sts_values() -> None:
    """Given mx patterns, policy domains, mode, max_age and rua are kept as written (normalized)."""
    config = parse_config(BASE + '[mta_sts]\nenabled = true\nmode = "enforce"\nmax_age = "30d"\n'
                                 'mx = ["*.MX.example.net", "mail.example.com"]\n'
                                 'policy_domains = ["example.net"]\n'
                                 'tlsrpt_rua = "mailto:tls@example.net, https://r.example.net/x"\n')
    sts = config.mta_sts
    assert (sts.mode, sts.max_age) == ("enforce", 30 * 86400)
    assert sts.mx == ("*.mx.example.net", "mail.example.com")
    assert sts.policy_domains == ("example.net",)
    assert sts.tlsrpt_rua == "mailto:tls@example.net,https://r.example.net/x"
    assert config.tls.letsencrypt.names == ("mail.example.com", "mta-sts.example.net")


@pytest.mark.parametrize(("text", "expected"), [
    ('[tls.letsencrypt]\nchallenge = "dns-01"\n', 'must be one of "http-01", "tls-alpn-01"'),
    ('[tls.letsencrypt]\nchallenge = "TLS-ALPN-01"\n', 'write "tls-alpn-01"'),
    ('[tls.letsencrypt]\nchallenge = "tls-alpn-01"\nhttps_addr = ""\n',
     'e.toml:6: [tls.letsencrypt.challenge] is "tls-alpn-01" but [tls.letsencrypt] https_addr is ""'),
    ('[tls.letsencrypt]\nhttps_addr = "localhost:443"\n', "is not an IP address"),
    ('[tls.letsencrypt]\nextra_names = ["mx 2.example.com"]\n', "is not a domain name"),
    ('[tls.letsencrypt]\nextra_names = "mx2.example.com"\n', "expected a list"),
    ('[mta_sts]\nenabled = true\n[tls.letsencrypt]\nhttps_addr = ""\n',
     '[mta_sts.enabled] needs the HTTPS listener, but [tls.letsencrypt] https_addr is ""'),
    ('[mta_sts]\nenabled = true\n[tls]\nenabled = false\n',
     "[tls.enabled] is false, but [mta_sts] enabled needs the HTTPS listener"),
    ('[mta_sts]\nmode = "enforcing"\n', 'must be one of "enforce", "testing", "none"'),
    ('[mta_sts]\nmax_age = "1h"\n',
     'must be from "1d" to "365d" (RFC 8461 allows at most 31557600s), got "1h" (3600s)'),
    ('[mta_sts]\nmax_age = "400d"\n', 'must be from "1d" to "365d"'),
    ('[mta_sts]\nmx = ["mail..example.com"]\n', "is not an MX host name"),
    ('[mta_sts]\nmx = ["*.*.example.com"]\n', "is not an MX host name"),
    ('[mta_sts]\ntlsrpt_rua = "tlsrpt@example.com"\n', 'write "mailto:tlsrpt@example.com"'),
    ('[mta_sts]\ntlsrpt_rua = "http://r.example.com/"\n', "is not a TLSRPT report address"),
    ('[mta_sts]\nenabeld = true\n', 'did you mean "enabled"?'),
    ('[mta-sts]\nenabled = true\n', 'unknown section "mta-sts"; did you mean "mta_sts"?'),
])
def test_bad_values_are_refused_with_a_clear_message(text: str, expected: str) -> None:
    """Each mistake in the new keys gives one message with file, key, line and what to write."""
    found = problems_of(BASE + text)
    assert any(expected in p for p in found), found
