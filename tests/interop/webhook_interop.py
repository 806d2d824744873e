"""Drives the Python SDK's webhook helpers for tests/webhook_interop.rs.

Reads a JSON array of requests on stdin and prints a JSON array with one
answer per request, in order. Payloads travel as hex so that any bytes
(including invalid UTF-8) survive the trip.

Requests:
  {"op": "generate"}
      -> {"secret": str}
  {"op": "sign", "payload_hex": str, "secret": str, "timestamp": int}
      -> {"ok": true, "header": str} | {"ok": false, "code": str}
  {"op": "verify", "payload_hex": str, "header": str, "secret": str,
   "tolerance": int, "received_at": int}
      -> {"ok": true, "event": {...}} | {"ok": false, "code": str}
  {"op": "build_headers", "payload_hex": str, "secret": str, "timestamp": int,
   "event_id": str, "event_type": str, "webhook_id": str, "delivery_id": str}
      -> {"ok": true, "headers": {name: value}} | {"ok": false, "code": str}
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping

from rstream import webhooks
from rstream.errors import RstreamError


def to_plain(value: object) -> object:
    """Turns the SDK's read-only mappings and tuples back into JSON types."""
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


def failure(error: BaseException) -> dict[str, object]:
    if isinstance(error, RstreamError):
        return {"ok": False, "code": error.code}
    return {"ok": False, "code": f"PYTHON_EXCEPTION:{type(error).__name__}"}


def handle(request: Mapping[str, object]) -> dict[str, object]:
    op = request["op"]
    if op == "generate":
        return {"secret": webhooks.generate_signing_secret()}
    payload = bytes.fromhex(str(request.get("payload_hex", "")))
    try:
        if op == "sign":
            header = webhooks.sign_payload(
                payload, str(request["secret"]), int(request["timestamp"])
            )
            return {"ok": True, "header": header}
        if op == "verify":
            event = webhooks.verify_event(
                payload,
                str(request["header"]),
                str(request["secret"]),
                tolerance=int(request["tolerance"]),
                received_at=int(request["received_at"]),
            )
            return {
                "ok": True,
                "event": {
                    "id": event.id,
                    "type": event.type,
                    "created_at": event.created_at,
                    "user_id": event.user_id,
                    "workspace_id": event.workspace_id,
                    "project_id": event.project_id,
                    "cluster_id": event.cluster_id,
                    "object": to_plain(event.object),
                    "raw": to_plain(event.raw),
                },
            }
        if op == "build_headers":
            event = webhooks.WebhookEvent(
                id=str(request["event_id"]), type=str(request["event_type"])
            )
            headers = webhooks.build_headers(
                payload,
                event,
                str(request["secret"]),
                webhook_id=str(request["webhook_id"]),
                delivery_id=str(request["delivery_id"]),
                timestamp=int(request["timestamp"]),
            )
            return {"ok": True, "headers": dict(headers)}
    except Exception as error:  # reported to the Rust side, never swallowed
        return failure(error)
    raise SystemExit(f"unknown op {op!r}")


def main() -> None:
    requests = json.load(sys.stdin)
    json.dump([handle(r) for r in requests], sys.stdout)


if __name__ == "__main__":
    main()
