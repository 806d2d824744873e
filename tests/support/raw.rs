//! A raw engine-side client: TLS to the engine port and hand-written
//! protocol frames, for tests that must say what the SDK would not.

use std::time::Duration;

use rstream::engine::LocalEngine;
use rstream::proto::{self, message::Payload, read_frame, write_frame, ClientDetails, Message};
use rstream::transport::{ClientIdentity, Endpoint, EngineStream, TlsDialer, TlsOptions};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

/// Bounds each single step of a raw exchange (a dial, a frame, a close).
pub const STEP: Duration = Duration::from_secs(5);

/// The details a raw client announces, as `agent`, with `token` if any.
pub fn details(agent: &str, token: Option<&str>) -> ClientDetails {
    ClientDetails {
        agent: Some(agent.into()),
        channel: Some("test".into()),
        version: Some("0.0.0".into()),
        os: Some("linux".into()),
        arch: Some("x86_64".into()),
        token: token.map(str::to_owned),
        protocol_version: Some(proto::PROTOCOL_VERSION.into()),
    }
}

/// A TLS connection to `addr` (`127.0.0.1:PORT`) trusting `engine`'s CA,
/// offering `alpn`, presenting `identity` if any.
pub async fn dial_addr(
    engine: &LocalEngine,
    addr: &str,
    alpn: &[&[u8]],
    identity: Option<ClientIdentity>,
) -> EngineStream {
    let mut tls = TlsOptions::new()
        .add_ca_pem(engine.ca_pem().as_bytes())
        .unwrap();
    if let Some(identity) = identity {
        tls = tls.client_identity(identity);
    }
    let config = tls.client_config(alpn).unwrap();
    let endpoint = Endpoint::parse(addr).unwrap();
    TlsDialer::new(config, STEP)
        .connect(&endpoint, "127.0.0.1")
        .await
        .unwrap()
}

/// A TLS connection to `engine`'s engine port speaking the rstream ALPN,
/// presenting `identity` if any.
pub async fn dial(engine: &LocalEngine, identity: Option<ClientIdentity>) -> EngineStream {
    dial_addr(engine, &engine.engine_address(), &[proto::ALPN], identity).await
}

/// Writes one frame carrying `payload`.
pub async fn send<S: AsyncWrite + Unpin>(conn: &mut S, payload: Payload) {
    write_frame(conn, &Message::new(payload)).await.unwrap();
}

/// Reads one frame within [`STEP`]; panics on a close or an empty message.
pub async fn recv<S: AsyncRead + Unpin>(conn: &mut S) -> Payload {
    tokio::time::timeout(STEP, read_frame(conn))
        .await
        .unwrap_or_else(|_| panic!("timed out: a frame"))
        .unwrap()
        .expect("connection closed")
        .payload
        .expect("empty message")
}

/// Reads until EOF or an error within [`STEP`]; panics if data or nothing
/// comes in time.
pub async fn expect_closed<S: AsyncRead + Unpin>(conn: &mut S) {
    expect_closed_within(conn, STEP).await;
}

/// [`expect_closed`] with its own bound.
pub async fn expect_closed_within<S: AsyncRead + Unpin>(conn: &mut S, limit: Duration) {
    let mut buf = [0u8; 256];
    match tokio::time::timeout(limit, conn.read(&mut buf)).await {
        Ok(Ok(0) | Err(_)) => {}
        Ok(Ok(n)) => panic!("expected a closed connection, got {n} bytes"),
        Err(_) => panic!("timed out: the connection to close (the engine kept it open)"),
    }
}
