//! A minimal HTTP CONNECT proxy stub (HTTP/1.1 `CONNECT host:port`, optional
//! Basic auth, byte relay), shared by the client tests that send
//! control-plane calls, control channels and dials through a proxy.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy saw.
#[derive(Clone, Default)]
pub struct ProxyLog {
    /// Each accepted CONNECT target (`host:port`), in order.
    pub targets: Arc<Mutex<Vec<String>>>,
}

/// Starts a minimal CONNECT proxy: checks basic auth (when `creds` is set), then
/// relays bytes. Targets under `.engine.test` are sent to `engine`.
pub async fn start(
    creds: Option<&'static str>,
    engine: Option<SocketAddr>,
) -> (SocketAddr, ProxyLog) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = ProxyLog::default();
    let log2 = log.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let log = log2.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                    match inbound.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let mut lines = head.split("\r\n");
                let request_line = lines.next().unwrap_or_default().to_owned();
                let mut parts = request_line.split(' ');
                let (Some("CONNECT"), Some(target)) = (parts.next(), parts.next()) else {
                    let _ = inbound
                        .write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
                        .await;
                    return;
                };
                if let Some(creds) = creds {
                    let want = format!("proxy-authorization: basic {}", STANDARD.encode(creds))
                        .to_lowercase();
                    if !lines.any(|l| l.to_lowercase() == want) {
                        let _ = inbound
                            .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n")
                            .await;
                        return;
                    }
                }
                log.targets.lock().unwrap().push(target.to_owned());
                let host = target.rsplit_once(':').map_or(target, |(h, _)| h);
                let upstream = match engine {
                    Some(engine) if host.ends_with(".engine.test") => {
                        TcpStream::connect(engine).await
                    }
                    _ => TcpStream::connect(target).await,
                };
                let Ok(mut upstream) = upstream else {
                    let _ = inbound.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                    return;
                };
                if inbound
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut upstream).await;
            });
        }
    });
    (addr, log)
}
