"""What certbot said when it failed, in the words an admin needs: a pure function of
its output lines.

certbot prints the CA's problem report (``Identifier:``, ``Type:``, ``Detail: ...
returned 404``) and the authenticator's ``Hint:`` on standard output, and only a
generic ``Some challenges have failed.`` plus boilerplate on standard error. The
reason kept for logs and failure mails is the report and the hint from stdout and
the error lines from stderr, without the boilerplate; when certbot printed neither,
the last lines of its output.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

#: certbot lines that never say what went wrong.
_NOISE = re.compile(
    r"^(Saving debug log to |Ask for help or search for solutions at |See the logfile |"
    r"Account registered\.|Requesting a (certificate|new certificate) for |"
    r"Processing /|Renewing an existing certificate for |Simulating (a )?renewal|- - - -|"
    r"Certbot failed to authenticate some domains)")
#: The CA's per-identifier report, as certbot prints it.
_REPORT = re.compile(r"^\s*(Identifier|Domain|Type|Detail):")
FALLBACK_LINES = 12
MAX_LINES = 30


def summarize(stdout: Sequence[str], stderr: Sequence[str]) -> list[str]:
    """The lines that explain a certbot failure (see the module docstring)."""
    report: list[str] = []
    in_hint = False
    for line in stdout:
        text = line.rstrip()
        if not text.strip():
            in_hint = False
            continue
        if text.startswith("Hint:"):
            in_hint = True
            report.append(text)
        elif in_hint:
            report[-1] += " " + text.strip()
        elif _REPORT.match(text):
            report.append(text.strip())
    errors = [line.rstrip() for line in stderr if line.strip() and not _NOISE.match(line.strip())]
    explained = [*errors, *report]
    if explained:
        return explained[-MAX_LINES:]
    everything = [line.rstrip() for line in (*stdout, *stderr) if line.strip()]
    return everything[-FALLBACK_LINES:]
