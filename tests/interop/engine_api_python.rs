//! Engine HTTP API interop with the official Python SDK
//! (`rstreamlabs-rstream[api,realtime]` 0.7): the Python client lists and
//! watches (SSE and WebSocket) this crate's [`LocalEngine`] and must see
//! the tunnels and clients this crate's client created.
//!
//! The interpreter comes from `RSTREAM_PYTHON` (`.ci/python-venv.sh` makes
//! one). Without it the tests fail, unless `RSTREAM_SKIP_PYTHON_INTEROP=1`
//! is set, in which case they say loudly that they skipped.
#![cfg(feature = "local-engine")]

use crate::support::{
    self,
    python::{self, Peer},
};

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rstream::api::{ListClientsParams, ListTunnelsParams, TunnelFilters};
use rstream::engine::LocalEngine;
use rstream::{Client, TunnelOptions};
use serde_json::Value;

const TOKEN: &str = "api-interop-token";
/// Bounds every wait for the Python peer.
const LIMIT: Duration = Duration::from_secs(60);

fn python() -> Option<PathBuf> {
    python::interpreter("Engine API Python interop")
}

/// Runs `engine_api_peer.py <command> --engine .. --ca .. --token .. <rest>`
/// (`args` is the command, then the rest).
fn spawn_peer(python: &Path, engine: &LocalEngine, args: &[&str]) -> Peer {
    let engine_address = engine.engine_address();
    let ca = engine.ca_file().to_string_lossy().into_owned();
    let mut all = vec![
        args[0],
        "--engine",
        &engine_address,
        "--ca",
        &ca,
        "--token",
        TOKEN,
        "--deadline",
        "50",
    ];
    all.extend_from_slice(&args[1..]);
    Peer::spawn(python, "engine_api_peer.py", &all, LIMIT)
}

fn client(engine: &LocalEngine) -> Client {
    support::options(engine)
        .token(TOKEN)
        .build()
        .expect("client")
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|s| s.as_str().expect("string").to_owned())
        .collect()
}

#[tokio::test]
async fn python_lists_what_rust_created() {
    let Some(python) = python() else { return };
    support::init_tracing();
    let engine = LocalEngine::builder().token(TOKEN).start().await.unwrap();
    let c = client(&engine);
    let control = c.connect().await.unwrap();
    let other = c.connect().await.unwrap();
    let _alpha = control
        .create_tunnel(
            TunnelOptions::new()
                .name("py-alpha")
                .label("service", "ssh"),
        )
        .await
        .unwrap();
    let _beta = control
        .create_tunnel(TunnelOptions::http().name("py-beta").label("team", "x"))
        .await
        .unwrap();
    let _gamma = other
        .create_tunnel(TunnelOptions::new().name("py-gamma"))
        .await
        .unwrap();
    let api = c.api();

    let queries: Vec<(&str, &str, ListTunnelsParams)> = vec![
        ("tunnels", "{}", ListTunnelsParams::new()),
        (
            "tunnels:any",
            r#"{"filters":{"labels":{"service":null}}}"#,
            TunnelFilters::new().label_any("service").into(),
        ),
        (
            "tunnels:published",
            r#"{"filters":{"publish":true}}"#,
            TunnelFilters::new().publish(true).into(),
        ),
        (
            "tunnels:client",
            &*Box::leak(
                format!(r#"{{"filters":{{"client_id":"{}"}}}}"#, other.client_id())
                    .into_boxed_str(),
            ),
            TunnelFilters::new().client_id(other.client_id()).into(),
        ),
        (
            "tunnels:name",
            r#"{"filters":{"name":"py-beta","status":"online"}}"#,
            TunnelFilters::new().name("py-beta").status("online").into(),
        ),
        (
            "tunnels:limit",
            r#"{"limit":2}"#,
            ListTunnelsParams::new().limit(2),
        ),
    ];
    let mut args = vec!["list".to_owned()];
    for (name, json, _) in &queries {
        args.push("--query".into());
        args.push(format!("{name}={json}"));
    }
    args.push("--query".into());
    args.push("clients={}".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut peer = spawn_peer(&python, &engine, &args);
    for (name, _, params) in queries {
        let listed = peer.expect("listed").await;
        assert_eq!(listed["query"], name);
        let ours: BTreeSet<String> = api
            .list_tunnels(params)
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(strings(&listed["ids"]), ours, "{name}");
        assert!(!ours.is_empty(), "{name}");
        for item in listed["items"].as_array().unwrap() {
            assert_eq!(item["status"], "online");
            assert!(item["client_id"].is_string());
        }
    }
    let listed = peer.expect("listed").await;
    let ours: BTreeSet<String> = api
        .list_clients(ListClientsParams::new())
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ours.len(), 2);
    assert_eq!(strings(&listed["ids"]), ours);
    peer.finish_ok().await;
}

async fn python_watches(transport: &str) {
    let Some(python) = python() else { return };
    support::init_tracing();
    let engine = LocalEngine::builder().token(TOKEN).start().await.unwrap();
    let c = client(&engine);
    let control = c.connect().await.unwrap();
    let existing = control
        .create_tunnel(
            TunnelOptions::new()
                .name("py-existing")
                .label("watched", "1"),
        )
        .await
        .unwrap();
    let _unwatched = control
        .create_tunnel(TunnelOptions::new().name("py-unwatched"))
        .await
        .unwrap();
    let mut peer = spawn_peer(
        &python,
        &engine,
        &[
            "watch",
            "--transport",
            transport,
            "--tunnels",
            r#"{"labels":{"watched":null}}"#,
        ],
    );
    let initial = peer.expect("watched").await;
    assert_eq!(initial["type"], "state.initial", "{initial}");
    let tunnels = initial["object"]["tunnels"].as_array().unwrap();
    assert_eq!(tunnels.len(), 1, "{initial}");
    assert_eq!(tunnels[0]["id"], existing.id());
    assert_eq!(tunnels[0]["name"], "py-existing");
    assert_eq!(initial["object"]["clients"][0]["id"], control.client_id());

    let second = c.connect().await.unwrap();
    let _skipped = second
        .create_tunnel(TunnelOptions::new().name("py-skipped"))
        .await
        .unwrap();
    let new = second
        .create_tunnel(TunnelOptions::new().name("py-new").label("watched", "2"))
        .await
        .unwrap();
    let new_id = new.id().to_owned();
    new.close().await.unwrap();
    second.close().await.unwrap();

    let mut seen = Vec::new();
    while let Some(v) = peer.next_event().await {
        assert_eq!(v["event"], "watched", "{v}");
        let kind = v["type"].as_str().unwrap().to_owned();
        let id = v["object"]["id"].as_str().unwrap_or_default().to_owned();
        seen.push((kind, id));
    }
    let second_id = second.client_id().to_owned();
    assert_eq!(
        seen,
        [
            ("client.created".to_owned(), second_id.clone()),
            ("tunnel.created".to_owned(), new_id.clone()),
            ("tunnel.deleted".to_owned(), new_id),
            ("client.deleted".to_owned(), second_id),
        ],
        "the Python watch over {transport}"
    );
    peer.finish_ok().await;
}

#[tokio::test]
async fn python_watches_over_sse() {
    python_watches("sse").await;
}

#[tokio::test]
async fn python_watches_over_websocket() {
    python_watches("websocket").await;
}
