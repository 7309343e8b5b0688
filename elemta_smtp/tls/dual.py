"""Two certificates on one OpenSSL context (``key_type = "ecdsa+rsa"``): OpenSSL keeps one
certificate per key type and, in each handshake, presents the one the client's signature
algorithms allow; each must go out with its own chain.

pyOpenSSL's ``add_extra_chain_cert`` is context-wide (the same extra certificates for every
certificate) and cryptography's bindings offer no ``SSL_CTX_add1_chain_cert``; but
``SSL_CTX_use_certificate_chain_file`` selects the certificate's slot and gives that slot
the chain read from the file. The file is an anonymous memory file (``memfd``) holding the
leaf and chain (public certificates only), read once while the context is built.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence

from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL

from elemta_smtp.certs.bundle import CertificateBundle


def _fullchain_pem(bundle: CertificateBundle) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in bundle.certificates)


@contextlib.contextmanager
def _pem_file(data: bytes) -> Iterator[str]:
    """A path OpenSSL can read ``data`` from: a memory file where Linux has them, else a
    private temporary file."""
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is not None:
        fd = memfd_create("elemta-chain", os.MFD_CLOEXEC)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.NamedTemporaryFile(prefix="elemta-chain-", suffix=".pem") as f:  # pragma: no cover
        f.write(data)
        f.flush()
        yield f.name


def use_certificates(ctx: SSL.Context, bundles: Sequence[CertificateBundle]) -> None:
    """Put each bundle's leaf, chain and key into ``ctx``, each chain with its own leaf (one
    bundle per key type). Raises ``SSL.Error`` when OpenSSL refuses one."""
    for bundle in bundles:
        with _pem_file(_fullchain_pem(bundle)) as path:
            ctx.use_certificate_chain_file(path)
        ctx.use_privatekey(bundle.key)  # type: ignore[arg-type, unused-ignore]
        ctx.check_privatekey()
