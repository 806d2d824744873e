//! A token-minting endpoint: your backend holds the app credentials and
//! hands a browser a 60 s, list-only token for the engine's `/api/sse`
//! (`?rstream.token=`), so the browser can watch tunnels and do nothing
//! else.
//!
//! ```text
//! # a credential pair and an engine that trusts it:
//! rstream-local-engine --new-app-credentials demo=demo.pem   # prints the exports
//! rstream-local-engine --app demo=demo.pem                   # prints RSTREAM_ENGINE=...
//! export RSTREAM_CLIENT_ID=... RSTREAM_CLIENT_SECRET=... RSTREAM_ENGINE=127.0.0.1:PORT
//! PORT=3000 cargo run --example token_endpoint
//! curl -s localhost:3000/rstream/token
//! # {"token":"eyJ...","expires_in":60,"sse_url":"https://127.0.0.1:PORT/api/sse?rstream.token=eyJ..."}
//! ```
//!
//! Without RSTREAM_CLIENT_ID/SECRET, throwaway credentials are generated and
//! their public key printed (register it with `--app`). Put your own user
//! authentication in front of the route: whoever can call it can watch.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use rstream::auth::{AppCredentials, Resources, TokenRequest, TunnelScopes};
use serde_json::{json, Value};

/// What the route needs: the credentials and the engine address.
struct Minter {
    credentials: AppCredentials,
    engine: String,
}

/// `GET /rstream/token`: a fresh list-only token, 60 s.
async fn token(State(minter): State<Arc<Minter>>) -> Result<Json<Value>, StatusCode> {
    let request = TokenRequest::new()
        .expires_in(Duration::from_secs(60))
        .permissions(["tunnels.resources.read-only"])
        .engine(&minter.engine)
        .resources(Resources::tunnels(TunnelScopes::new().list_any()));
    // The secret never reaches the browser; the error never echoes it.
    let token = minter.credentials.mint(&request).map_err(|e| {
        eprintln!("mint failed: {e}");
        StatusCode::INTERNAL_SERVER_ERROR
    })?;
    let token = token.expose();
    Ok(Json(json!({
        "token": token,
        "expires_in": 60,
        "sse_url": format!("https://{}/api/sse?rstream.token={token}", minter.engine),
    })))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let credentials = match AppCredentials::from_env()? {
        Some(credentials) => credentials,
        None => {
            let credentials = AppCredentials::generate("token-endpoint-demo")?;
            eprintln!(
                "no RSTREAM_CLIENT_ID/SECRET: generated client id {:?}; register this key with --app:\n{}",
                credentials.client_id(),
                credentials.public_key_pem()?
            );
            credentials
        }
    };
    let engine = std::env::var("RSTREAM_ENGINE").unwrap_or_else(|_| "127.0.0.1:7443".into());
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let app = Router::new()
        .route("/rstream/token", get(token))
        .with_state(Arc::new(Minter {
            credentials,
            engine,
        }));
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    println!("minting on http://{}/rstream/token", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
