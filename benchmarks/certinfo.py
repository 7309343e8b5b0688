"""``elemta cert info`` against ``certbot certificates``: ``python -m benchmarks.certinfo``

Both commands report the same certificate (key + leaf + intermediate, ECDSA P-256):
elemta from ``<cache_dir>/live/<domain>.pem``, certbot from a lineage in its own
config dir. Each run starts the command as a new process, the way an admin types it;
the two commands alternate within each round, so drift in the machine's speed hits
both alike. Printed: median, mean and fastest wall time per command, and how many
times faster elemta is (median over median). A third row, Python importing
cryptography and nothing else, is the floor under any Python command that reads a
certificate. Nothing is timed against a threshold: the figures are for reading.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

DOMAIN = "mail.example.com"
FLOOR = "import cryptography.x509, cryptography.hazmat.primitives.serialization"


def _ca(name: str, issuer: tuple[ec.EllipticCurvePrivateKey, x509.Name] | None,
        now: datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Let's Encrypt"),
                         x509.NameAttribute(NameOID.COMMON_NAME, name)])
    signer, issuer_name = issuer or (key, subject)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=30)).not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(signer, hashes.SHA256()))
    return key, cert


def make_certificate(now: datetime) -> tuple[bytes, bytes, bytes]:
    """(private key, leaf, intermediate) as PEM: what a Let's Encrypt lineage holds."""
    root_key, root = _ca("ISRG Root X1", None, now)
    sub_key, sub = _ca("R11", (root_key, root.subject), now)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DOMAIN)]))
            .issuer_name(sub.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=89))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(DOMAIN)]), critical=False)
            .sign(sub_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return key_pem, leaf.public_bytes(pem), sub.public_bytes(pem)


def write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.touch(mode=0o600)
    path.write_bytes(data)


def certbot_lineage(root: Path, key: bytes, leaf: bytes, chain: bytes) -> list[str]:
    """A certbot config dir holding one lineage (archive, live symlinks, renewal conf), laid
    out as certbot writes it; returns the arguments that point certbot at it."""
    archive, live = root / "config" / "archive" / DOMAIN, root / "config" / "live" / DOMAIN
    for name, data in (("cert1.pem", leaf), ("chain1.pem", chain), ("fullchain1.pem", leaf + chain)):
        archive.mkdir(parents=True, exist_ok=True)
        (archive / name).write_bytes(data)
    write_private(archive / "privkey1.pem", key)
    live.mkdir(parents=True, exist_ok=True)
    for kind in ("cert", "chain", "fullchain", "privkey"):
        (live / f"{kind}.pem").symlink_to(Path("..", "..", "archive", DOMAIN, f"{kind}1.pem"))
    renewal = root / "config" / "renewal" / f"{DOMAIN}.conf"
    renewal.parent.mkdir(parents=True)
    renewal.write_text(
        f"version = 2.11.0\narchive_dir = {archive}\ncert = {live}/cert.pem\n"
        f"privkey = {live}/privkey.pem\nchain = {live}/chain.pem\nfullchain = {live}/fullchain.pem\n\n"
        "[renewalparams]\naccount = 0123456789abcdef0123456789abcdef\nauthenticator = standalone\n"
        "server = https://acme-v02.api.letsencrypt.org/directory\nkey_type = ecdsa\n")
    return ["certificates", "--config-dir", str(root / "config"), "--work-dir", str(root / "work"),
            "--logs-dir", str(root / "logs")]


def elemta_cache(root: Path, key: bytes, leaf: bytes, chain: bytes) -> list[str]:
    """An elemta.toml (Let's Encrypt enabled) and its cache with live/<domain>.pem; returns
    the arguments of `elemta cert info` for it."""
    cache = root / "cache"
    write_private(cache / "live" / f"{DOMAIN}.pem", key + leaf + chain)
    config = root / "elemta.toml"
    config.write_text(f'[server]\nhostname = "{DOMAIN}"\npid_file = "{root / "elemta.pid"}"\n'
                      f'[tls.letsencrypt]\nenabled = true\nemail = "postmaster@example.com"\n'
                      f'cache_dir = "{cache}"\n')
    return ["cert", "info", "-c", str(config)]


def run_once(argv: list[str], env: dict[str, str]) -> float:
    """Wall seconds from starting ``argv`` to its exit; raises if it fails."""
    start = time.perf_counter()
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, env=env, timeout=60, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"error: {' '.join(argv)} exited with {done.returncode}:\n"
                         + done.stdout.decode(errors="replace"))
    return elapsed


def build_parser() -> argparse.ArgumentParser:
    here = Path(sys.executable).parent
    p = argparse.ArgumentParser(prog="python -m benchmarks.certinfo",
                                description=(__doc__ or "").split("\n\n")[1])
    p.add_argument("--runs", type=int, default=40, help="measured runs of each command (default 40)")
    p.add_argument("--warmup", type=int, default=3, help="unmeasured runs of each first (default 3)")
    p.add_argument("--elemta", default=str(here / "elemta"), help="the elemta command (default: "
                                                                  "next to this Python)")
    p.add_argument("--certbot", default=str(here / "certbot"), help="the certbot command (default: "
                                                                    "next to this Python)")
    p.add_argument("--time-limit", type=float, default=300.0,
                   help="seconds after which no new round starts (default 300)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.runs < 1 or args.warmup < 0:
        print("error: --runs must be at least 1 and --warmup at least 0", file=sys.stderr)
        return 2
    # Byte-code is cached, as pip does when it installs a package: a checkout run with
    # PYTHONDONTWRITEBYTECODE=1 would otherwise compile every module on every start.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    with tempfile.TemporaryDirectory(prefix="elemta-certinfo-") as tmp:
        root = Path(tmp)
        key, leaf, chain = make_certificate(datetime.now(timezone.utc))
        commands = {
            "elemta cert info": [args.elemta, *elemta_cache(root / "elemta", key, leaf, chain)],
            "certbot certificates": [args.certbot, *certbot_lineage(root / "certbot", key, leaf, chain)],
            "python + cryptography (floor)": [sys.executable, "-c", FLOOR],
        }
        for argv_ in commands.values():
            for _ in range(max(args.warmup, 1)):
                run_once(argv_, env)
        times: dict[str, list[float]] = {name: [] for name in commands}
        deadline = time.monotonic() + args.time_limit
        for number in range(args.runs):
            if time.monotonic() > deadline:
                print(f"time limit reached after {number} rounds", file=sys.stderr)
                break
            names = list(commands)
            for name in names[number % 2:] + names[:number % 2]:  # alternate who goes first
                times[name].append(run_once(commands[name], env))
    runs = len(times["elemta cert info"])
    print(f"{'command':<31} {'median':>8} {'mean':>8} {'fastest':>8}   ({runs} runs each, ms)")
    for name, values in times.items():
        ms = [v * 1000 for v in values]
        print(f"{name:<31} {statistics.median(ms):8.1f} {statistics.fmean(ms):8.1f} {min(ms):8.1f}")
    ratio = statistics.median(times["certbot certificates"]) / statistics.median(times["elemta cert info"])
    print(f"elemta cert info is {ratio:.2f}x as fast as certbot certificates (medians; target: 3x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
