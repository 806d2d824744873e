"""Python SDK peer for tests/engine_api_python.rs (Engine HTTP API interop).

Drives the official Python SDK (`rstreamlabs-rstream[api,realtime]` 0.7,
`import rstream`) against an engine's HTTP API (in the tests: this crate's
LocalEngine) and reports what it saw as JSON lines on stdout, one object
per line, each with an "event" member. Diagnostics go to stderr.

Common options: --engine HOST:PORT  --ca CA_PEM_FILE  --token T
  [--deadline SECONDS] (the process gives up and exits 3 after this)

Subcommands:

  list --query NAME=JSON [--query ...]
      For each query: NAME is "tunnels" or "clients" (optionally suffixed,
      e.g. "tunnels:labels"); JSON is {"limit"?, "filters"?} with the
      filter keys of the SDK's TunnelFilters / ClientFilters (labels map
      values may be null). Calls list_tunnels / list_clients and prints
        {"event": "listed", "query": NAME, "ids": [...], "names": [...],
         "items": [raw objects]}
      or {"event": "list_failed", "query": NAME, "error", "code"}.

  watch --transport sse|websocket [--tunnels JSON] [--clients JSON]
        [--until TYPE]
      Watches with the SDK's watch(); prints every event as
        {"event": "watched", "type", "id", "object"}
      and exits 0 after the first event whose type is TYPE (default
      "client.deleted"), 1 if the stream ends first, 2 on an error
      ({"event": "watch_failed", "error", "code"}).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

import rstream
from rstream import ClientFilters, TunnelFilters


def emit(**fields: Any) -> None:
    print(json.dumps(fields, sort_keys=True, default=str), flush=True)


def log(message: str) -> None:
    print(f"[engine_api_peer {os.getpid()}] {message}", file=sys.stderr, flush=True)


def make_client(args: argparse.Namespace) -> rstream.Client:
    return rstream.Client(
        engine=args.engine,
        token=args.token,
        tls=rstream.TLSOptions(ca_file=args.ca),
        read_config_file=False,
        connect_timeout=10.0,
        operation_timeout=10.0,
    )


def tunnel_filters(spec: dict[str, Any] | None) -> TunnelFilters | None:
    return None if spec is None else TunnelFilters(**spec)


def client_filters(spec: dict[str, Any] | None) -> ClientFilters | None:
    return None if spec is None else ClientFilters(**spec)


async def run_list(args: argparse.Namespace) -> int:
    client = make_client(args)
    failures = 0
    try:
        for query in args.query:
            name, _, spec_text = query.partition("=")
            spec = json.loads(spec_text) if spec_text else {}
            limit = spec.get("limit")
            try:
                if name.split(":")[0] == "tunnels":
                    found = await client.list_tunnels(
                        filters=tunnel_filters(spec.get("filters")), limit=limit
                    )
                    items = [dict(t.raw) for t in found]
                else:
                    found = await client.list_clients(
                        filters=client_filters(spec.get("filters")), limit=limit
                    )
                    items = [dict(c) for c in found]
            except Exception as error:  # noqa: BLE001 - reported to the test
                failures += 1
                emit(
                    event="list_failed",
                    query=name,
                    error=f"{type(error).__name__}: {error}",
                    code=getattr(error, "code", None),
                )
                continue
            emit(
                event="listed",
                query=name,
                ids=[i.get("id") for i in items],
                names=[i.get("name") for i in items],
                items=items,
            )
    finally:
        await client.close()
    return 1 if failures else 0


async def run_watch(args: argparse.Namespace) -> int:
    client = make_client(args)
    tunnels = tunnel_filters(json.loads(args.tunnels)) if args.tunnels else None
    clients = client_filters(json.loads(args.clients)) if args.clients else None
    try:
        async with client.watch(
            tunnels=tunnels, clients=clients, transport=args.transport
        ) as events:
            async for event in events:
                emit(event="watched", type=event.type, id=event.id, object=event.object)
                if event.type == args.until:
                    return 0
        log("the watch ended before the expected event")
        return 1
    except Exception as error:  # noqa: BLE001 - reported to the test
        emit(
            event="watch_failed",
            error=f"{type(error).__name__}: {error}",
            code=getattr(error, "code", None),
        )
        return 2
    finally:
        await client.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("list", "watch"):
        p = sub.add_parser(name)
        p.add_argument("--engine", required=True)
        p.add_argument("--ca", required=True)
        p.add_argument("--token", required=True)
        p.add_argument("--deadline", type=float, default=60.0)
        if name == "list":
            p.add_argument("--query", action="append", default=[])
        else:
            p.add_argument("--transport", choices=("sse", "websocket"), default="sse")
            p.add_argument("--tunnels")
            p.add_argument("--clients")
            p.add_argument("--until", default="client.deleted")
    args = parser.parse_args()
    run = run_list if args.command == "list" else run_watch

    async def bounded() -> int:
        try:
            return await asyncio.wait_for(run(args), timeout=args.deadline)
        except asyncio.TimeoutError:
            log(f"deadline of {args.deadline}s reached")
            return 3

    return asyncio.run(bounded())


if __name__ == "__main__":
    sys.exit(main())
