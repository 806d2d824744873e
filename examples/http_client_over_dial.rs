//! hyper-util's pooled client over private dials: the URI host is the
//! tunnel name, every new pooled connection is a dial.
//!
//! ```text
//! cargo run --example http_client_over_dial
//! ```

use std::future::IntoFuture;

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use rstream::engine::LocalEngine;
use rstream::error::code;
use rstream::{Client, TlsOptions, TunnelOptions};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // The engine configured by the environment (RSTREAM_ENGINE,
    // RSTREAM_AUTHENTICATION_TOKEN, RSTREAM_CA_FILE, ~/.rstream/config.yaml),
    // or, when none is, a local engine in this process.
    let (client, _local_engine) = match Client::from_env() {
        Err(e) if e.code() == code::ENGINE_REQUIRED => {
            let engine = LocalEngine::builder().start().await?;
            let tls = TlsOptions::new().add_ca_pem(engine.ca_pem().as_bytes())?;
            let client = Client::builder()
                .engine(engine.engine_address())
                .tls(tls)
                .build()?;
            (client, Some(engine))
        }
        configured => (configured?, None),
    };
    let control = client.connect().await?;
    let tunnel = control
        .create_tunnel(TunnelOptions::new().name("inventory-api"))
        .await?;
    let app = Router::new().route("/items", get(|| async { r#"["apple","pear"]"# }));
    tokio::spawn(rstream::http::serve(tunnel, app).into_future());

    let http =
        HttpClient::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(client.connector());
    for _ in 0..3 {
        let rsp = http.get("http://inventory-api/items".parse()?).await?;
        let status = rsp.status();
        let body = rsp.into_body().collect().await?.to_bytes();
        println!(
            "GET http://inventory-api/items -> {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    control.close().await?;
    Ok(())
}
