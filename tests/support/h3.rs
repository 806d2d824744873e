//! A real HTTP/3 client for the tests: quinn + h3 + h3-quinn, trusting a
//! given CA, on any quinn endpoint (a UDP socket, or a datagram channel).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use http::{HeaderMap, Method, Request, StatusCode};

use super::within;

/// The client side of one HTTP/3 connection.
pub struct H3Client {
    send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    driver: tokio::task::JoinHandle<()>,
    pub conn: quinn::Connection,
}

/// What a request got back, read to the end.
pub struct H3Response {
    pub status: StatusCode,
    pub body: Vec<u8>,
    pub trailers: Option<HeaderMap>,
}

/// A quinn client configuration offering ALPN `h3`, trusting `ca_pem`.
pub fn h3_client_config(ca_pem: &str) -> quinn::ClientConfig {
    let tls = super::tls_config(ca_pem, &[b"h3"]);
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("QUIC TLS");
    quinn::ClientConfig::new(Arc::new(crypto))
}

impl H3Client {
    /// Connects `endpoint` to `addr` (certificate name `server_name`) and
    /// starts HTTP/3 on the connection.
    pub async fn connect(
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
        server_name: &str,
        ca_pem: &str,
    ) -> H3Client {
        let connecting = endpoint
            .connect_with(h3_client_config(ca_pem), addr, server_name)
            .expect("connect");
        let conn = within("QUIC handshake", connecting)
            .await
            .expect("QUIC handshake");
        let (mut driver, send) = within(
            "h3 client",
            h3::client::new(h3_quinn::Connection::new(conn.clone())),
        )
        .await
        .expect("h3 client");
        let driver = tokio::spawn(async move {
            let _ = driver.wait_idle().await;
        });
        H3Client { send, driver, conn }
    }

    /// Opens a request and sends its head; the body is up to the caller.
    pub async fn open(
        &mut self,
        method: Method,
        path: &str,
    ) -> h3::client::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes> {
        self.try_open(method, path).await.expect("send_request")
    }

    /// [`open`](Self::open), for a request that may be refused (e.g.
    /// after the server's GOAWAY).
    pub async fn try_open(
        &mut self,
        method: Method,
        path: &str,
    ) -> Result<h3::client::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>, h3::error::StreamError>
    {
        let request = Request::builder()
            .method(method)
            .uri(format!("https://localhost{path}"))
            .body(())
            .expect("request");
        within("h3 send_request", self.send.send_request(request)).await
    }

    /// One request with `body`, the answer read whole.
    pub async fn request(&mut self, method: Method, path: &str, body: &[u8]) -> H3Response {
        let mut stream = self.open(method, path).await;
        if !body.is_empty() {
            within(
                "h3 send_data",
                stream.send_data(Bytes::copy_from_slice(body)),
            )
            .await
            .expect("send_data");
        }
        within("h3 finish", stream.finish()).await.expect("finish");
        let response = within("h3 response", stream.recv_response())
            .await
            .expect("response");
        let mut out = Vec::new();
        while let Some(mut chunk) = within("h3 body", stream.recv_data()).await.expect("body") {
            while chunk.has_remaining() {
                let part = chunk.chunk();
                out.extend_from_slice(part);
                let n = part.len();
                chunk.advance(n);
            }
        }
        let trailers = within("h3 trailers", stream.recv_trailers())
            .await
            .expect("trailers");
        H3Response {
            status: response.status(),
            body: out,
            trailers,
        }
    }

    /// Closes the connection (H3_NO_ERROR).
    pub fn close(self) {
        self.conn.close(0x100u32.into(), b"done");
        self.driver.abort();
    }
}
