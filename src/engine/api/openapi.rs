//! `GET /api/openapi.json`: an OpenAPI 3.1 description of exactly what
//! this engine serves.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::header;
use serde_json::{json, Value};

use super::Engine;

/// The content type of the document (ENGINE_API.md §3).
const CONTENT_TYPE: &str = "application/vnd.oai.openapi+json;version=3.1";

pub(super) async fn document(State(inner): State<Engine>) -> Response {
    let mut doc = spec();
    if inner.config.client_ca_enabled() {
        if let Some(paths) = doc["paths"].as_object_mut() {
            paths.insert("/.well-known/rstream/engine".into(), discovery_path());
        }
    }
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        serde_json::to_string(&doc).unwrap_or_default(),
    )
        .into_response()
}

/// The discovery route, served when the engine accepts client certificates.
fn discovery_path() -> Value {
    json!({ "get": {
        "operationId": "discoverEngine",
        "summary": "mTLS Engine API discovery",
        "description": "Where agents authenticating with a client certificate call the API (`mtlsApiUrl`). Cacheable per Cache-Control.",
        "security": [],
        "responses": { "200": { "description": "The discovery document.", "content": { "application/json": { "schema": {
            "type": "object",
            "required": ["version", "projectEndpoint", "capabilities", "mtlsApiUrl"],
            "properties": {
                "version": { "type": "integer", "const": 1 },
                "projectEndpoint": { "type": "string" },
                "capabilities": { "type": "array", "items": { "type": "string" } },
                "mtlsApiUrl": { "type": "string", "format": "uri" }
            }
        } } } } }
    } })
}

fn params(schema: &str, description: &str) -> Value {
    json!({
        "name": "params",
        "in": "query",
        "required": false,
        "description": description,
        "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } }
    })
}

fn text_error(description: &str) -> Value {
    json!({ "description": description, "content": { "text/plain": { "schema": { "type": "string" } } } })
}

fn errors() -> Value {
    json!({
        "400": text_error("Validation failed (malformed `params`)."),
        "401": text_error("Authentication required."),
        "403": text_error("Token not authorized.")
    })
}

fn with_errors(mut responses: Value) -> Value {
    if let (Some(map), Value::Object(errs)) = (responses.as_object_mut(), errors()) {
        map.extend(errs);
    }
    responses
}

fn labels_filter() -> Value {
    json!({
        "type": "object",
        "description": "Label conditions: a string must match exactly, null means the key exists with any value.",
        "additionalProperties": { "type": ["string", "null"] }
    })
}

fn string_props(keys: &[&str]) -> serde_json::Map<String, Value> {
    keys.iter()
        .map(|k| ((*k).to_owned(), json!({ "type": "string" })))
        .collect()
}

/// The document.
pub(super) fn spec() -> Value {
    let mut tunnel_filters = string_props(&[
        "id",
        "name",
        "type",
        "status",
        "client_id",
        "user_id",
        "protocol",
        "hostname",
        "http_version",
    ]);
    tunnel_filters.insert("publish".into(), json!({ "type": "boolean" }));
    tunnel_filters.insert("labels".into(), labels_filter());
    let mut client_filters = string_props(&[
        "id",
        "status",
        "user_id",
        "agent",
        "channel",
        "version",
        "os",
        "arch",
        "protocol_version",
    ]);
    client_filters.insert("labels".into(), labels_filter());

    let mut client = string_props(&[
        "user_id",
        "workspace_id",
        "project_id",
        "cluster_id",
        "plan",
        "provider",
        "region",
        "agent",
        "channel",
        "version",
        "os",
        "arch",
        "protocol_version",
    ]);
    client.insert("id".into(), json!({ "type": "string" }));
    client.insert(
        "status".into(),
        json!({ "$ref": "#/components/schemas/Status" }),
    );
    client.insert(
        "labels".into(),
        json!({ "type": "object", "additionalProperties": { "type": "string" } }),
    );

    let mut tunnel = string_props(&[
        "id",
        "client_id",
        "user_id",
        "workspace_id",
        "project_id",
        "cluster_id",
        "plan",
        "provider",
        "region",
        "name",
        "host",
        "hostname",
        "tls_min_version",
    ]);
    tunnel.insert(
        "status".into(),
        json!({ "$ref": "#/components/schemas/Status" }),
    );
    tunnel.insert(
        "creation_date".into(),
        json!({ "type": "string", "format": "date-time" }),
    );
    tunnel.insert(
        "type".into(),
        json!({ "type": "string", "enum": ["bytestream", "datagram"] }),
    );
    tunnel.insert(
        "protocol".into(),
        json!({ "type": "string", "enum": ["tls", "dtls", "quic", "http", "tcp", "webtty"] }),
    );
    tunnel.insert(
        "tls_mode".into(),
        json!({ "type": "string", "enum": ["passthrough", "terminated"] }),
    );
    tunnel.insert(
        "http_version".into(),
        json!({ "type": "string", "enum": ["http/1.1", "h2", "h2c", "h3"] }),
    );
    tunnel.insert(
        "port".into(),
        json!({ "type": "integer", "minimum": 1, "maximum": 65535 }),
    );
    tunnel.insert(
        "labels".into(),
        json!({ "type": "object", "additionalProperties": { "type": "string" } }),
    );
    for list in ["geo_ip", "trusted_ips", "tls_alpns", "tls_ciphers"] {
        tunnel.insert(
            list.into(),
            json!({ "type": "array", "items": { "type": "string" } }),
        );
    }
    for flag in [
        "publish",
        "mtls_auth",
        "http_use_tls",
        "upstream_tls",
        "token_auth",
        "rstream_auth",
        "challenge_mode",
        "datagram_guaranteed_delivery",
        "allow_cross_region_routing",
    ] {
        tunnel.insert(flag.into(), json!({ "type": "boolean" }));
    }

    let bearer = json!([{ "bearerAuth": [] }, { "clientCertificate": [] }]);
    let streaming =
        json!([{ "bearerAuth": [] }, { "queryToken": [] }, { "clientCertificate": [] }]);
    let health = |status: &str| {
        json!({
            "type": "object",
            "required": ["status"],
            "properties": { "status": { "type": "string", "examples": [status] } }
        })
    };

    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "rstream Engine API (local engine)",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Live inventory, real-time watch and health of an rstream engine, as served by the rstream Rust SDK's local engine. The configured engine is RSTREAM_ENGINE."
        },
        "servers": [{ "url": "/" }],
        "security": bearer,
        "paths": {
            "/api/clients": { "get": {
                "operationId": "listClients",
                "summary": "List connected clients",
                "parameters": [params("ListClientsParams", "JSON: {\"limit\"?: int>=1, \"filters\"?: ClientFilters}")],
                "responses": with_errors(json!({ "200": { "description": "The clients, oldest first.",
                    "content": { "application/json": { "schema": { "type": "array", "items": { "$ref": "#/components/schemas/Client" } } } } } }))
            } },
            "/api/clients/{id}": { "get": {
                "operationId": "getClient",
                "summary": "Get one client",
                "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }],
                "responses": with_errors(json!({
                    "200": { "description": "The client.", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Client" } } } },
                    "404": text_error("No such client.")
                }))
            } },
            "/api/tunnels": { "get": {
                "operationId": "listTunnels",
                "summary": "List open tunnels",
                "parameters": [params("ListTunnelsParams", "JSON: {\"limit\"?: int>=1, \"filters\"?: TunnelFilters}")],
                "responses": with_errors(json!({ "200": { "description": "The tunnels, oldest first.",
                    "content": { "application/json": { "schema": { "type": "array", "items": { "$ref": "#/components/schemas/Tunnel" } } } } } }))
            } },
            "/api/tunnels/{id}": { "get": {
                "operationId": "getTunnel",
                "summary": "Get one tunnel",
                "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }],
                "responses": with_errors(json!({
                    "200": { "description": "The tunnel.", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Tunnel" } } } },
                    "404": text_error("No such tunnel.")
                }))
            } },
            "/api/sse": { "get": {
                "operationId": "watchSse",
                "summary": "Watch clients and tunnels (Server-Sent Events)",
                "description": "One `data:` line per Event: `state.initial` first (filtered like the lists), then deltas in order. `: keepalive` comments every 15 s. A subscriber that falls too far behind is disconnected.",
                "security": streaming,
                "parameters": [params("WatchParams", "JSON: {\"clients\"?: ClientFilters, \"tunnels\"?: TunnelFilters}")],
                "responses": with_errors(json!({ "200": { "description": "The event stream.",
                    "content": { "text/event-stream": { "schema": { "type": "string" } } } } }))
            } },
            "/api/websocket": { "get": {
                "operationId": "watchWebSocket",
                "summary": "Watch clients and tunnels (WebSocket)",
                "description": "Each text frame is one Event (`state.initial` first). The client may ping; it never sends data. A subscriber that falls too far behind is closed with code 1013.",
                "security": streaming,
                "parameters": [params("WatchParams", "JSON: {\"clients\"?: ClientFilters, \"tunnels\"?: TunnelFilters}")],
                "responses": with_errors(json!({ "101": { "description": "Switching to WebSocket; each frame is an Event.",
                    "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Event" } } } } }))
            } },
            "/api/auth": { "get": {
                "operationId": "checkAuth",
                "summary": "Check the token",
                "responses": { "204": { "description": "The token is accepted." },
                    "401": text_error("Authentication required."), "403": text_error("Token not authorized.") }
            } },
            "/api/health/live": { "get": {
                "operationId": "live", "summary": "Liveness", "security": [],
                "responses": { "200": { "description": "Live.", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Health" } } } } }
            } },
            "/api/health/ready": { "get": {
                "operationId": "ready", "summary": "Readiness", "security": [],
                "responses": {
                    "200": { "description": "Ready.", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Health" } } } },
                    "503": { "description": "Not ready (`unavailable`).", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Health" } } } }
                }
            } },
            "/api/openapi.json": { "get": {
                "operationId": "openapi", "summary": "This document", "security": [],
                "responses": { "200": { "description": "OpenAPI 3.1.", "content": { "application/vnd.oai.openapi+json;version=3.1": { "schema": { "type": "object" } } } } }
            } }
        },
        "components": {
            "securitySchemes": {
                "bearerAuth": { "type": "http", "scheme": "bearer", "description": "One of the engine's tokens." },
                "clientCertificate": { "type": "mutualTLS", "description": "A client certificate issued by one of the engine's client CAs (mTLS engines only)." },
                "queryToken": { "type": "apiKey", "in": "query", "name": "rstream.token",
                    "description": "Fallback for browsers, on /api/sse and /api/websocket only; prefer bearerAuth." }
            },
            "schemas": {
                "Status": { "type": "string", "enum": ["online", "offline"] },
                "Health": health("live"),
                "Client": { "type": "object", "required": ["id", "status"], "properties": client },
                "Tunnel": { "type": "object", "required": ["id", "client_id", "status"], "properties": tunnel },
                "TunnelFilters": { "type": "object", "additionalProperties": false, "properties": tunnel_filters },
                "ClientFilters": { "type": "object", "additionalProperties": false, "properties": client_filters },
                "ListTunnelsParams": { "type": "object", "additionalProperties": false, "properties": {
                    "limit": { "type": "integer", "minimum": 1 },
                    "filters": { "$ref": "#/components/schemas/TunnelFilters" } },
                    "examples": [{ "filters": { "labels": { "service": "ssh", "env": "prod" } } }] },
                "ListClientsParams": { "type": "object", "additionalProperties": false, "properties": {
                    "limit": { "type": "integer", "minimum": 1 },
                    "filters": { "$ref": "#/components/schemas/ClientFilters" } },
                    "examples": [{ "limit": 10, "filters": { "agent": "rstream", "channel": "stable" } }] },
                "WatchParams": { "type": "object", "additionalProperties": false, "properties": {
                    "clients": { "$ref": "#/components/schemas/ClientFilters" },
                    "tunnels": { "$ref": "#/components/schemas/TunnelFilters" } },
                    "examples": [{ "clients": { "agent": "rstream" }, "tunnels": { "labels": { "service": "ssh" } } }] },
                "InitialState": { "type": "object", "required": ["snapshot_at", "clients", "tunnels"], "properties": {
                    "snapshot_at": { "type": "string", "format": "date-time" },
                    "clients": { "type": "array", "items": { "$ref": "#/components/schemas/Client" } },
                    "tunnels": { "type": "array", "items": { "$ref": "#/components/schemas/Tunnel" } } } },
                "Event": { "type": "object", "required": ["type", "object"], "properties": {
                    "type": { "type": "string", "enum": ["state.initial", "client.created", "client.updated", "client.deleted", "tunnel.created", "tunnel.updated", "tunnel.deleted"] },
                    "id": { "type": "string" },
                    "created_at": { "type": "string", "format": "date-time" },
                    "user_id": { "type": "string" },
                    "workspace_id": { "type": "string" },
                    "project_id": { "type": "string" },
                    "cluster_id": { "type": "string" },
                    "object": { "oneOf": [
                        { "$ref": "#/components/schemas/InitialState" },
                        { "$ref": "#/components/schemas/Client" },
                        { "$ref": "#/components/schemas/Tunnel" } ] } } }
            }
        }
    })
}
