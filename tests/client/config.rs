//! Configuration: the case table (`tests/config_cases/*.yaml`), managed
//! resolution against a local control-plane double, mTLS material reaching a
//! real TLS handshake, and the HTTP CONNECT proxy relaying a real engine
//! connection.
//!
//! Nothing here reads or writes the process environment: every case injects
//! its variables with `ClientOptions::from_env_with`.

use crate::support::{
    self,
    pki::{Ca, Leaf},
};

use crate::support::config_cases as harness;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use harness::{load_cases, prepare, run_rust, Fixture};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rstream::config::{AuthKind, ClientCertificate, EngineTarget, Source};
use rstream::transport::{HttpProxy, TlsOptions};
use rstream::{ClientOptions, DialOptions, ErrorKind, TunnelOptions};
use support::connect_proxy::start as start_proxy;
use support::{echo_round_trip, spawn_echo, within};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

// ---------------------------------------------------------------------------
// The case table
// ---------------------------------------------------------------------------

#[test]
fn case_table() {
    let fx = Fixture::new("config-cases");
    let cases = load_cases();
    assert!(cases.len() > 100, "only {} cases loaded", cases.len());
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let prepared = prepare(case, &fx, i);
        let got = run_rust(&prepared, &fx);
        // Without the `quic` feature, quic is refused.
        let expect = if !cfg!(feature = "quic") && case.expect.transport.as_deref() == Some("quic")
        {
            harness::Outcome {
                error: Some("ERR_RSTREAM_UNSUPPORTED_TRANSPORT".to_owned()),
                ..harness::Outcome::default()
            }
        } else {
            case.expect.clone()
        };
        if !expect.matches(&got) {
            failures.push(format!(
                "[{}] {}\n    expected {:?}\n    got      {:?}",
                case.file, case.name, expect, got
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn every_documented_error_code_is_covered() {
    let cases = load_cases();
    for code in [
        "ERR_RSTREAM_INVALID_CONFIG",
        "ERR_RSTREAM_INVALID_API_URL",
        "ERR_RSTREAM_CONTEXT_NOT_FOUND",
        "ERR_RSTREAM_CONTEXT_AMBIGUOUS",
        "ERR_RSTREAM_UNSUPPORTED_TOKEN_STORAGE",
        "ERR_RSTREAM_STORED_TOKEN_ENGINE_OVERRIDE",
        "ERR_RSTREAM_STORED_MTLS_ENGINE_OVERRIDE",
        "ERR_RSTREAM_MTLS_INCOMPLETE",
        "ERR_RSTREAM_UNSUPPORTED_MTLS_STORAGE",
        "ERR_RSTREAM_AUTH_CONFLICT",
        "ERR_RSTREAM_TOKEN_EXPIRED",
        "ERR_RSTREAM_INVALID_ENGINE",
        "ERR_RSTREAM_INVALID_REGION",
        "ERR_RSTREAM_REGION_ENGINE_CONFLICT",
        "ERR_RSTREAM_PROJECT_ENDPOINT_REQUIRED",
        "ERR_RSTREAM_INVALID_TIMEOUT",
        "ERR_RSTREAM_UNSUPPORTED_TRANSPORT",
        "ERR_RSTREAM_INVALID_PROXY",
        "ERR_RSTREAM_PROXY_CONFLICT",
        "ERR_RSTREAM_PROXY_SCHEME_MISMATCH",
        "ERR_RSTREAM_PROXY_TLS_WITHOUT_HTTPS",
        "ERR_RSTREAM_PROXY_TLS_CONFLICT",
    ] {
        assert!(
            cases
                .iter()
                .any(|c| c.expect.error.as_deref() == Some(code)),
            "no case expects {code}"
        );
    }
}

#[test]
fn resolved_options_say_where_settings_came_from() {
    let fx = Fixture::new("config-sources");
    let path = fx.dir.join("config.yaml");
    std::fs::write(
        &path,
        format!(
            "defaults: {{context: {{name: dev}}}}\ncontexts:\n  - name: dev\n    engine: dev.example.test\n    \
             auth: {{mtls: {{certificateFile: {:?}, keyFile: {:?}}}}}\n",
            fx.cert.display().to_string(),
            fx.key.display().to_string()
        ),
    )
    .unwrap();
    let p = path.clone();
    let r = ClientOptions::from_env_with(move |k| {
        (k == "RSTREAM_CONFIG").then(|| p.display().to_string())
    })
    .resolve()
    .unwrap();
    assert_eq!(r.engine_source(), Source::Context);
    assert_eq!(r.context(), Some("dev"));
    assert_eq!(r.config_file(), Some(path.as_path()));
    assert_eq!(r.auth(), AuthKind::Mtls);
    let (cert, src) = r.client_certificate().unwrap();
    assert_eq!(src, Source::Context);
    assert!(matches!(cert, ClientCertificate::Files { .. }));
    let shown = r.to_string();
    assert!(
        shown.contains("engine: dev.example.test:443 (config context)"),
        "{shown}"
    );
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    // `new()` + `config_file` reads the file but no environment.
    let r = ClientOptions::new().config_file(&path).resolve().unwrap();
    assert_eq!(
        r.engine(),
        Some(&EngineTarget::Address(
            "dev.example.test:443".parse().unwrap()
        ))
    );
}

// ---------------------------------------------------------------------------
// Managed resolution against a control-plane double
// ---------------------------------------------------------------------------

#[derive(Clone, Default)]
struct Api {
    requests: Arc<Mutex<Vec<HeaderMap>>>,
    /// The HTTP version of each request (h2 when ALPN chose it).
    versions: Arc<Mutex<Vec<axum::http::Version>>>,
    engine_port: u16,
}

async fn resolve_route(
    State(api): State<Api>,
    Path(endpoint): Path<String>,
    version: axum::http::Version,
    headers: HeaderMap,
) -> Response {
    api.requests.lock().unwrap().push(headers);
    api.versions.lock().unwrap().push(version);
    let project = |domain: &str, port: u16| {
        serde_json::json!({
            "id": "prj_1", "endpoint": endpoint, "domain": domain, "enginePort": port,
            "routing": "direct", "url": null,
            "regionalEndpoints": [
                {"provider": "aws", "region": "eu", "domain": "eu.example.test", "enginePort": 443},
                {"provider": "aws", "region": "us", "domain": "us.example.test", "enginePort": 8443},
            ],
        })
    };
    match endpoint.as_str() {
        "myproj" => axum::Json(project("example.test", 443)).into_response(),
        "e2e" => axum::Json(project("engine.test", api.engine_port)).into_response(),
        "broken" => axum::Json(serde_json::json!({"id": "prj_1", "endpoint": "broken", "enginePort": 443, "routing": "direct"}))
            .into_response(),
        "denied" => (StatusCode::FORBIDDEN, "forbidden for this token").into_response(),
        "moved" => (
            StatusCode::FOUND,
            [(axum::http::header::LOCATION, "/api/projects/tunnels/resolve/myproj")],
        )
            .into_response(),
        "huge" => (StatusCode::OK, vec![b' '; 2 * 1024 * 1024]).into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

fn api_router(api: Api) -> Router {
    Router::new()
        .route(
            "/api/projects/tunnels/resolve/{endpoint}",
            get(resolve_route),
        )
        .with_state(api)
}

async fn start_api(api: Api) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, api_router(api)).await;
    });
    addr
}

fn managed(api: SocketAddr, endpoint: &str) -> ClientOptions {
    ClientOptions::new()
        .api_url(format!("http://{api}/"))
        .project_endpoint(endpoint)
}

/// `.no_token()` is `noToken: true` in code: the context's stored token is
/// neither read (resolution reports no credentials) nor sent (managed
/// resolution carries no `Authorization`); an explicit token still is.
#[tokio::test]
async fn no_token_option_skips_the_stored_token() {
    let api = Api::default();
    let addr = start_api(api.clone()).await;
    let fx = Fixture::new("config-no-token");
    let path = fx.dir.join("config.yaml");
    std::fs::write(
        &path,
        format!(
            "defaults: {{context: {{name: dev}}}}\ncontexts:\n  - name: dev\n    apiUrl: http://{addr}\n    \
             projectEndpoint: myproj\n    auth: {{token: {{storage: {{provider: inline, value: stored-sekret}}}}}}\n"
        ),
    )
    .unwrap();
    let options = ClientOptions::new().config_file(&path);
    // Without it, the stored token is read and sent.
    let resolved = options.clone().resolve().unwrap();
    assert_eq!(resolved.auth(), AuthKind::Token);
    let client = options.clone().build().unwrap();
    within("resolve", client.resolve_engine()).await.unwrap();
    assert_eq!(
        api.requests.lock().unwrap()[0]["authorization"],
        "Bearer stored-sekret"
    );

    let resolved = options.clone().no_token().resolve().unwrap();
    assert_eq!(resolved.auth(), AuthKind::None);
    assert!(resolved.token().is_none());
    let client = options.clone().no_token().build().unwrap();
    within("resolve without", client.resolve_engine())
        .await
        .unwrap();
    assert!(!api.requests.lock().unwrap()[1].contains_key("authorization"));

    // An explicit token is still used.
    let resolved = options.no_token().token("explicit").resolve().unwrap();
    assert_eq!(resolved.token().map(|(_, s)| s), Some(Source::Option));
}

#[tokio::test]
async fn managed_resolution_success_headers_and_cache() {
    let api = Api::default();
    let addr = start_api(api.clone()).await;
    let client = managed(addr, "myproj")
        .token("sekret-tok")
        .control_plane_header("x-team-id", "team-1")
        .build()
        .unwrap();
    assert!(client.engine().is_none(), "resolved lazily");
    let engine = within("resolve", client.resolve_engine()).await.unwrap();
    assert_eq!(engine.to_string(), "myproj.example.test:443");
    assert_eq!(
        client.engine().map(|e| e.to_string()).as_deref(),
        Some("myproj.example.test:443")
    );
    // Cached: a second call makes no request.
    within("resolve again", client.resolve_engine())
        .await
        .unwrap();
    let requests = api.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0]["authorization"], "Bearer sekret-tok");
    assert_eq!(requests[0]["x-team-id"], "team-1");
    assert!(!format!("{client:?}").contains("sekret"));
    // Clear text (loopback): HTTP/1.1.
    assert_eq!(
        api.versions.lock().unwrap().as_slice(),
        [axum::http::Version::HTTP_11]
    );
}

#[tokio::test]
async fn managed_resolution_regions() {
    let addr = start_api(Api::default()).await;
    let client = managed(addr, "myproj").region("US").build().unwrap();
    let engine = within("resolve", client.resolve_engine()).await.unwrap();
    assert_eq!(engine.to_string(), "myproj.us.example.test:8443");

    let client = managed(addr, "myproj").region("ap").build().unwrap();
    let err = within("resolve", client.resolve_engine())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "ERR_RSTREAM_REGION_UNAVAILABLE");
    assert!(err.message().contains("eu, us"), "{err}");
}

#[tokio::test]
async fn managed_resolution_failures() {
    let addr = start_api(Api::default()).await;
    for (endpoint, code) in [
        ("denied", "ERR_RSTREAM_API_HTTP"),
        ("unknown", "ERR_RSTREAM_API_HTTP"),
        ("moved", "ERR_RSTREAM_API_HTTP"),
        ("broken", "ERR_RSTREAM_API_INVALID_RESPONSE"),
        ("huge", "ERR_RSTREAM_API_INVALID_RESPONSE"),
    ] {
        let client = managed(addr, endpoint).token("sekret-tok").build().unwrap();
        let err = within(endpoint, client.resolve_engine()).await.unwrap_err();
        assert_eq!(err.code(), code, "{endpoint}: {err}");
        assert!(!err.to_string().contains("sekret"));
        // Not cached: connecting retries the resolution and fails the same way.
        let err = within(endpoint, client.connect()).await.unwrap_err();
        assert_eq!(err.code(), code, "{endpoint}: {err}");
    }
    // A redirect is reported, not followed.
    let client = managed(addr, "moved").build().unwrap();
    let err = client.resolve_engine().await.unwrap_err();
    assert!(err.message().contains("302"), "{err}");
}

#[tokio::test]
async fn managed_resolution_refuses_clear_text_off_loopback() {
    let client = ClientOptions::new()
        .api_url("http://api.example.test")
        .project_endpoint("myproj")
        .build()
        .unwrap();
    let err = client.resolve_engine().await.unwrap_err();
    assert_eq!(err.code(), "ERR_RSTREAM_INVALID_API_URL");
}

#[test]
fn no_engine_at_all_fails_when_building() {
    let err = ClientOptions::new().build().unwrap_err();
    assert_eq!(err.code(), "ERR_RSTREAM_ENGINE_REQUIRED");
}

/// A CA, a server certificate for `localhost` and a client certificate,
/// all from one throwaway PKI.
struct Pki {
    ca_pem: String,
    server: Leaf,
    client: Leaf,
}

fn pki() -> Pki {
    let ca = Ca::new();
    Pki {
        ca_pem: ca.pem(),
        server: ca.leaf(&["localhost", "127.0.0.1"], None),
        client: ca.leaf(&["agent.example.test"], None),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[tokio::test]
async fn managed_resolution_over_https_and_h2() {
    let pki = pki();
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![pki.server.cert_der.clone()], pki.server.key_der())
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let api = Api::default();
    let router = api_router(api.clone());
    let alpn = Arc::new(Mutex::new(None));
    let seen_alpn = alpn.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let router = router.clone();
            let seen_alpn = seen_alpn.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                *seen_alpn.lock().unwrap() = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                let svc = hyper_util::service::TowerToHyperService::new(router);
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    let client = ClientOptions::new()
        .api_url(format!("https://localhost:{port}"))
        .project_endpoint("myproj")
        .tls(TlsOptions::new().add_ca_pem(pki.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let engine = within("resolve", client.resolve_engine()).await.unwrap();
    assert_eq!(engine.to_string(), "myproj.example.test:443");
    assert_eq!(alpn.lock().unwrap().as_deref(), Some(&b"h2"[..]));
    // The connector reports the ALPN choice, so the request went as h2.
    assert_eq!(
        api.versions.lock().unwrap().as_slice(),
        [axum::http::Version::HTTP_2]
    );

    // Without the CA the API's certificate is refused.
    let client = ClientOptions::new()
        .api_url(format!("https://localhost:{port}"))
        .project_endpoint("myproj")
        .build()
        .unwrap();
    let err = within("resolve", client.resolve_engine())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls, "{err}");
}

// ---------------------------------------------------------------------------
// mTLS material reaches the TLS handshake
// ---------------------------------------------------------------------------

/// A TLS server that requires a client certificate from `pki`'s CA and
/// reports, per connection, the certificate presented (or the failure).
async fn mtls_server(
    pki: &Pki,
) -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<Result<Vec<u8>, String>>,
) {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![pki.server.cert_der.clone()], pki.server.key_der())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let result = match acceptor.accept(tcp).await {
                Ok(tls) => {
                    let cert = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| c.to_vec())
                        .ok_or_else(|| "no client certificate".to_owned());
                    // Keep the connection until the client goes away.
                    tokio::spawn(async move {
                        let mut tls = tls;
                        let mut buf = [0u8; 1024];
                        while matches!(tls.read(&mut buf).await, Ok(n) if n > 0) {}
                    });
                    cert
                }
                Err(e) => Err(e.to_string()),
            };
            let _ = tx.send(result);
        }
    });
    (addr, rx)
}

use rustls::pki_types::pem::PemObject as _;

#[tokio::test]
async fn inline_mtls_from_the_config_file_reaches_the_handshake() {
    let pki = pki();
    let (addr, mut seen) = mtls_server(&pki).await;
    let fx = Fixture::new("config-mtls");
    let ca_file = fx.dir.join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let config = fx.dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "defaults: {{context: {{name: self-hosted}}}}\ncontexts:\n  - name: self-hosted\n    engine: localhost:{}\n    \
             auth:\n      mtls:\n        certificate: {}\n        key: {}\n",
            addr.port(),
            serde_json::to_string(&pki.client.cert_pem).unwrap(),
            serde_json::to_string(&pki.client.key_pem).unwrap()
        ),
    )
    .unwrap();
    let env = [
        ("RSTREAM_CONFIG", config.display().to_string()),
        ("RSTREAM_CA_FILE", ca_file.display().to_string()),
    ];
    let options = ClientOptions::from_env_with(move |k| {
        env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
    });
    let resolved = options.resolve().unwrap();
    assert_eq!(resolved.auth(), AuthKind::Mtls);
    assert!(!resolved.to_string().contains("PRIVATE"));
    let client = options.build().unwrap();
    // Zero-RTT dial: returns once TLS is up and the request is written.
    let _stream = within(
        "dial",
        client.dial_with("anything", DialOptions::new().zero_rtt(true)),
    )
    .await
    .unwrap();
    let presented = within("server side", seen.recv()).await.unwrap().unwrap();
    assert_eq!(presented, pki.client.cert_der.to_vec());

    // Same server, no client certificate: the server refuses the handshake.
    let client = ClientOptions::new()
        .engine(format!("localhost:{}", addr.port()))
        .ca_file(&ca_file)
        .build()
        .unwrap();
    let _ = within(
        "dial",
        client.dial_with("anything", DialOptions::new().zero_rtt(true)),
    )
    .await;
    let refused = within("server side", seen.recv()).await.unwrap();
    assert!(refused.is_err(), "{refused:?}");
}

// ---------------------------------------------------------------------------
// HTTP CONNECT proxy
// ---------------------------------------------------------------------------

#[tokio::test]
async fn proxy_relays_control_channel_dials_and_proxy_connections() {
    let engine = support::engine().await;
    let (proxy_addr, log) = start_proxy(Some("agent:sekret-pw"), None).await;
    let proxy = HttpProxy::parse(&format!("http://agent:sekret-pw@{proxy_addr}")).unwrap();
    let client = support::options(&engine).proxy(proxy).build().unwrap();
    assert!(!format!("{client:?}").contains("sekret"));
    let control = within("connect", client.connect()).await.unwrap();
    let _echo = spawn_echo(
        within(
            "tunnel",
            control.create_tunnel(TunnelOptions::new().name("via-proxy")),
        )
        .await
        .unwrap(),
    );
    let back = within("echo", async {
        echo_round_trip(
            client.dial("via-proxy").await.unwrap(),
            b"through the proxy",
        )
        .await
    })
    .await;
    assert_eq!(back, b"through the proxy");
    let targets = log.targets.lock().unwrap().clone();
    // Control channel, the dial, and the answering proxy connection.
    assert!(targets.len() >= 3, "{targets:?}");
    assert!(
        targets.iter().all(|t| *t == engine.engine_address()),
        "{targets:?}"
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn proxy_with_a_wrong_password_fails_clearly() {
    let engine = support::engine().await;
    let (proxy_addr, log) = start_proxy(Some("agent:right"), None).await;
    let proxy = HttpProxy::parse(&format!("http://agent:sekret-wrong@{proxy_addr}")).unwrap();
    let client = support::options(&engine).proxy(proxy).build().unwrap();
    let err = within("connect", client.connect()).await.unwrap_err();
    assert_eq!(err.code(), "ERR_RSTREAM_PROXY_AUTH", "{err}");
    assert_eq!(err.kind(), ErrorKind::Auth);
    assert!(!err.to_string().contains("sekret"), "{err}");
    assert!(log.targets.lock().unwrap().is_empty());

    let no_creds = HttpProxy::parse(&proxy_addr.to_string()).unwrap();
    let err = within(
        "connect",
        support::options(&engine)
            .proxy(no_creds)
            .build()
            .unwrap()
            .connect(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), "ERR_RSTREAM_PROXY_AUTH", "{err}");
    engine.shutdown().await;
}

#[tokio::test]
async fn managed_engine_through_the_proxy_end_to_end() {
    let engine = support::engine().await;
    let api = Api {
        engine_port: engine.local_addr().port(),
        ..Api::default()
    };
    let api_addr = start_api(api.clone()).await;
    let (proxy_addr, log) = start_proxy(None, Some(engine.local_addr())).await;
    let tls = TlsOptions::new()
        .add_ca_pem(engine.ca_pem().as_bytes())
        .unwrap()
        .server_name("localhost");
    let client = managed(api_addr, "e2e")
        .tls(tls)
        .proxy(HttpProxy::parse(&proxy_addr.to_string()).unwrap())
        .build()
        .unwrap();
    let control = within("connect", client.connect()).await.unwrap();
    let expected = format!("e2e.engine.test:{}", engine.local_addr().port());
    assert_eq!(
        client.engine().map(|e| e.to_string()),
        Some(expected.clone())
    );
    let _echo = spawn_echo(
        within(
            "tunnel",
            control.create_tunnel(TunnelOptions::new().name("managed")),
        )
        .await
        .unwrap(),
    );
    let back = within("echo", async {
        echo_round_trip(client.dial("managed").await.unwrap(), b"hi").await
    })
    .await;
    assert_eq!(back, b"hi");
    assert_eq!(api.requests.lock().unwrap().len(), 1, "resolved once");
    let targets = log.targets.lock().unwrap().clone();
    assert!(
        targets.iter().any(|t| *t == api_addr.to_string()),
        "API call via the proxy: {targets:?}"
    );
    assert!(
        targets.iter().filter(|t| **t == expected).count() >= 3,
        "{targets:?}"
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn ambient_proxy_never_applies_to_loopback_or_no_proxy_hosts() {
    let engine = support::engine().await;
    let (proxy_addr, log) = start_proxy(None, None).await;
    let env = [
        ("RSTREAM_ENGINE", engine.engine_address()),
        ("HTTPS_PROXY", format!("http://{proxy_addr}")),
        ("NO_PROXY", ".corp.test".to_owned()),
        (
            "RSTREAM_CONFIG",
            "/nonexistent/rstream-config.yaml".to_owned(),
        ),
    ];
    let options = ClientOptions::from_env_with(move |k| {
        env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
    })
    .proxy_from_environment()
    .tls(
        TlsOptions::new()
            .add_ca_pem(engine.ca_pem().as_bytes())
            .unwrap(),
    );
    let resolved = options.resolve().unwrap();
    let (proxy, source) = resolved.proxy().unwrap();
    assert_eq!(source, Source::Env("HTTPS_PROXY"));
    assert!(!proxy.applies_to("127.0.0.1", 443));
    assert!(!proxy.applies_to("localhost", 443));
    assert!(!proxy.applies_to("engine.corp.test", 443));
    assert!(proxy.applies_to("engine.example.test", 443));
    let client = rstream::Client::from_resolved(resolved).unwrap();
    within("connect", client.connect()).await.unwrap();
    assert!(log.targets.lock().unwrap().is_empty());
    engine.shutdown().await;
}

/// Every duration option at its extremes: `Duration::MAX` (and zero where
/// zero is meaningless) is either rejected at build time with a config
/// error or clamped to a documented bound; nothing panics, then or later.
#[test]
fn duration_extremes_are_rejected_or_clamped() {
    use std::time::Duration;

    use rstream::config::MAX_TIMEOUT;
    use rstream::control::{Jitter, ReconnectPolicy, MAX_RECONNECT_DELAY};
    use rstream::tunnel::ForwardOptions;

    let base = || ClientOptions::new().engine("a.test");
    let code = |o: ClientOptions| o.build().unwrap_err().code();
    for d in [
        Duration::MAX,
        MAX_TIMEOUT + Duration::from_nanos(1),
        Duration::ZERO,
    ] {
        assert_eq!(
            code(base().connect_timeout(d)),
            "ERR_RSTREAM_INVALID_TIMEOUT",
            "{d:?}"
        );
        assert_eq!(
            code(base().operation_timeout(d)),
            "ERR_RSTREAM_INVALID_TIMEOUT",
            "{d:?}"
        );
        assert_eq!(
            code(base().heartbeat_interval(d)),
            "ERR_RSTREAM_INVALID_CONFIG",
            "{d:?}"
        );
    }
    assert_eq!(MAX_TIMEOUT, Duration::from_secs(86_400));
    base()
        .connect_timeout(MAX_TIMEOUT)
        .operation_timeout(MAX_TIMEOUT)
        .build()
        .expect("the maximum itself is accepted");

    // Reconnect delays: clamped to MAX_RECONNECT_DELAY (1 h), never overflow.
    assert_eq!(MAX_RECONNECT_DELAY, Duration::from_secs(3600));
    let policy = ReconnectPolicy::new()
        .initial_delay(Duration::MAX)
        .max_delay(Duration::MAX)
        .stable_after(Duration::MAX)
        .multiplier(f64::INFINITY)
        .jitter(Jitter::Equal);
    assert_eq!(policy.stable_uptime(), MAX_RECONNECT_DELAY);
    for attempt in [0, 1, 2, 64, u32::MAX] {
        assert_eq!(policy.delay_bound(attempt), MAX_RECONNECT_DELAY);
        assert!(policy.backoff(attempt) <= MAX_RECONNECT_DELAY);
    }
    let tiny = ReconnectPolicy::new()
        .initial_delay(Duration::ZERO)
        .max_delay(Duration::ZERO);
    assert_eq!(tiny.delay_bound(u32::MAX), Duration::from_millis(1));

    // forward_to: connect timeout clamped to 1 ms ..= 1 h, at least 1 relay.
    let fwd = ForwardOptions::new()
        .connect_timeout(Duration::MAX)
        .max_relays(0);
    assert_eq!(fwd.connect_timeout_value(), Duration::from_secs(3600));
    assert_eq!(fwd.relay_limit(), 1);
    let fwd = ForwardOptions::new().connect_timeout(Duration::ZERO);
    assert_eq!(fwd.connect_timeout_value(), Duration::from_millis(1));
}

/// The same extremes on a live connection: an operation timeout at the
/// maximum and a reconnect policy of `Duration::MAX` delays connect, open
/// tunnels and dial without overflowing a deadline; the watch builder
/// takes `Duration::MAX` backoff and read deadline.
#[tokio::test]
async fn maximal_durations_work_on_a_live_connection() {
    use std::time::Duration;

    use futures_util::StreamExt;
    use rstream::api::{ApiOptions, WatchParams};
    use rstream::config::MAX_TIMEOUT;
    use rstream::ReconnectPolicy;

    let engine = support::engine().await;
    let client = support::options(&engine)
        .connect_timeout(MAX_TIMEOUT)
        .operation_timeout(MAX_TIMEOUT)
        .build()
        .unwrap();
    let control = client
        .connect_with(
            ReconnectPolicy::new()
                .initial_delay(Duration::MAX)
                .max_delay(Duration::MAX)
                .stable_after(Duration::MAX),
        )
        .await
        .unwrap();
    let tunnel = control
        .create_tunnel(TunnelOptions::new().name("max-durations"))
        .await
        .unwrap();
    let _echo = spawn_echo(tunnel);
    let stream = client.dial("max-durations").await.unwrap();
    assert_eq!(echo_round_trip(stream, b"ok").await, b"ok");

    let api = client.api_with(ApiOptions::new().timeout(Duration::MAX));
    let mut watch = api
        .watch(WatchParams::new())
        .resilient()
        .backoff(Duration::MAX, Duration::MAX)
        .read_deadline(Duration::MAX);
    let first = within("watch", watch.next()).await.unwrap().unwrap();
    assert_eq!(first.event_type, rstream::api::EventType::StateInitial);
    control.close().await.unwrap();
}
