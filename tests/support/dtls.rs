//! A real DTLS client for published `dtls` tunnels: dimpl in the client
//! role, driven over a tokio `UdpSocket`, that checks the server's
//! certificate against a CA as any DTLS client should (webpki, for
//! `localhost`) before it sends its last flight: a client that does not
//! trust the engine never completes the handshake. Also `openssl
//! s_client -dtls1_2` as an independent peer.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dimpl::{Dtls, DtlsCertificate, Output};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

/// Which DTLS version the client offers.
#[derive(Clone, Copy, Debug)]
pub enum Version {
    /// DTLS 1.2 only.
    V12,
    /// DTLS 1.3 only.
    V13,
    /// Both (a hybrid hello: the server picks).
    Auto,
}

/// What the session delivers.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    Data(Vec<u8>),
    CloseNotify,
    Failed(String),
}

enum Cmd {
    Send(Vec<u8>),
    /// A datagram sent as it is from the client's socket.
    Raw(Vec<u8>),
    Close,
}

/// An established DTLS session to a published address.
pub struct DtlsClient {
    cmd: mpsc::Sender<Cmd>,
    events: mpsc::Receiver<Event>,
    /// The client's own address (the engine's channel source).
    pub local: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DtlsClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DtlsClient {
    /// Handshakes with `target`, trusting `ca_pem` for the name
    /// `localhost`. `Err` says why it failed (certificate or DTLS).
    pub async fn connect(
        target: SocketAddr,
        ca_pem: &str,
        version: Version,
    ) -> Result<DtlsClient, String> {
        Self::connect_from(
            "127.0.0.1:0".parse().expect("address"),
            target,
            ca_pem,
            version,
        )
        .await
    }

    /// [`connect`](Self::connect) from a given local address (a client
    /// restarted on the same port).
    pub async fn connect_from(
        local: SocketAddr,
        target: SocketAddr,
        ca_pem: &str,
        version: Version,
    ) -> Result<DtlsClient, String> {
        // A dropped client's task (and socket) goes away asynchronously.
        let mut tries = 0;
        let socket = loop {
            match UdpSocket::bind(local).await {
                Ok(socket) => break socket,
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("udp bind {local}: {e}"),
            }
        };
        socket.connect(target).await.expect("udp connect");
        let local = socket.local_addr().expect("local address");
        let dtls = new_client(version);
        let verifier = verifier(ca_pem);
        let (done_tx, done_rx) = oneshot::channel();
        let (cmd, cmd_rx) = mpsc::channel(64);
        let (events_tx, events) = mpsc::channel(1024);
        let task = tokio::spawn(drive(socket, dtls, verifier, done_tx, cmd_rx, events_tx));
        match tokio::time::timeout(Duration::from_secs(15), done_rx).await {
            Ok(Ok(Ok(()))) => Ok(DtlsClient {
                cmd,
                events,
                local,
                task,
            }),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err("client task ended".into()),
            Err(_) => Err("handshake timed out".into()),
        }
    }

    /// Sends one datagram (one application data record).
    pub async fn send(&self, d: &[u8]) {
        self.cmd.send(Cmd::Send(d.to_vec())).await.expect("send");
    }

    /// The next event, within `limit`.
    pub async fn next(&mut self, limit: Duration) -> Option<Event> {
        tokio::time::timeout(limit, self.events.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next datagram (panics on anything else or after 10 s).
    pub async fn recv(&mut self) -> Vec<u8> {
        match self.next(Duration::from_secs(10)).await {
            Some(Event::Data(d)) => d,
            other => panic!("expected a datagram, got {other:?}"),
        }
    }

    /// Sends `d` from the client's socket as it is (outside the session).
    pub async fn send_raw(&self, d: &[u8]) {
        self.cmd.send(Cmd::Raw(d.to_vec())).await.expect("send");
    }

    /// Sends `close_notify`.
    pub async fn close(&self) {
        let _ = self.cmd.send(Cmd::Close).await;
    }
}

/// A self-signed P-256 certificate: dimpl wants one for either role (the
/// engine asks for none).
fn client_certificate() -> DtlsCertificate {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["client".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate");
    DtlsCertificate {
        certificate: cert.der().to_vec(),
        private_key: key.serialize_der(),
    }
}

fn new_client(version: Version) -> Dtls {
    let config = Arc::new(
        dimpl::Config::builder()
            .with_crypto_provider(dimpl::crypto::rust_crypto::default_provider())
            .build()
            .expect("dimpl config"),
    );
    let now = Instant::now();
    let cert = client_certificate();
    let mut dtls = match version {
        Version::V12 => Dtls::new_12(config, cert, now),
        Version::V13 => Dtls::new_13(config, cert, now),
        Version::Auto => Dtls::new_auto(config, cert, now),
    };
    dtls.set_active(true);
    dtls
}

fn verifier(ca_pem: &str) -> Arc<dyn ServerCertVerifier> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA");
    }
    rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .expect("verifier")
}

/// One poll cycle: the packets to send, what else came out, and the next
/// timeout.
#[derive(Default)]
struct Cycle {
    packets: Vec<Vec<u8>>,
    events: Vec<Event>,
    peer_cert: Option<Vec<u8>>,
    connected: bool,
    timeout: Option<Instant>,
}

fn poll(dtls: &mut Dtls) -> Cycle {
    let mut buf = vec![0u8; 64 * 1024];
    let mut cycle = Cycle::default();
    loop {
        match dtls.poll_output(&mut buf) {
            Output::Packet(p) => cycle.packets.push(p.to_vec()),
            Output::BufferTooSmall { needed } => buf.resize(needed, 0),
            Output::Timeout(t) => {
                cycle.timeout = Some(t);
                return cycle;
            }
            Output::Connected => cycle.connected = true,
            Output::PeerCert(der) => cycle.peer_cert = Some(der.to_vec()),
            Output::ApplicationData(d) => cycle.events.push(Event::Data(d.to_vec())),
            Output::CloseNotify => cycle.events.push(Event::CloseNotify),
            _ => {}
        }
    }
}

async fn drive(
    socket: UdpSocket,
    mut dtls: Dtls,
    verifier: Arc<dyn ServerCertVerifier>,
    done: oneshot::Sender<Result<(), String>>,
    mut cmd: mpsc::Receiver<Cmd>,
    events: mpsc::Sender<Event>,
) {
    let mut done = Some(done);
    let mut buf = vec![0u8; 64 * 1024];
    let fail = |done: &mut Option<oneshot::Sender<Result<(), String>>>, why: String| {
        if let Some(done) = done.take() {
            let _ = done.send(Err(why.clone()));
        }
        why
    };
    let _ = dtls.handle_timeout(Instant::now());
    loop {
        let cycle = poll(&mut dtls);
        // Check the certificate before anything of this cycle (the
        // client's last flight) leaves: an untrusted server gets nothing.
        if let Some(der) = &cycle.peer_cert {
            let name = ServerName::try_from("localhost").expect("name");
            let cert = CertificateDer::from(der.as_slice());
            if let Err(e) = verifier.verify_server_cert(&cert, &[], &name, &[], UnixTime::now()) {
                let _ = events
                    .send(Event::Failed(fail(&mut done, format!("certificate: {e}"))))
                    .await;
                return;
            }
        }
        for p in &cycle.packets {
            let _ = socket.send(p).await;
        }
        if cycle.connected {
            if let Some(done) = done.take() {
                let _ = done.send(Ok(()));
            }
        }
        for e in cycle.events {
            let _ = events.send(e).await;
        }
        let timer = tokio::time::Instant::from_std(
            cycle
                .timeout
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)),
        );
        let step = tokio::select! {
            r = socket.recv(&mut buf) => match r {
                Ok(n) => dtls
                    .handle_timeout(Instant::now())
                    .and_then(|()| dtls.handle_packet(&buf[..n])),
                Err(_) => Ok(()),
            },
            c = cmd.recv() => match c {
                Some(Cmd::Send(d)) => dtls.send_application_data(&d).map(|_| ()),
                Some(Cmd::Raw(d)) => {
                    let _ = socket.send(&d).await;
                    Ok(())
                }
                Some(Cmd::Close) | None => {
                    let _ = dtls.close();
                    for p in poll(&mut dtls).packets {
                        let _ = socket.send(&p).await;
                    }
                    return;
                }
            },
            () = tokio::time::sleep_until(timer) => dtls.handle_timeout(Instant::now()),
        };
        if let Err(e) = step {
            let why = fail(&mut done, format!("DTLS: {e}"));
            let _ = events.send(Event::Failed(why)).await;
            return;
        }
    }
}

/// The first flight of a DTLS 1.2 client (its ClientHello), for tests
/// that start a handshake and never finish it.
pub fn client_hello() -> Vec<u8> {
    let mut dtls = new_client(Version::V12);
    let _ = dtls.handle_timeout(Instant::now());
    poll(&mut dtls)
        .packets
        .into_iter()
        .next()
        .expect("a ClientHello")
}

/// A DTLS 1.2 client that answers the server's cookie request (so the
/// server does its real work: hello, certificate, key exchange), then
/// goes silent: a half handshake. Returns its socket once the server's
/// certificate flight arrived.
pub async fn half_handshake(target: SocketAddr) -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("udp bind");
    socket.connect(target).await.expect("udp connect");
    let mut dtls = new_client(Version::V12);
    let _ = dtls.handle_timeout(Instant::now());
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let cycle = poll(&mut dtls);
        if cycle.peer_cert.is_some() {
            return socket;
        }
        for p in &cycle.packets {
            socket.send(p).await.expect("udp send");
        }
        let n = tokio::time::timeout_at(deadline, socket.recv(&mut buf))
            .await
            .expect("server flight in time")
            .expect("udp recv");
        dtls.handle_timeout(Instant::now()).expect("dtls");
        dtls.handle_packet(&buf[..n]).expect("dtls");
    }
}

/// `openssl s_client -dtls1_2` connected to `target`, trusting `ca_file`
/// (fails on an untrusted certificate): each line written is one
/// datagram, each datagram received comes back as a line.
pub struct OpensslClient {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl OpensslClient {
    /// Starts it; `openssl` must be installed (`.ci/debian-packages.sh`).
    pub fn start(target: SocketAddr, ca_file: &std::path::Path) -> OpensslClient {
        let mut child = tokio::process::Command::new("openssl")
            .args(["s_client", "-dtls1_2", "-quiet", "-verify_return_error"])
            .arg("-connect")
            .arg(target.to_string())
            .args(["-servername", "localhost", "-verify_hostname", "localhost"])
            .arg("-CAfile")
            .arg(ca_file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("openssl s_client (install openssl: .ci/debian-packages.sh)");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        OpensslClient {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
        }
    }

    /// Writes `line` and a newline (one datagram once connected).
    pub async fn send_line(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("openssl stdin");
        self.stdin.flush().await.expect("openssl stdin");
    }

    /// The next line printed, `None` at end of output.
    pub async fn next_line(&mut self) -> Option<String> {
        self.lines.next_line().await.expect("openssl stdout")
    }

    /// Waits for it to exit; its status.
    pub async fn wait(mut self) -> std::process::ExitStatus {
        drop(self.stdin);
        self.child.wait().await.expect("openssl wait")
    }
}
