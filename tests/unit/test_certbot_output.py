"""What is kept of certbot's output as the reason of a failure: the CA's report and the
plugin's hint from stdout, the errors from stderr, never the boilerplate."""

from __future__ import annotations

from elemta_smtp.acme.certbot_output import summarize

STDOUT = [
    "Account registered.",
    "Requesting a certificate for mail.example.com",
    "",
    "Certbot failed to authenticate some domains (authenticator: elemta). The Certificate "
    "Authority reported these problems:",
    "  Identifier: mail.example.com",
    "  Type:   connection",
    '  Detail: Get "http://mail.example.com/.well-known/acme-challenge/x": dial tcp '
    "127.0.0.1:80: connect: connection refused",
    "",
    "Hint: The Certificate Authority could not download the challenge answers from",
    "http://<domain>/.well-known/acme-challenge/, served by elemta on :80.",
    "",
]
STDERR = [
    "Saving debug log to /var/lib/elemta/certbot/logs/letsencrypt.log",
    "Some challenges have failed.",
    "Ask for help or search for solutions at https://community.letsencrypt.org. See the "
    "logfile /var/lib/elemta/certbot/logs/letsencrypt.log or re-run Certbot with -v for more "
    "details.",
]


def test_ca_report_and_hint_are_kept() -> None:
    """The CA's identifier, type and detail and the whole hint paragraph survive."""
    lines = summarize(STDOUT, STDERR)
    assert lines == [
        "Some challenges have failed.",
        "Identifier: mail.example.com",
        "Type:   connection",
        'Detail: Get "http://mail.example.com/.well-known/acme-challenge/x": dial tcp '
        "127.0.0.1:80: connect: connection refused",
        "Hint: The Certificate Authority could not download the challenge answers from "
        "http://<domain>/.well-known/acme-challenge/, served by elemta on :80.",
    ]


def test_stderr_errors_without_report() -> None:
    """An error certbot only printed on stderr is kept, boilerplate dropped."""
    lines = summarize(["Requesting a certificate for a.example"],
                      ["Saving debug log to /x", "An unexpected error occurred:",
                       "too many certificates already issued for: example.com"])
    assert lines == ["An unexpected error occurred:",
                     "too many certificates already issued for: example.com"]


def test_fallback_is_the_last_lines() -> None:
    """Output with nothing recognisable: the last lines of all of it."""
    out = [f"line {i}" for i in range(30)]
    assert summarize(out, [])[-1] == "line 29"
    assert len(summarize(out, [])) == 12
    assert summarize([], []) == []
