"""Leg D of benches/tunnel_load.rs: a hello-world ASGI app served through
the local engine with the Python SDK's stream-native ASGI helper.

Started by the harness as ``python tunnel_load_asgi.py --engine HOST:PORT
--ca CA_FILE``. Prints ``READY url=<forwarding address>`` once the tunnel is
published, then serves until stdin closes (or one hour has passed).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import rstream
from rstream import asgi

HELLO = b"Hello, World!"
MAX_LIFETIME = 3600.0


async def app(scope, receive, send) -> None:
    if scope.get("type") != "http":
        return
    # Drain the (empty) request body.
    while True:
        message = await receive()
        if message.get("type") != "http.request" or not message.get("more_body", False):
            break
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(HELLO)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": HELLO})


async def stdin_closed() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(4096):
        pass


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine", required=True)
    parser.add_argument("--ca", required=True)
    args = parser.parse_args()
    client = rstream.Client(
        engine=args.engine,
        no_token=True,
        tls=rstream.TLSOptions(ca_file=args.ca),
        read_config_file=False,
    )
    control = await client.connect()
    tunnel = await control.create_tunnel(
        publish=True, protocol="http", http_version="http/1.1"
    )
    print(f"READY url={tunnel.forwarding_address}", flush=True)
    server = asyncio.create_task(asgi.serve(app, tunnel))
    try:
        await asyncio.wait_for(stdin_closed(), MAX_LIFETIME)
    except asyncio.TimeoutError:
        pass
    server.cancel()
    await asyncio.gather(server, return_exceptions=True)
    try:
        await asyncio.wait_for(control.close(), 5)
        await client.close()
    except (OSError, asyncio.TimeoutError, rstream.RstreamError):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
