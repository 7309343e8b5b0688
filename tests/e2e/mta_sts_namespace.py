"""The MTA-STS scene, run by test_mta_sts_client.py inside a private network and mount
namespace (``unshare --net --mount``, as root): there it may own ports 53 and 443 and its
own /etc/resolv.conf, which an MTA-STS client needs (it uses the system resolver and port
443 only).

    python -m tests.e2e.mta_sts_namespace WORKDIR

brings ``lo`` up, points /etc/resolv.conf at 127.0.0.1, starts pebble-challtestsrv on
127.0.0.1:53 and Pebble validating TLS-ALPN-01 on 127.0.0.1:443, and an elemta daemon
serving https_addr 127.0.0.1:443 that obtains its certificate (mail.example.com and
mta-sts.example.com) by TLS-ALPN-01; publishes the ``_mta-sts.example.com`` TXT record
``elemta dns records`` prints; runs ``mta-sts-query example.com`` trusting Pebble's root;
prints one JSON object with what happened.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from elemta_smtp.acme.mtasts import policy
from elemta_smtp.config import load_config
from tests.e2e.pebble import EMAIL, running_pebble
from tests.support import Setup, free_port, running_daemon

DOMAIN = "mail.example.com"


def _isolate(workdir: Path) -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    resolv = workdir / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions timeout:2 attempts:2\n")
    subprocess.run(["mount", "--bind", str(resolv), "/etc/resolv.conf"], check=True)


def main(workdir: Path) -> dict[str, object]:
    _isolate(workdir)
    setup = Setup(workdir / "elemta")
    with running_pebble(workdir / "pebble", http_port=free_port(), tls_port=443,
                        dns_port=53) as pebble:
        setup.write({
            "tls.letsencrypt": {"enabled": True, "email": EMAIL,
                                "directory_url": pebble.directory_url,
                                "challenge": "tls-alpn-01", "https_addr": "127.0.0.1:443"},
            "tls.renewal": {"renewal_timeout": "60s"},
            "mta_sts": {"enabled": True, "mode": "enforce", "max_age": "2d"},
        })
        with running_daemon(setup, env={"REQUESTS_CA_BUNDLE": str(pebble.ca_bundle)}) as daemon:
            daemon.wait_for_log(f"certificate for {DOMAIN} obtained", timeout=120)
            records = subprocess.run(
                [sys.executable, "-m", "elemta_smtp", "dns", "records", "-c", str(setup.config_path)],
                capture_output=True, text=True, check=True).stdout
            [txt] = [line for line in records.splitlines() if line.startswith("_mta-sts.example.com.")]
            value = txt.split("\t")[-1].strip('"')
            pebble.set_txt("_mta-sts.example.com.", value)
            query = Path(sys.executable).with_name("mta-sts-query")
            result = subprocess.run([str(query), "example.com"], capture_output=True, text=True,
                                    timeout=60, check=False,
                                    env={**os.environ, "SSL_CERT_FILE": str(pebble.root_path)})
            return {"returncode": result.returncode, "stdout": result.stdout,
                    "stderr": result.stderr[-2000:], "txt": value,
                    "policy_id": policy(load_config(setup.config_path)).id,
                    "served_log": daemon.log().count("mta-sts policy served for mta-sts.example.com")}


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
