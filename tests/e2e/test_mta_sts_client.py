"""A real MTA-STS client (``mta-sts-query`` from postfix-mta-sts-resolver) fetches the policy
from elemta: DNS from pebble-challtestsrv (the ``_mta-sts`` TXT record as ``elemta dns
records`` prints it), HTTPS on port 443 with a certificate Pebble issued through TLS-ALPN-01.
The client uses the system resolver and port 443 only, so the scene runs in a private
network and mount namespace (tests/e2e/mta_sts_namespace.py); where namespaces are not
available the test is skipped, saying so."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.pebble import missing_binaries

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def namespaces_refused() -> str | None:
    """Why ``unshare --net --mount`` cannot be used here, or None."""
    try:
        probe = subprocess.run(["unshare", "--net", "--mount", "true"], capture_output=True,
                               text=True, timeout=10, check=False)
    except FileNotFoundError:
        return "unshare (util-linux) is not installed"
    if probe.returncode != 0:
        return f"unshare --net --mount is refused here: {probe.stderr.strip() or probe.returncode}"
    return None


def test_mta_sts_query_reports_the_configured_policy(tmp_path: Path) -> None:
    """mta-sts-query example.com gets a VALID policy with elemta's id, mode "enforce" and the
    MX list elemta configured, fetched over verified HTTPS from the daemon."""
    reason = missing_binaries() or namespaces_refused()
    if reason:
        pytest.skip(reason)
    if not Path(sys.executable).with_name("mta-sts-query").exists():
        pytest.skip("mta-sts-query is missing: pip install postfix-mta-sts-resolver (the test extra)")
    process = subprocess.Popen(
        ["unshare", "--net", "--mount", sys.executable, "-m", "tests.e2e.mta_sts_namespace",
         str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        out, err = process.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        raise AssertionError(f"the namespace scene did not finish:\n{err[-4000:]}") from None
    assert process.returncode == 0, err[-4000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert result["returncode"] == 0, result
    assert result["txt"] == f"v=STSv1; id={result['policy_id']}"
    stdout = result["stdout"]
    assert "STSFetchResult.VALID" in stdout, result
    assert f"'{result['policy_id']}'" in stdout, result
    assert "'mode': 'enforce'" in stdout, result
    assert "'mx': ['mail.example.com']" in stdout, result
    assert result["served_log"] >= 1
