"""Runs configuration cases through the Python SDK's own resolver.

Driver for tests/config_python.rs. Reads a JSON array of cases on stdin and
prints a JSON array with one outcome per case, in order.

Case:
  {"name": str,
   "env": {VAR: value},          # the *whole* environment (HOME, RSTREAM_CONFIG, ...)
   "options": {"engine", "token", "context", "apiUrl", "projectEndpoint",
               "region", "configFile": bool, "mtlsFiles": bool,
               "headers": {..}, "connectTimeout", "operationTimeout",
               "heartbeatInterval"},
   "cert": path, "key": path}    # the files "mtlsFiles" stands for
Outcome:
  {"engine": "host:port" | "managed:<endpoint>[@region]" | null,
   "auth": "none" | "token" | "mtls",
   "error": code | null}

The config file is a real file named by RSTREAM_CONFIG (or HOME); the
resolver reads it and os.environ itself, so the process environment is
replaced for each case.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from rstream.config import ClientOptions, TLSOptions, resolve_client_options
from rstream.errors import RstreamError


def options_for(case: dict) -> ClientOptions:
    o = case.get("options") or {}
    kwargs: dict = {}
    for ours, theirs in (
        ("engine", "engine"),
        ("token", "token"),
        ("context", "context"),
        ("apiUrl", "api_url"),
        ("projectEndpoint", "project_endpoint"),
        ("region", "region"),
    ):
        if o.get(ours) is not None:
            kwargs[theirs] = o[ours]
    if o.get("configFile") is not None:
        kwargs["read_config_file"] = bool(o["configFile"])
    if o.get("mtlsFiles"):
        kwargs["tls"] = TLSOptions(cert_file=case["cert"], key_file=case["key"])
    if o.get("headers"):
        kwargs["control_plane_headers"] = dict(o["headers"])
    for ours, theirs in (
        ("connectTimeout", "connect_timeout"),
        ("operationTimeout", "operation_timeout"),
        ("heartbeatInterval", "heartbeat_interval"),
    ):
        if o.get(ours) is not None:
            kwargs[theirs] = float(o[ours])
    return ClientOptions(**kwargs)


def with_port(engine: str) -> str:
    return engine if ":" in engine else f"{engine}:443"


def run(case: dict) -> dict:
    os.environ.clear()
    os.environ.update(case.get("env") or {})
    try:
        resolved = asyncio.run(resolve_client_options(options_for(case)))
    except RstreamError as error:
        return {"engine": None, "auth": "none", "error": error.code}
    except Exception as error:  # noqa: BLE001 - reported, compared, never hidden
        return {"engine": None, "auth": "none", "error": f"PYTHON_{type(error).__name__}"}
    if resolved.region is None and resolved.engine is not None:
        engine = with_port(resolved.engine)
    elif resolved.project_endpoint is not None:
        engine = f"managed:{resolved.project_endpoint}"
        if resolved.region is not None:
            engine += f"@{resolved.region}"
    else:
        engine = None
    tls = resolved.tls
    has_cert = tls is not None and bool(
        (tls.cert_file and tls.key_file) or (tls.certificate and tls.key)
    )
    auth = "token" if resolved.token is not None else "mtls" if has_cert else "none"
    return {"engine": engine, "auth": auth, "error": None}


def main() -> None:
    cases = json.load(sys.stdin)
    saved = dict(os.environ)
    try:
        outcomes = [run(case) for case in cases]
    finally:
        os.environ.clear()
        os.environ.update(saved)
    json.dump(outcomes, sys.stdout)


if __name__ == "__main__":
    main()
