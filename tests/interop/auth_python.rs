//! Access-control interop with the official Python SDK: it passes tokens as
//! opaque strings, so an app token minted by this crate (`rstream::auth`)
//! must open its control channel, and scope its Engine API calls, against
//! this crate's local engine with the application registered.
//!
//! Same interpreter rules as the other interop modules (`RSTREAM_PYTHON`).
#![cfg(feature = "local-engine")]

use crate::support::{
    self,
    python::{self, Peer},
};

use std::path::Path;
use std::time::Duration;

use rstream::auth::{AppCredentials, AppPublicKey, Resources, TokenRequest, TunnelScopes};
use rstream::engine::LocalEngine;

/// Bounds every wait for the Python peer.
const LIMIT: Duration = Duration::from_secs(60);

async fn engine(creds: &AppCredentials) -> LocalEngine {
    support::init_tracing();
    let key = AppPublicKey::from_pem(&creds.public_key_pem().unwrap()).unwrap();
    LocalEngine::builder()
        .app(creds.client_id(), key)
        .start()
        .await
        .unwrap()
}

fn spawn(python: &Path, script: &str, engine: &LocalEngine, token: &str, args: &[&str]) -> Peer {
    let engine_address = engine.engine_address();
    let ca = engine.ca_file().to_string_lossy().into_owned();
    let mut all = vec![
        args[0],
        "--engine",
        &engine_address,
        "--ca",
        &ca,
        "--token",
        token,
        "--deadline",
        "50",
    ];
    all.extend_from_slice(&args[1..]);
    Peer::spawn(python, script, &all, LIMIT)
}

/// The Python SDK serves a private tunnel with a token our SDK minted (10
/// minutes, create scope only); a Rust client with the same credentials
/// dials it.
#[tokio::test]
async fn python_agent_uses_a_minted_token() {
    let Some(python) = python::interpreter("auth Python interop") else {
        return;
    };
    let creds = AppCredentials::generate("py-backend").unwrap();
    let engine = engine(&creds).await;
    let token = creds
        .mint(
            &TokenRequest::new()
                .expires_in(Duration::from_secs(600))
                .resources(Resources::tunnels(TunnelScopes::new().create_any())),
        )
        .unwrap();
    let mut peer = spawn(
        &python,
        "python_peer.py",
        &engine,
        token.expose(),
        &["serve", "--private", "py-minted"],
    );
    let tunnel = peer.expect("tunnel").await;
    assert_eq!(tunnel["name"], "py-minted");
    peer.expect("ready").await;

    let client = support::options(&engine)
        .app_credentials(creds.clone())
        .build()
        .unwrap();
    let mut stream = support::within("dial", client.dial("py-minted"))
        .await
        .unwrap();
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut reader = tokio::io::BufReader::new(&mut stream);
    let mut banner = String::new();
    support::within("banner", reader.read_line(&mut banner))
        .await
        .unwrap();
    assert_eq!(banner, "python py-minted\n");
    stream.shutdown().await.unwrap();
    let events = peer.finish_ok().await;
    assert!(events
        .iter()
        .any(|e| e["event"] == "closed" && e["clean"] == true));
}

/// The Python SDK's Engine API calls with our minted tokens see the scoped
/// view: a list-only token lists, a create-only token is refused (403).
#[tokio::test]
async fn python_api_calls_see_the_scoped_view() {
    let Some(python) = python::interpreter("auth Python interop") else {
        return;
    };
    let creds = AppCredentials::generate("py-backend").unwrap();
    let engine = engine(&creds).await;
    let owner = support::options(&engine)
        .app_credentials(creds.clone())
        .build()
        .unwrap();
    let control = owner.connect().await.unwrap();
    let _tunnel = control
        .create_tunnel(rstream::TunnelOptions::new().name("visible"))
        .await
        .unwrap();

    let list_only = creds
        .mint(&TokenRequest::new().resources(Resources::tunnels(TunnelScopes::new().list_any())))
        .unwrap();
    let mut peer = spawn(
        &python,
        "engine_api_peer.py",
        &engine,
        list_only.expose(),
        &["list", "--query", "tunnels={}"],
    );
    let listed = peer.expect("listed").await;
    assert!(
        listed["names"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "visible"),
        "{listed}"
    );
    peer.finish_ok().await;

    let create_only = creds
        .mint(&TokenRequest::new().resources(Resources::tunnels(TunnelScopes::new().create_any())))
        .unwrap();
    let mut peer = spawn(
        &python,
        "engine_api_peer.py",
        &engine,
        create_only.expose(),
        &["list", "--query", "tunnels={}"],
    );
    let failed = peer.expect("list_failed").await;
    assert!(failed["error"].to_string().contains("403"), "{failed}");
    let _ = peer.finish().await;
    control.close().await.unwrap();
}
