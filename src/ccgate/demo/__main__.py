"""Serve the scripted model standalone: ``python -m ccgate.demo [--host H] [--port N]``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

from ccgate.demo.runner import DemoServer

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run the demo model server until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m ccgate.demo", description=main.__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind")
    parser.add_argument("--port", type=int, default=0, help="port to bind (0: a free one)")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.host, args.port))
    return 0


async def _serve(host: str, port: int) -> None:
    """Start the server, print its URL and serve until Ctrl-C or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Handled here, whatever this process inherited: a shell's background job starts with
    # SIGINT ignored, and the embedded server leaves signals to its host.
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with DemoServer(host=host, port=port) as server:
        print(f"ccgate demo model listening on {server.url}", flush=True)
        print(f"  ANTHROPIC_BASE_URL={server.url} ANTHROPIC_API_KEY=demo", flush=True)
        await stop.wait()


if __name__ == "__main__":
    raise SystemExit(main())
