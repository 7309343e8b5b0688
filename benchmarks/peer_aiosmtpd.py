"""aiosmtpd as a benchmark peer: STARTTLS on the plain port, implicit TLS on the
TLS port, and a handler that stores each message as durably as elemta does,
writing in a thread pool so fsync never blocks the event loop."""

from __future__ import annotations

import asyncio
import signal
import ssl
from concurrent.futures import ThreadPoolExecutor

from aiosmtpd.smtp import SMTP, Envelope, Session

from benchmarks.certs import HOSTNAME
from benchmarks.durable import DurableMaildir
from benchmarks.peercli import READY, PeerArgs, parse_peer_args


class DurableHandler:
    """aiosmtpd handler: accept every recipient, store the message, then answer 250."""

    def __init__(self, maildir: DurableMaildir, executor: ThreadPoolExecutor) -> None:
        self.maildir = maildir
        self.executor = executor

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        received = f"Received: from {session.host_name} by {HOSTNAME} (aiosmtpd peer)\r\n".encode()
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self.executor, self.maildir.deliver, received + content)
        except OSError as exc:
            return f"451 4.3.0 cannot store the message: {exc.strerror}"
        return "250 2.0.0 OK"


async def serve(args: PeerArgs) -> None:
    """Listen until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(args.cert, args.key)
    executor = ThreadPoolExecutor(args.threads, thread_name_prefix="maildir")
    maildir = DurableMaildir(args.maildir)
    handler = DurableHandler(maildir, executor)
    plain = await loop.create_server(
        lambda: SMTP(handler, hostname=HOSTNAME, tls_context=ctx, loop=loop),
        host=args.host, port=args.plain_port)
    implicit = await loop.create_server(
        lambda: SMTP(handler, hostname=HOSTNAME, loop=loop),
        host=args.host, port=args.tls_port, ssl=ctx)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(READY, flush=True)
    await stop.wait()
    plain.close()
    implicit.close()
    executor.shutdown(wait=True)
    maildir.close()


def main(argv: list[str] | None = None) -> None:
    asyncio.run(serve(parse_peer_args(argv, __doc__ or "")))


if __name__ == "__main__":
    main()
