//! hyper-util's pooled client over private dials: the URI host is the
//! tunnel name, every new pooled connection is a dial.
//!
//! ```text
//! cargo run --example http_client_over_dial
//! ```

mod support;

use std::future::IntoFuture;

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use rstream::TunnelOptions;

#[tokio::main]
async fn main() -> Result<(), support::BoxError> {
    let setup = support::setup().await?;
    let control = setup.client.connect().await?;
    let tunnel = control
        .create_tunnel(TunnelOptions::new().name("inventory-api"))
        .await?;
    let app = Router::new().route("/items", get(|| async { r#"["apple","pear"]"# }));
    tokio::spawn(rstream::http::serve(tunnel, app).into_future());

    let http = HttpClient::builder(TokioExecutor::new())
        .build::<_, Empty<Bytes>>(setup.client.connector());
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
