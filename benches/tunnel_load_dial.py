"""The Python SDK's dial for ``--scale`` (curve ``dial``) of benches/tunnel_load.

Started by the harness as ``python tunnel_load_dial.py --engine HOST:PORT --ca
CA_FILE --tunnel NAME --n N``. Dials the echo tunnel ``NAME`` ``N`` times with
zero-RTT on and ``N`` times with it off (alternating), each time writing one
byte and reading it back, as the Rust dialer of the harness does. Prints one
line per mode::

    DIAL on|off DIAL_MS,FIRST_BYTE_MS DIAL_MS,FIRST_BYTE_MS ...

(the time until ``dial`` returned, and until the echoed byte arrived).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import rstream

TIMEOUT = 10.0


async def one(client: rstream.Client, tunnel: str, zero_rtt: bool) -> tuple[float, float]:
    t0 = time.perf_counter()
    stream = await asyncio.wait_for(client.dial(tunnel, zero_rtt=zero_rtt), TIMEOUT)
    dialed = time.perf_counter() - t0
    try:
        stream.write(b"x")
        await asyncio.wait_for(stream.drain(), TIMEOUT)
        await asyncio.wait_for(stream.readexactly(1), TIMEOUT)
        return dialed * 1e3, (time.perf_counter() - t0) * 1e3
    finally:
        try:
            stream.close()
            await asyncio.wait_for(stream.wait_closed(), TIMEOUT)
        except (OSError, asyncio.TimeoutError, AttributeError, rstream.RstreamError):
            pass


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--tunnel", required=True)
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args()
    n = max(1, min(args.n, 100_000))
    client = rstream.Client(
        engine=args.engine,
        no_token=True,
        tls=rstream.TLSOptions(ca_file=args.ca),
        read_config_file=False,
    )
    results: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    try:
        for zero_rtt in (True, False, True, False):  # warm-up
            await one(client, args.tunnel, zero_rtt)
        for i in range(2 * n):
            zero_rtt = i % 2 == 0
            results[zero_rtt].append(await one(client, args.tunnel, zero_rtt))
    finally:
        try:
            await asyncio.wait_for(client.close(), 5)
        except (OSError, asyncio.TimeoutError, rstream.RstreamError):
            pass
    for zero_rtt, samples in results.items():
        parts = " ".join(f"{d:.3f},{r:.3f}" for d, r in samples)
        print(f"DIAL {'on' if zero_rtt else 'off'} {parts}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
