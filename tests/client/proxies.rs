//! Proxies as the CLI writes them (`transport.proxy` in the config file),
//! end to end to the local engine: control channel, Engine API, the dial,
//! and the proxy connection that answers it all go through
//!
//! - an HTTPS proxy: TLS to the proxy with its own private CA and name,
//!   `CONNECT` inside (hyper's server with upgrades), TLS to the engine
//!   inside that;
//! - a SOCKS5 proxy: Debian's `microsocks` (installed by `.ci/run`), with
//!   and without username/password;
//! - a plain HTTP CONNECT proxy in the object shape (`proxy: {http: ...}`);
//!
//! and the `ControlPlane` client through the HTTPS and SOCKS5 proxies.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rstream::api::ListTunnelsParams;
use rstream::engine::LocalEngine;
use rstream::transport::TlsOptions;
use rstream::{Client, ClientOptions, ErrorKind, TunnelOptions};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::support::pki::Ca;
use crate::support::{self, echo_round_trip, spawn_echo, within};

/// A config file in the documented shape, with `transport` as given.
fn config_file(name: &str, engine: &LocalEngine, transport: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "rstream-proxies-{}-{name}.yaml",
        std::process::id()
    ));
    let text = format!(
        "defaults: {{context: {{name: dev}}}}\ncontexts:\n  - name: dev\n    engine: \"{}\"\n    transport:\n{transport}",
        engine.engine_address()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// `Client::from_env()` as a user would run it, with `RSTREAM_CONFIG`
/// pointing at `config` and the engine's CA trusted.
fn client(engine: &LocalEngine, config: &Path) -> ClientOptions {
    let config = config.to_string_lossy().into_owned();
    ClientOptions::from_env_with(move |k| (k == "RSTREAM_CONFIG").then(|| config.clone())).tls(
        TlsOptions::new()
            .add_ca_pem(engine.ca_pem().as_bytes())
            .unwrap(),
    )
}

/// Connects, publishes an echo tunnel, lists it through the Engine API and
/// dials it: four connections to the engine (control channel, Engine API,
/// dial, answering proxy connection).
/// `half_close`: end the request with a write shutdown and read the echo
/// to EOF. microsocks closes both directions at the first EOF (it does not
/// relay half-closes), so its tests read the echo by length instead.
async fn round_trip(client: &Client, name: &str, half_close: bool) {
    let control = within("connect", client.connect()).await.unwrap();
    let _echo = spawn_echo(
        within(
            "tunnel",
            control.create_tunnel(TunnelOptions::new().name(name)),
        )
        .await
        .unwrap(),
    );
    // The Engine API (HttpsConnector) takes the same proxy.
    let listed = within(
        "Engine API",
        client.api().list_tunnels(ListTunnelsParams::new()),
    )
    .await
    .unwrap();
    assert!(!listed.is_empty(), "the Engine API sees the tunnel");
    let msg = b"through the proxy";
    let back = within("echo", async {
        let mut stream = client.dial(name).await.unwrap();
        if half_close {
            echo_round_trip(stream, msg).await
        } else {
            stream.write_all(msg).await.unwrap();
            let mut back = vec![0; msg.len()];
            stream.read_exact(&mut back).await.unwrap();
            back
        }
    })
    .await;
    assert_eq!(back, msg);
}

// ---------------------------------------------------------------------------
// HTTPS proxy
// ---------------------------------------------------------------------------

/// An HTTPS CONNECT proxy: rustls with a certificate for
/// `proxy.internal.test` from its own CA, hyper's HTTP/1.1 server with
/// upgrades, basic auth `agent:sekret-pw`. Returns its address, its CA's
/// PEM and the CONNECT targets it relayed.
async fn start_https_proxy() -> (SocketAddr, String, Arc<Mutex<Vec<String>>>) {
    let ca = Ca::named("proxy test CA");
    let leaf = ca.leaf(&["proxy.internal.test"], None);
    let acceptor = TlsAcceptor::from(Arc::new(leaf.server_config(&[b"http/1.1"])));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let targets = Arc::new(Mutex::new(Vec::new()));
    let log = targets.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let log = log.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let log = log.clone();
                    async move { Ok::<_, hyper::Error>(connect(req, &log)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    (addr, ca.pem(), targets)
}

/// Answers `CONNECT` and relays the upgraded connection to the target.
fn connect(
    req: Request<hyper::body::Incoming>,
    log: &Mutex<Vec<String>>,
) -> Response<Empty<Bytes>> {
    let status = |s| {
        let mut r = Response::new(Empty::new());
        *r.status_mut() = s;
        r
    };
    let Some(target) = req.uri().authority().map(|a| a.to_string()) else {
        return status(StatusCode::BAD_REQUEST);
    };
    if req.method() != Method::CONNECT {
        return status(StatusCode::METHOD_NOT_ALLOWED);
    }
    let want = format!("Basic {}", STANDARD.encode("agent:sekret-pw"));
    if req
        .headers()
        .get("proxy-authorization")
        .is_none_or(|v| v.as_bytes() != want.as_bytes())
    {
        return status(StatusCode::PROXY_AUTHENTICATION_REQUIRED);
    }
    log.lock().unwrap().push(target.clone());
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(req).await else {
            return;
        };
        let Ok(mut upstream) = TcpStream::connect(&target).await else {
            return;
        };
        let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(upgraded), &mut upstream).await;
    });
    status(StatusCode::OK)
}

fn https_transport(proxy: SocketAddr, tls: &str) -> String {
    format!("      proxy:\n        http: \"https://agent:sekret-pw@{proxy}\"\n        tls: {tls}\n")
}

#[tokio::test]
async fn https_proxy_with_a_private_ca_end_to_end() {
    let engine = support::engine().await;
    let (proxy, ca_pem, targets) = start_https_proxy().await;
    let ca_file = std::env::temp_dir().join(format!("rstream-proxy-ca-{}.pem", std::process::id()));
    std::fs::write(&ca_file, &ca_pem).unwrap();
    let config = config_file(
        "https",
        &engine,
        &https_transport(
            proxy,
            &format!(
                "{{caFile: \"{}\", serverName: proxy.internal.test}}",
                ca_file.display()
            ),
        ),
    );
    let options = client(&engine, &config);
    let resolved = options.resolve().unwrap();
    let shown = resolved.proxy().unwrap().0.to_string();
    assert_eq!(shown, format!("https://agent:<redacted>@{proxy}"));
    let client = Client::from_resolved(resolved).unwrap();
    round_trip(&client, "via-https-proxy", true).await;
    let targets = targets.lock().unwrap().clone();
    assert!(targets.len() >= 4, "{targets:?}");
    assert!(
        targets.iter().all(|t| *t == engine.engine_address()),
        "{targets:?}"
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn https_proxy_is_verified_and_insecure_skip_verify_is_explicit() {
    let engine = support::engine().await;
    let (proxy, ca_pem, targets) = start_https_proxy().await;
    let ca_file =
        std::env::temp_dir().join(format!("rstream-proxy-ca2-{}.pem", std::process::id()));
    std::fs::write(&ca_file, &ca_pem).unwrap();

    // No CA for the proxy: its certificate does not verify.
    let config = config_file("https-noca", &engine, &https_transport(proxy, "{}"));
    let err = within(
        "connect",
        client(&engine, &config).build().unwrap().connect(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls, "{err}");
    // The right CA but the wrong name (the proxy is 127.0.0.1 by default).
    let config = config_file(
        "https-noname",
        &engine,
        &https_transport(proxy, &format!("{{caFile: \"{}\"}}", ca_file.display())),
    );
    let err = within(
        "connect",
        client(&engine, &config).build().unwrap().connect(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls, "{err}");
    assert!(targets.lock().unwrap().is_empty());

    // insecureSkipVerify: the proxy hop is not verified, the engine still is.
    let config = config_file(
        "https-insecure",
        &engine,
        &https_transport(proxy, "{insecureSkipVerify: true}"),
    );
    round_trip(
        &client(&engine, &config).build().unwrap(),
        "insecure-hop",
        true,
    )
    .await;
    let config = config_file(
        "https-insecure-no-engine-ca",
        &engine,
        &https_transport(proxy, "{insecureSkipVerify: true}"),
    );
    let unverified_engine = ClientOptions::from_env_with({
        let path = config.to_string_lossy().into_owned();
        move |k| (k == "RSTREAM_CONFIG").then(|| path.clone())
    });
    let err = within("connect", unverified_engine.build().unwrap().connect())
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Tls,
        "the engine is still verified: {err}"
    );
    engine.shutdown().await;
}

// ---------------------------------------------------------------------------
// SOCKS5 proxy (microsocks)
// ---------------------------------------------------------------------------

/// A running `microsocks`, killed on drop, and the destinations it logged.
struct Microsocks {
    addr: SocketAddr,
    _child: tokio::process::Child,
    log: Arc<Mutex<Vec<String>>>,
}

async fn microsocks(auth: Option<(&str, &str)>) -> Microsocks {
    let port = {
        // A free port: bind, read, release (microsocks binds it next).
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut cmd = tokio::process::Command::new("microsocks");
    cmd.args(["-i", "127.0.0.1", "-p", &port.to_string()]);
    if let Some((user, pass)) = auth {
        cmd.args(["-u", user, "-P", pass]);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("microsocks (Debian package `microsocks`; .ci/run installs it)");
    let log = Arc::new(Mutex::new(Vec::new()));
    for out in [
        child
            .stdout
            .take()
            .map(|o| Box::new(o) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        child
            .stderr
            .take()
            .map(|o| Box::new(o) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
    ]
    .into_iter()
    .flatten()
    {
        let log = log.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                log.lock().unwrap().push(line);
            }
        });
    }
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    within("microsocks listening", async {
        while TcpStream::connect(addr).await.is_err() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    Microsocks {
        addr,
        _child: child,
        log,
    }
}

impl Microsocks {
    /// Waits (bounded) until it logged at least `n` connections to a
    /// destination ending in `target`; its log lines reach the pipe a little after the fact.
    async fn wait_connections_to(&self, target: &str, n: usize) {
        let count = || {
            self.log
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.contains("connected to ") && l.ends_with(target))
                .count()
        };
        for _ in 0..250 {
            if count() >= n {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!(
            "microsocks logged {} of {n} connections to {target}: {:?}",
            count(),
            self.log.lock().unwrap()
        );
    }
}

#[tokio::test]
async fn socks5_proxy_with_and_without_credentials_end_to_end() {
    let engine = support::engine().await;
    // The engine's address as microsocks logs it (it resolved the name).
    let port = engine.local_addr().port();

    let open = microsocks(None).await;
    let config = config_file(
        "socks-open",
        &engine,
        &format!("      proxy: {{socks5: \"socks5://{}\"}}\n", open.addr),
    );
    round_trip(
        &client(&engine, &config).build().unwrap(),
        "via-socks",
        false,
    )
    .await;
    open.wait_connections_to(&format!(":{port}"), 4).await;

    let authed = microsocks(Some(("agent", "sekret-pw"))).await;
    let config = config_file(
        "socks-auth",
        &engine,
        &format!(
            "      proxy: {{socks5: \"socks5h://agent:sekret-pw@{}\"}}\n",
            authed.addr
        ),
    );
    round_trip(
        &client(&engine, &config).build().unwrap(),
        "via-socks-auth",
        false,
    )
    .await;
    authed.wait_connections_to(&format!(":{port}"), 4).await;
    engine.shutdown().await;
}

#[tokio::test]
async fn socks5_proxy_refusals_are_auth_errors() {
    let engine = support::engine().await;
    let authed = microsocks(Some(("agent", "right-pw"))).await;
    for (name, url) in [
        (
            "wrong",
            format!("socks5://agent:sekret-wrong@{}", authed.addr),
        ),
        ("none", format!("socks5://{}", authed.addr)),
    ] {
        let config = config_file(
            &format!("socks-{name}"),
            &engine,
            &format!("      proxy: {{socks5: \"{url}\"}}\n"),
        );
        let err = within(
            "connect",
            client(&engine, &config).build().unwrap().connect(),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), "ERR_RSTREAM_PROXY_AUTH", "{name}: {err}");
        assert_eq!(err.kind(), ErrorKind::Auth);
        assert!(!err.to_string().contains("sekret"), "{err}");
    }
    engine.shutdown().await;
}

// ---------------------------------------------------------------------------
// Plain HTTP proxy in the object shape
// ---------------------------------------------------------------------------

#[tokio::test]
async fn http_proxy_in_object_shape_end_to_end() {
    let engine = support::engine().await;
    let (proxy, log) = support::connect_proxy::start(Some("agent:sekret-pw"), None).await;
    let config = config_file(
        "http-object",
        &engine,
        &format!("      proxy:\n        http: \"http://agent:sekret-pw@{proxy}\"\n"),
    );
    let resolved = client(&engine, &config).resolve().unwrap();
    assert_eq!(
        resolved.proxy().unwrap().0.to_string(),
        format!("http://agent:<redacted>@{proxy}")
    );
    let client = Client::from_resolved(resolved).unwrap();
    round_trip(&client, "via-http-proxy", true).await;
    let targets = log.targets.lock().unwrap().clone();
    assert!(targets.len() >= 4, "{targets:?}");
    assert!(
        targets.iter().all(|t| *t == engine.engine_address()),
        "{targets:?}"
    );
    engine.shutdown().await;
}

// ---------------------------------------------------------------------------
// The ControlPlane client through HTTPS and SOCKS5 proxies
// ---------------------------------------------------------------------------

/// A control-plane stand-in over HTTPS (certificate for `localhost` from
/// its own CA): `GET /api/whoami` with `Bearer cp-token`. Returns its port
/// and its CA's PEM.
async fn start_control_plane() -> (u16, String) {
    let ca = Ca::named("control plane test CA");
    let leaf = ca.leaf(&["localhost"], None);
    let acceptor = TlsAcceptor::from(Arc::new(leaf.server_config(&[b"h2", b"http/1.1"])));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let authorized = req
                        .headers()
                        .get("authorization")
                        .is_some_and(|v| v == "Bearer cp-token");
                    let (status, body) = match (req.uri().path(), authorized) {
                        ("/api/whoami", true) => {
                            (StatusCode::OK, r#"{"id":"usr_proxied","role":"user"}"#)
                        }
                        (_, false) => (StatusCode::UNAUTHORIZED, r#"{"error":"no token"}"#),
                        _ => (StatusCode::NOT_FOUND, r#"{"error":"no such route"}"#),
                    };
                    let mut rsp = Response::new(http_body_util::Full::new(Bytes::from(body)));
                    *rsp.status_mut() = status;
                    Ok::<_, hyper::Error>(rsp)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(TokioIo::new(tls), service)
                .await;
            });
        }
    });
    (port, ca.pem())
}

/// Options as a user's config file gives them: the control plane's URL and
/// token, `transport` as given; its CA trusted. No engine.
fn control_plane_options(name: &str, port: u16, ca_pem: &str, transport: &str) -> ClientOptions {
    let path = std::env::temp_dir().join(format!(
        "rstream-proxies-{}-{name}.yaml",
        std::process::id()
    ));
    let text = format!(
        "defaults: {{context: {{name: dev}}}}\ncontexts:\n  - name: dev\n    apiUrl: \"https://localhost:{port}\"\n    \
         auth: {{token: {{storage: {{provider: inline, value: cp-token}}}}}}\n    transport:\n{transport}"
    );
    std::fs::write(&path, text).unwrap();
    let config = path.to_string_lossy().into_owned();
    ClientOptions::from_env_with(move |k| (k == "RSTREAM_CONFIG").then(|| config.clone()))
        .tls(TlsOptions::new().add_ca_pem(ca_pem.as_bytes()).unwrap())
}

#[tokio::test]
async fn control_plane_client_through_https_and_socks5_proxies() {
    use rstream::control_plane::ControlPlane;
    let (port, cp_ca) = start_control_plane().await;

    // HTTPS proxy: TLS to the proxy (its own CA and name), CONNECT, TLS to
    // the control plane inside.
    let (proxy, proxy_ca, targets) = start_https_proxy().await;
    let ca_file =
        std::env::temp_dir().join(format!("rstream-cp-proxy-ca-{}.pem", std::process::id()));
    std::fs::write(&ca_file, &proxy_ca).unwrap();
    let transport = https_transport(
        proxy,
        &format!(
            "{{caFile: \"{}\", serverName: proxy.internal.test}}",
            ca_file.display()
        ),
    );
    let options = control_plane_options("cp-https", port, &cp_ca, &transport);
    let cp = ControlPlane::from_options(&options).unwrap();
    let me = within("whoami via https proxy", cp.whoami()).await.unwrap();
    assert_eq!(me.id, "usr_proxied");
    assert_eq!(
        targets.lock().unwrap().as_slice(),
        [format!("localhost:{port}")]
    );

    // SOCKS5 (microsocks, with credentials; the name resolved by the proxy).
    let socks = microsocks(Some(("agent", "sekret-pw"))).await;
    let transport = format!(
        "      proxy: {{socks5: \"socks5h://agent:sekret-pw@{}\"}}\n",
        socks.addr
    );
    let options = control_plane_options("cp-socks", port, &cp_ca, &transport);
    let cp = ControlPlane::from_options(&options).unwrap();
    let me = within("whoami via socks5", cp.whoami()).await.unwrap();
    assert_eq!(me.id, "usr_proxied");
    socks.wait_connections_to(&format!(":{port}"), 1).await;
}
