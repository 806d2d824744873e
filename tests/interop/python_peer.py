"""Python SDK peer for tests/interop_python.rs (runtime protocol interop).

Drives the official Python SDK (`rstreamlabs-rstream`, `import rstream`)
against an rstream engine (in the tests: this crate's LocalEngine) and
reports what happened as JSON lines on stdout, one object per line, each
with an "event" member. Diagnostics go to stderr.

Common options: --engine HOST:PORT  --ca CA_PEM_FILE  [--token T]
  [--zero-rtt on|off]  (the client-wide setting: default for dials, and
                        what proxy connections (ProxyReq) use)
  [--heartbeat-interval SECONDS] (default 1: heartbeats flow during tests)
  [--deadline SECONDS] (the process gives up and exits 3 after this)

Subcommands:

  serve [--private NAME]... [--published NAME]...
      Opens one control channel and creates the tunnels. Prints
        {"event": "tunnel", "kind": "private"|"published", "id", "name",
         "forwarding_address", "hostname", "port", "protocol", "publish"}
      per tunnel, then {"event": "ready"}. Private tunnels answer every
      accepted stream with the banner line "python <name>\\n" and then echo
      every byte until the peer closes. Published tunnels are served as
      HTTP/1.1 with the SDK's ASGI helper (`rstream.asgi.serve`); the app
      answers JSON describing the request. When stdin reaches EOF the peer
      closes every tunnel and the control channel (CloseTunnelReq and
      CloseControlChannelReq, both answered by the engine) and prints
        {"event": "closed", "clean": bool, "private_streams": n,
         "http_requests": n, "error": str|null}
      then exits 0 if clean, 1 otherwise. {"event": "control_failed"} is
      printed as soon as the control channel dies unexpectedly.

  dial --case TUNNEL=on|off|default [--case ...] [--send TEXT] [--bulk N]
      For each case: dials TUNNEL (name or id) with that per-dial zero-RTT
      override, reads the server's banner line, writes TEXT + "\\n" followed
      by N pseudo-random bytes, reads the same number of bytes back and
      compares. Prints per case
        {"event": "dialed", "tunnel", "zero_rtt", "banner", "echoed": bool,
         "bytes": n}
      or {"event": "dial_failed", "tunnel", "zero_rtt", "error", "code",
          "engine_code"}. Exits 0 when every case echoed, 1 otherwise
      (with --expect-failure, 0 when every case failed).

  probe
      A TLS handshake with an ssl context built like the SDK's (CA file,
      ALPN "rstrm/1", hostname check) plus VERIFY_X509_STRICT (the default
      of Python >= 3.13), then one SDK control channel open and close.
      Prints {"event": "probe", "alpn", "tls_version", "strict_x509": bool,
      "connect": {"ok": bool, "engine_code", "code", "error",
      "server_details"}}.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import json
import os
import ssl
import sys
from typing import Any

import rstream
from rstream import asgi
from rstream.errors import EngineError, RstreamError


def emit(**fields: Any) -> None:
    print(json.dumps(fields, sort_keys=True), flush=True)


def log(message: str) -> None:
    print(f"[python_peer {os.getpid()}] {message}", file=sys.stderr, flush=True)


def on_off(value: str) -> bool:
    if value == "on":
        return True
    if value == "off":
        return False
    raise argparse.ArgumentTypeError("expected on or off")


def make_client(args: argparse.Namespace) -> rstream.Client:
    # read_config_file=False: nothing from ~/.config may leak into the test.
    return rstream.Client(
        engine=args.engine,
        token=args.token,
        no_token=args.token is None,
        tls=rstream.TLSOptions(ca_file=args.ca),
        zero_rtt=args.zero_rtt,
        heartbeat_interval=args.heartbeat_interval,
        read_config_file=False,
        connect_timeout=10.0,
        operation_timeout=10.0,
    )


def error_fields(error: BaseException) -> dict[str, Any]:
    return {
        "error": f"{type(error).__name__}: {error}",
        "code": getattr(error, "code", None),
        "engine_code": error.engine_code if isinstance(error, EngineError) else None,
    }


def pattern(n: int) -> bytes:
    """n deterministic, non-repeating-looking bytes."""
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[:n])


async def close_quietly(stream: rstream.RstreamStream) -> None:
    stream.close()
    try:
        await asyncio.wait_for(stream.wait_closed(), 5)
    except (OSError, asyncio.TimeoutError):
        pass  # the peer or the engine went first: nothing left to close


# --------------------------------------------------------------------------
# serve


class Stats:
    private_streams = 0
    http_requests = 0


async def echo_stream(name: str, stream: rstream.RstreamStream) -> None:
    try:
        stream.write(f"python {name}\n".encode())
        await stream.drain()
        while chunk := await stream.read(64 * 1024):
            stream.write(chunk)
            await stream.drain()
    except (ConnectionError, OSError) as error:
        log(f"echo stream on {name} ended with {error!r}")
    finally:
        await close_quietly(stream)


async def serve_private(name: str, tunnel: rstream.BytestreamTunnel) -> None:
    tasks: set[asyncio.Task[None]] = set()
    async for stream in tunnel:
        Stats.private_streams += 1
        task = asyncio.create_task(echo_stream(name, stream))
        tasks.add(task)
        task.add_done_callback(tasks.discard)


def http_app(name: str) -> asgi.ASGIApp:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            return
        body = b""
        while True:
            message = await receive()
            if message.get("type") != "http.request":
                break
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        Stats.http_requests += 1
        answer = json.dumps(
            {
                "server": "python",
                "tunnel": name,
                "method": scope.get("method"),
                "path": scope.get("path"),
                "http_version": scope.get("http_version"),
                "body_len": len(body),
                "body_sha256": hashlib.sha256(body).hexdigest(),
            },
            sort_keys=True,
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(answer)).encode()),
                    (b"x-served-by", b"rstream-python"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": answer})

    return app


def tunnel_event(kind: str, tunnel: rstream.BytestreamTunnel) -> None:
    p = tunnel.properties
    emit(
        event="tunnel",
        kind=kind,
        id=tunnel.id,
        name=p.name,
        forwarding_address=tunnel.forwarding_address,
        hostname=p.hostname,
        port=p.port,
        protocol=p.protocol,
        publish=p.publish,
    )


async def stdin_eof() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    try:
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
        )
    except (OSError, ValueError):
        # Not a pipe (a terminal or a file): wait forever (the deadline ends it).
        await asyncio.Event().wait()
    while await reader.read(4096):
        pass


async def watch_control(control: rstream.ControlChannel, closing: asyncio.Event) -> None:
    try:
        await control.done()
    except BaseException as error:  # noqa: BLE001 - reported, then re-raised
        if not closing.is_set():
            emit(event="control_failed", **error_fields(error))
        raise


async def cmd_serve(args: argparse.Namespace) -> int:
    client = make_client(args)
    control = await client.connect()
    closing = asyncio.Event()
    watcher = asyncio.create_task(watch_control(control, closing))
    servers: list[asyncio.Task[None]] = []
    tunnels: list[rstream.BytestreamTunnel] = []
    for name in args.private:
        tunnel = await control.create_tunnel(name=name)
        tunnels.append(tunnel)
        tunnel_event("private", tunnel)
        servers.append(asyncio.create_task(serve_private(name, tunnel)))
    for name in args.published:
        tunnel = await control.create_tunnel(
            name=name, publish=True, protocol="http", http_version="http/1.1"
        )
        tunnels.append(tunnel)
        tunnel_event("published", tunnel)
        servers.append(asyncio.create_task(asgi.serve(http_app(name), tunnel)))
    emit(event="ready")

    # Serve until stdin closes (or the control channel dies).
    eof = asyncio.create_task(stdin_eof())
    await asyncio.wait({eof, watcher}, return_when=asyncio.FIRST_COMPLETED)
    eof.cancel()
    problem: str | None = None
    if control.closed:
        problem = "the control channel was closed before the peer closed it"
    closing.set()
    try:
        for tunnel in tunnels:
            if not tunnel.closed:
                await tunnel.close()
        await control.close()
        await client.close()
    except BaseException as error:  # noqa: BLE001 - reported
        problem = problem or f"closing failed: {type(error).__name__}: {error}"
    for task in servers:
        task.cancel()
    await asyncio.gather(*servers, watcher, return_exceptions=True)
    emit(
        event="closed",
        clean=problem is None,
        error=problem,
        private_streams=Stats.private_streams,
        http_requests=Stats.http_requests,
    )
    return 0 if problem is None else 1


# --------------------------------------------------------------------------
# dial


async def dial_case(
    client: rstream.Client, tunnel: str, mode: str, text: str, bulk: int
) -> bool:
    zero_rtt = None if mode == "default" else mode == "on"
    try:
        stream = await client.dial(tunnel, zero_rtt=zero_rtt)
    except RstreamError as error:
        emit(event="dial_failed", tunnel=tunnel, zero_rtt=mode, **error_fields(error))
        return False
    try:
        payload = text.encode() + b"\n" + pattern(bulk)
        # Written at once: with zero-RTT these bytes follow the StreamReq
        # frame before anything came back from the engine. Read while
        # writing, so that a large payload cannot fill both directions.
        stream.write(payload)
        sender = asyncio.create_task(stream.drain())
        try:
            banner = await asyncio.wait_for(stream.reader.readline(), 10)
            back = await asyncio.wait_for(stream.readexactly(len(payload)), 20)
            await asyncio.wait_for(sender, 10)
        finally:
            sender.cancel()
        emit(
            event="dialed",
            tunnel=tunnel,
            zero_rtt=mode,
            banner=banner.decode(errors="replace").rstrip("\n"),
            echoed=back == payload,
            bytes=len(payload),
        )
        return back == payload
    except (asyncio.TimeoutError, asyncio.IncompleteReadError, OSError) as error:
        emit(event="dial_failed", tunnel=tunnel, zero_rtt=mode, **error_fields(error))
        return False
    finally:
        await close_quietly(stream)


async def cmd_dial(args: argparse.Namespace) -> int:
    client = make_client(args)
    results = []
    try:
        for case in args.case:
            tunnel, _, mode = case.rpartition("=")
            if not tunnel or mode not in ("on", "off", "default"):
                raise SystemExit(f"bad --case {case!r}: expected TUNNEL=on|off|default")
            results.append(await dial_case(client, tunnel, mode, args.send, args.bulk))
    finally:
        await client.close()
    if args.expect_failure:
        return 0 if not any(results) else 1
    return 0 if all(results) else 1


# --------------------------------------------------------------------------
# probe


async def cmd_probe(args: argparse.Namespace) -> int:
    host, _, port = args.engine.rpartition(":")
    context = ssl.create_default_context(cafile=args.ca)
    context.set_alpn_protocols(["rstrm/1"])
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    strict = True
    alpn = tls_version = None
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, int(port), ssl=context, server_hostname=host),
            10,
        )
        ssl_object = writer.get_extra_info("ssl_object")
        alpn = ssl_object.selected_alpn_protocol()
        tls_version = ssl_object.version()
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass
    except ssl.SSLError as error:
        log(f"strict TLS handshake failed: {error!r}")
        strict = False

    client = make_client(args)
    connect: dict[str, Any]
    try:
        control = await client.connect()
        details = control.server_details
        connect = {
            "ok": True,
            "server_details": dataclasses.asdict(details) if details else None,
        }
        await control.close()
    except RstreamError as error:
        connect = {"ok": False, **error_fields(error)}
    finally:
        await client.close()
    emit(event="probe", alpn=alpn, tls_version=tls_version, strict_x509=strict, connect=connect)
    return 0


# --------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--engine", required=True)
    common.add_argument("--ca", required=True)
    common.add_argument("--token")
    common.add_argument("--zero-rtt", type=on_off, default=True)
    common.add_argument("--heartbeat-interval", type=float, default=1.0)
    common.add_argument("--deadline", type=float, default=120.0)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", parents=[common])
    serve.add_argument("--private", action="append", default=[])
    serve.add_argument("--published", action="append", default=[])
    dial = sub.add_parser("dial", parents=[common])
    dial.add_argument("--case", action="append", required=True)
    dial.add_argument("--send", default="hello from python")
    dial.add_argument("--bulk", type=int, default=0)
    dial.add_argument("--expect-failure", action="store_true")
    sub.add_parser("probe", parents=[common])
    return parser.parse_args()


async def main() -> int:
    args = parse_args()
    command = {"serve": cmd_serve, "dial": cmd_dial, "probe": cmd_probe}[args.command]
    try:
        return await asyncio.wait_for(command(args), args.deadline)
    except asyncio.TimeoutError:
        emit(event="deadline", seconds=args.deadline)
        return 3
    except RstreamError as error:
        emit(event="error", **error_fields(error))
        return 2


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
