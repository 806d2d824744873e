//! Hostile peers of the engine port: sockets that never prove anything,
//! alone or as a flood that reopens each socket as soon as the engine
//! closes it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rstream::engine::LocalEngine;
use rstream::proto::{self, message::Payload, Message, OpenControlChannelReq};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;

/// What a hostile socket does once connected, before waiting to be closed.
#[derive(Clone, Copy, Debug)]
pub enum Idle {
    /// Nothing: never starts TLS.
    Tcp,
    /// Completes TLS offering these ALPN protocols (none: no ALPN), then
    /// sends nothing.
    Tls(&'static [&'static [u8]]),
    /// Completes TLS (`rstrm/1`) and asks for a control channel without a
    /// token, then waits.
    NoToken,
}

/// A TLS connection to the engine port, trusting the engine's CA.
pub async fn engine_tls(
    engine: &LocalEngine,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    super::tls_connect(
        &format!("https://{}", engine.engine_address()),
        engine.ca_pem(),
        alpn,
    )
    .await
}

/// Waits until the peer closes `io` (EOF or an error; data is skipped) and
/// returns how long that took. Panics after `limit`.
pub async fn closed_after<S: AsyncRead + Unpin>(io: &mut S, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(limit, async {
        while let Ok(n) = io.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("still open after {limit:?}"));
    started.elapsed()
}

/// A flood of `sockets` hostile connections to the engine port, each
/// reopened as soon as the engine closes it, until [`Flood::stop`] or
/// `max_opened` connections or `max_time` (whichever comes first).
pub struct Flood {
    stop: Arc<AtomicBool>,
    opened: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Flood {
    pub async fn start(
        engine: &LocalEngine,
        sockets: usize,
        idle: Idle,
        max_opened: usize,
        max_time: Duration,
    ) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let opened = Arc::new(AtomicUsize::new(0));
        let until = Instant::now() + max_time;
        let addr = engine.local_addr();
        let tls = super::tls_config(
            engine.ca_pem(),
            match idle {
                Idle::Tls(alpn) => alpn,
                Idle::NoToken => &[proto::ALPN],
                Idle::Tcp => &[],
            },
        );
        let mut tasks = Vec::new();
        let (ready_tx, mut ready) = tokio::sync::mpsc::channel(sockets.max(1));
        for _ in 0..sockets {
            let (stop, opened, tls, ready) =
                (stop.clone(), opened.clone(), tls.clone(), ready_tx.clone());
            tasks.push(tokio::spawn(async move {
                let mut ready = Some(ready);
                while !stop.load(Ordering::Relaxed)
                    && Instant::now() < until
                    && opened.fetch_add(1, Ordering::Relaxed) < max_opened
                {
                    let _ = hold(addr, idle, tls.clone(), &mut ready).await;
                    // In place (or refused) once: the caller stops waiting.
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(()).await;
                    }
                }
            }));
        }
        drop(ready_tx);
        // Every socket open (and past TLS, or refused) once: the flood is
        // in place.
        for _ in 0..sockets {
            let _ = ready.recv().await;
        }
        Flood {
            stop,
            opened,
            tasks,
        }
    }

    /// How many connections the flood opened so far.
    pub fn opened(&self) -> usize {
        self.opened.load(Ordering::Relaxed)
    }

    /// Stops reopening and closes every socket.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One hostile connection, held until the engine closes it.
async fn hold(
    addr: std::net::SocketAddr,
    idle: Idle,
    tls: Arc<rustls::ClientConfig>,
    ready: &mut Option<tokio::sync::mpsc::Sender<()>>,
) -> std::io::Result<()> {
    let mut tcp = TcpStream::connect(addr).await?;
    let signal = |ready: &mut Option<tokio::sync::mpsc::Sender<()>>| {
        let ready = ready.take();
        async move {
            if let Some(ready) = ready {
                let _ = ready.send(()).await;
            }
        }
    };
    if let Idle::Tcp = idle {
        signal(ready).await;
        let mut buf = [0u8; 64];
        while tcp.read(&mut buf).await? > 0 {}
        return Ok(());
    }
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("server name");
    let mut tls = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await?;
    if let Idle::NoToken = idle {
        let req = OpenControlChannelReq {
            client_details: Some(proto::ClientDetails {
                protocol_version: Some(proto::PROTOCOL_VERSION.into()),
                ..Default::default()
            }),
            liveness: None,
        };
        let msg = Message::new(Payload::OpenControlChannelReq(req));
        proto::write_frame(&mut tls, &msg)
            .await
            .map_err(std::io::Error::other)?;
    }
    signal(ready).await;
    let mut buf = [0u8; 4096];
    while tls.read(&mut buf).await? > 0 {}
    Ok(())
}
