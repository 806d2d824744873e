//! `rstream::control_plane::ControlPlane` (and the engine's TURN route on
//! `client.api()`) against a control-plane stand-in written here with axum:
//! real HTTP over loopback (clear text, and HTTPS with a test CA), routes
//! as the Go and JavaScript SDKs call them, and a server that CHECKS what
//! it receives (method, path, query, headers, body JSON, bearer token, and
//! app-token signature and claims verified with the app's public key).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{to_bytes, Body};
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rstream::auth::{AppCredentials, AppPublicKey, Leaf, Resources, Token, TunnelScopes};
use rstream::control_plane::{ControlPlane, CreateToken, ListProjects};
use rstream::error::code;
use rstream::{ClientOptions, ErrorKind, TlsOptions};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::support::pki::Ca;
use crate::support::within;

const TOKEN: &str = "cp-good-token";
const FORBIDDEN_TOKEN: &str = "cp-forbidden-token";
const APP_ID: &str = "app_cp";

/// One request as the stand-in saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Value,
}

#[derive(Clone)]
struct StandIn {
    seen: Arc<Mutex<Vec<Seen>>>,
    app_key: Arc<AppPublicKey>,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

impl StandIn {
    fn new(creds: &AppCredentials) -> Self {
        StandIn {
            seen: Arc::default(),
            app_key: Arc::new(AppPublicKey::from_pem(&creds.public_key_pem().unwrap()).unwrap()),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn last(&self) -> Seen {
        self.seen()
            .last()
            .cloned()
            .expect("a request reached the stand-in")
    }

    /// The control plane's auth: the good token, the forbidden token (403),
    /// or an app token of `APP_ID` whose signature verifies and whose
    /// claims are exactly what TOKENS.md §2 says the JS client sends for
    /// control-plane calls (`{permissions: null}` only, 60 s, now).
    ///
    /// On the engine's route (`engine` is the address the request was
    /// sent to), an app token must be minted for that engine
    /// (`metadata.engine`), as every Engine API call's is.
    fn authorize(
        &self,
        headers: &HeaderMap,
        engine: Option<String>,
    ) -> Result<(), (StatusCode, &'static str)> {
        let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
            return Err((StatusCode::UNAUTHORIZED, "missing token"));
        };
        let Some(token) = auth.strip_prefix("Bearer ") else {
            return Err((StatusCode::UNAUTHORIZED, "not a bearer token"));
        };
        if token == TOKEN {
            return Ok(());
        }
        if token == FORBIDDEN_TOKEN {
            return Err((StatusCode::FORBIDDEN, "this token may not do that"));
        }
        let Ok(decoded) = Token::decode(token) else {
            return Err((StatusCode::UNAUTHORIZED, "invalid token"));
        };
        if !self.app_key.verify_signature(&decoded) {
            return Err((StatusCode::UNAUTHORIZED, "bad signature"));
        }
        let payload = token.split('.').nth(1).unwrap();
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        let iat = claims["iat"].as_i64().unwrap_or(0);
        let metadata = match engine {
            Some(engine) => json!({ "engine": engine }),
            None => json!({}),
        };
        let expected = json!({
            "metadata": metadata, "permissions": null, "clientId": APP_ID,
            "exp": iat + 60, "iat": iat, "type": "app",
        });
        if claims != expected || (now() - iat).abs() > 5 {
            return Err((StatusCode::UNAUTHORIZED, "unexpected app token claims"));
        }
        Ok(())
    }
}

fn project(id: &str, endpoint: &str) -> Value {
    json!({
        "id": id, "workspaceId": "ws_1", "name": "Demo", "endpoint": endpoint,
        "url": "deprecated", "domain": "cluster.example.test", "enginePort": 443,
        "status": "active", "provider": "aws", "region": "eu", "plan": "pro",
        "deployment": "shared", "routing": "direct", "turnDomain": "turn.example.test",
        "turnPort": 3478, "turnsPort": 5349, "futureField": {"x": 1},
        "regionalEndpoints": [
            {"provider": "aws", "region": "us", "domain": "us.example.test", "enginePort": 8443},
        ],
    })
}

fn turn_answer(url: &str) -> Value {
    json!({
        "username": "v1:1767225660:app:demo:app_cp",
        "credential": "c2VjcmV0LWNyZWRlbnRpYWw=",
        "urls": ["turn:turn.example.test:3478?transport=udp", url],
        "ttl": 600,
    })
}

async fn handle(state: StandIn, request: Request<Body>) -> Response {
    let (parts, body) = request.into_parts();
    let body = to_bytes(body, 64 * 1024).await.unwrap();
    let json_body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap_or(Value::String("<not json>".into()))
    };
    let path = parts.uri.path().to_owned();
    state.seen.lock().unwrap().push(Seen {
        method: parts.method.clone(),
        path: path.clone(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers.clone(),
        body: json_body.clone(),
    });
    // Routes that answer before auth (transport-level behaviour).
    match path.as_str() {
        "/api/projects/tunnels/resolve/slow" => {
            tokio::time::sleep(Duration::from_secs(10)).await;
            return axum::Json(project("prj_slow", "slow")).into_response();
        }
        "/api/projects/tunnels/resolve/moved" => {
            return (
                StatusCode::FOUND,
                [("location", "/api/projects/tunnels/resolve/redirect-target")],
            )
                .into_response();
        }
        _ => {}
    }
    let engine = (path == "/api/turn-server/credentials").then(|| {
        // h2 carries the authority in the URI, HTTP/1.1 in `Host`.
        parts
            .uri
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_else(|| parts.headers["host"].to_str().unwrap().to_owned())
    });
    if let Err((status, message)) = state.authorize(&parts.headers, engine) {
        return error(status, message);
    }
    let json_ct = parts
        .headers
        .get("content-type")
        .is_some_and(|v| v == "application/json");
    match (parts.method.clone(), path.as_str()) {
        (Method::GET, "/api/whoami") => axum::Json(json!({
            "id": "usr_1", "role": "user", "name": "Ada", "email": "ada@example.test",
            "permissions": ["tunnels.resources.read-only"], "plan": "pro",
        }))
        .into_response(),
        (Method::GET, "/api/projects/tunnels") => axum::Json(json!({
            "projects": [
                project("prj_1", "demo"), project("prj_2", "other"), project("prj_3", "third"),
                project("prj_4", "fourth"), project("prj_5", "fifth"),
            ],
            "page": 1, "pageSize": 20, "total": 5, "totalPages": 1,
        }))
        .into_response(),
        (Method::GET, "/api/projects/tunnels/resolve/huge") => {
            (StatusCode::OK, vec![b' '; 2 * 1024 * 1024]).into_response()
        }
        (Method::GET, "/api/projects/tunnels/resolve/malformed") => {
            (StatusCode::OK, "{\"id\": \"prj_1\", ").into_response()
        }
        (Method::GET, "/api/projects/tunnels/resolve/wrong-type") => {
            axum::Json(json!({"id": "prj_1", "endpoint": "x", "enginePort": "443"})).into_response()
        }
        (Method::GET, p) if p.starts_with("/api/projects/tunnels/resolve/") => {
            let endpoint = &p["/api/projects/tunnels/resolve/".len()..];
            if endpoint.contains('/') {
                return error(StatusCode::NOT_FOUND, "no such route");
            }
            axum::Json(project("prj_1", endpoint)).into_response()
        }
        (Method::GET, "/api/projects/tunnels/missing") => {
            error(StatusCode::NOT_FOUND, "project not found")
        }
        (Method::GET, p) if p.starts_with("/api/projects/tunnels/") => {
            let id = &p["/api/projects/tunnels/".len()..];
            axum::Json(project(id, "demo")).into_response()
        }
        (Method::POST, "/api/tokens") if json_ct => {
            axum::Json(json!({ "token": "minted.by.control-plane" })).into_response()
        }
        (Method::POST, "/api/projects/tunnels/resolve/demo/turn-server/credentials") if json_ct => {
            axum::Json(turn_answer("turns:turn.example.test:5349?transport=tcp")).into_response()
        }
        (Method::POST, "/api/projects/tunnels/resolve/big-turn/turn-server/credentials") => {
            let mut answer = turn_answer("turn:turn.example.test");
            answer["padding"] = Value::String("x".repeat(20 * 1024));
            axum::Json(answer).into_response()
        }
        (Method::POST, "/api/projects/tunnels/resolve/bad-turn/turn-server/credentials") => {
            axum::Json(turn_answer("http://not-turn.example.test")).into_response()
        }
        // The engine's route (the stand-in also plays the engine over HTTPS).
        (Method::POST, "/api/turn-server/credentials") if json_ct => {
            axum::Json(turn_answer("stun:turn.example.test:3478")).into_response()
        }
        _ => error(StatusCode::NOT_FOUND, "no such route"),
    }
}

fn router(state: StandIn) -> Router {
    Router::new().fallback(move |request: Request<Body>| handle(state.clone(), request))
}

/// The stand-in over clear-text HTTP on loopback.
async fn start_http(state: StandIn) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router(state)).await;
    });
    addr
}

/// The stand-in over HTTPS (h2 or http/1.1) with a certificate for
/// `localhost` from a fresh test CA; returns the port and the CA PEM.
async fn start_https(state: StandIn) -> (u16, String) {
    let ca = Ca::new();
    let leaf = ca.leaf(&["localhost"], None);
    let config = leaf.server_config(&[b"h2", b"http/1.1"]);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = router(state);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (port, ca.pem())
}

fn creds() -> AppCredentials {
    AppCredentials::generate(APP_ID).unwrap()
}

fn with_token(addr: SocketAddr, token: &str) -> ControlPlane {
    ControlPlane::builder()
        .url(format!("http://{addr}/"))
        .token(token.to_owned())
        .header("x-team-id", "team-7")
        .build()
        .unwrap()
}

fn assert_common_headers(seen: &Seen, authorization: &str) {
    assert_eq!(seen.headers["authorization"], authorization);
    assert_eq!(seen.headers["accept"], "application/json");
    assert!(seen.headers["user-agent"]
        .to_str()
        .unwrap()
        .starts_with("rstream-rust-runtime/"));
    assert_eq!(seen.headers["x-team-id"], "team-7");
}

#[tokio::test]
async fn whoami_projects_and_tokens_with_a_bearer_token() {
    let creds = creds();
    let state = StandIn::new(&creds);
    let addr = start_http(state.clone()).await;
    let cp = with_token(addr, TOKEN);
    let bearer = format!("Bearer {TOKEN}");

    let me = within("whoami", cp.whoami()).await.unwrap();
    assert_eq!(me.id, "usr_1");
    assert_eq!(me.role.as_deref(), Some("user"));
    assert_eq!(me.permissions, ["tunnels.resources.read-only"]);
    assert_eq!(me.extra["plan"], "pro");
    let seen = state.last();
    assert_eq!(
        (seen.method.clone(), seen.path.as_str()),
        (Method::GET, "/api/whoami")
    );
    assert_eq!(seen.query, None);
    assert_eq!(seen.body, Value::Null);
    assert!(
        seen.headers.get("content-type").is_none(),
        "no body, no content type"
    );
    assert_common_headers(&seen, &bearer);

    let list = within("list", cp.projects().list()).await.unwrap();
    assert_eq!(list.projects.len(), 5);
    assert_eq!(list.total, Some(5));
    assert_eq!(list.projects[1].endpoint, "other");
    assert_eq!(state.last().path, "/api/projects/tunnels");
    assert_eq!(state.last().query, None);

    let params = ListProjects::new()
        .query("de mo")
        .page(2)
        .page_size(5)
        .sort("name")
        .order("asc");
    within("list with", cp.projects().list_with(params))
        .await
        .unwrap();
    assert_eq!(
        state.last().query.as_deref(),
        Some("q=de%20mo&page=2&pageSize=5&sort=name&order=asc")
    );

    // The id is one path segment, percent-encoded.
    within("get", cp.projects().get("prj 9")).await.unwrap();
    assert_eq!(state.last().path, "/api/projects/tunnels/prj%209");
    let project = within("get", cp.projects().get("prj_9")).await.unwrap();
    assert_eq!(project.id, "prj_9");

    // Resolve returns the typed project, not only its engine.
    let project = within("resolve", cp.projects().resolve("demo"))
        .await
        .unwrap();
    assert_eq!(state.last().path, "/api/projects/tunnels/resolve/demo");
    assert_eq!(project.id, "prj_1");
    assert_eq!(project.workspace_id.as_deref(), Some("ws_1"));
    assert_eq!(project.turn_domain.as_deref(), Some("turn.example.test"));
    assert_eq!(project.turns_port, Some(5349));
    assert_eq!(project.extra["futureField"]["x"], 1);
    assert_eq!(
        project.engine(None).unwrap().to_string(),
        "demo.cluster.example.test:443"
    );
    assert_eq!(
        project.engine(Some("US")).unwrap().to_string(),
        "demo.us.example.test:8443"
    );
    assert_eq!(
        project.engine(Some("ap")).unwrap_err().code(),
        code::REGION_UNAVAILABLE
    );

    // Tokens: the body is exactly `{permissions, resources}` built with the
    // access-control builders.
    let request = CreateToken::new()
        .permissions(["tunnels.resources.read-only"])
        .resources(Resources::tunnels(
            Leaf::new()
                .projects(["prj_1"])
                .scopes(TunnelScopes::new().list_any()),
        ));
    let token = within("create token", cp.tokens().create(&request))
        .await
        .unwrap();
    assert_eq!(token.expose(), "minted.by.control-plane");
    assert!(!format!("{token:?}").contains("minted"));
    let seen = state.last();
    assert_eq!(
        (seen.method.clone(), seen.path.as_str()),
        (Method::POST, "/api/tokens")
    );
    assert_eq!(seen.headers["content-type"], "application/json");
    assert_common_headers(&seen, &bearer);
    assert_eq!(
        seen.body,
        json!({
            "permissions": ["tunnels.resources.read-only"],
            "resources": {"tunnels": {"projects": ["prj_1"], "scopes": {"tunnels": {"list": true}}}},
        })
    );
    // Defaults: permissions null, no resources.
    within("create default", cp.tokens().create(&CreateToken::new()))
        .await
        .unwrap();
    assert_eq!(state.last().body, json!({ "permissions": null }));
    // Invalid requests never leave the process.
    let before = state.seen().len();
    let err = cp
        .tokens()
        .create(&CreateToken::new().permissions([" padded "]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), code::INVALID_TOKEN_REQUEST);
    assert_eq!(state.seen().len(), before);

    // The token never shows in Debug.
    let debug = format!("{cp:?}");
    assert!(
        !debug.contains(TOKEN) && !debug.contains("team-7"),
        "{debug}"
    );
}

#[tokio::test]
async fn app_credentials_mint_a_fresh_app_token_per_call() {
    let creds = creds();
    let state = StandIn::new(&creds);
    let addr = start_http(state.clone()).await;
    let cp = ControlPlane::builder()
        .url(format!("http://{addr}"))
        .app_credentials(creds.clone())
        .build()
        .unwrap();
    // The stand-in verifies each token's signature and exact claims.
    within("whoami", cp.whoami()).await.unwrap();
    within("list", cp.projects().list()).await.unwrap();
    within("resolve", cp.projects().resolve("demo"))
        .await
        .unwrap();
    let tokens: Vec<String> = state
        .seen()
        .iter()
        .map(|s| s.headers["authorization"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(tokens.len(), 3);
    assert!(tokens
        .iter()
        .all(|t| t.starts_with("Bearer eyJhbGciOiJFUzUxMiIsInR5cCI6IkpXVCJ9.")));
    assert_ne!(tokens[0], tokens[1], "a fresh token per call");
    assert!(!format!("{cp:?}").contains("eyJ"));

    // A token of another application is refused: 401 → its own code.
    let other = ControlPlane::builder()
        .url(format!("http://{addr}"))
        .app_credentials(AppCredentials::generate(APP_ID).unwrap())
        .build()
        .unwrap();
    let err = within("other app", other.whoami()).await.unwrap_err();
    assert_eq!(err.code(), code::API_UNAUTHENTICATED);
    assert_eq!(err.kind(), ErrorKind::Auth);
    assert!(err.message().contains("bad signature"), "{err}");
}

#[tokio::test]
async fn from_options_uses_the_configured_api_url_token_and_headers() {
    let creds = creds();
    let state = StandIn::new(&creds);
    let addr = start_http(state.clone()).await;
    let options = ClientOptions::new()
        .no_config_file()
        .api_url(format!("http://{addr}"))
        .token(TOKEN)
        .control_plane_header("x-team-id", "team-7");
    let cp = ControlPlane::from_options(&options).unwrap();
    assert_eq!(cp.url(), format!("http://{addr}"));
    within("whoami", cp.whoami()).await.unwrap();
    assert_common_headers(&state.last(), &format!("Bearer {TOKEN}"));

    // From a client (an engine is configured; no I/O to it happens).
    let client = options.clone().engine("localhost:1").build().unwrap();
    let cp = ControlPlane::from_client(&client).unwrap();
    within("whoami from client", cp.whoami()).await.unwrap();
    assert_common_headers(&state.last(), &format!("Bearer {TOKEN}"));

    // App credentials in the options win over nothing, and are minted per call.
    let options = ClientOptions::new()
        .no_config_file()
        .api_url(format!("http://{addr}"))
        .app_credentials(creds);
    let cp = ControlPlane::from_options(&options).unwrap();
    within("whoami app", cp.whoami()).await.unwrap();
}

/// Managed resolution (the client's own `GET .../resolve/{endpoint}`)
/// authenticates as the `ControlPlane` client does: with app credentials,
/// a fresh `{permissions: null}` app token per call (the stand-in checks
/// signature and exact claims), not only with a bearer token.
#[tokio::test]
async fn managed_resolution_uses_app_credentials() {
    let creds = creds();
    let state = StandIn::new(&creds);
    let addr = start_http(state.clone()).await;
    let managed = |creds: AppCredentials| {
        ClientOptions::new()
            .no_config_file()
            .api_url(format!("http://{addr}"))
            .project_endpoint("demo")
            .control_plane_header("x-team-id", "team-7")
            .app_credentials(creds)
            .build()
            .unwrap()
    };
    let engine = within("resolve", managed(creds.clone()).resolve_engine())
        .await
        .unwrap();
    assert_eq!(engine.to_string(), "demo.cluster.example.test:443");
    let first = state.last();
    assert_eq!(first.path, "/api/projects/tunnels/resolve/demo");
    assert_eq!(first.headers["x-team-id"], "team-7");
    let first = first.headers["authorization"].to_str().unwrap().to_owned();
    assert!(first.starts_with("Bearer eyJ"), "an app token: {first}");

    // Another client resolves with a token of its own.
    within("resolve again", managed(creds).resolve_engine())
        .await
        .unwrap();
    assert_ne!(state.last().headers["authorization"], first.as_str());

    // Credentials of another application: the stand-in refuses them.
    let other = managed(AppCredentials::generate(APP_ID).unwrap());
    let err = within("other app", other.resolve_engine())
        .await
        .unwrap_err();
    assert!(err.message().contains("bad signature"), "{err}");
}

#[tokio::test]
async fn auth_failures_have_their_own_codes() {
    let creds = creds();
    let state = StandIn::new(&creds);
    let addr = start_http(state.clone()).await;

    let err = within("401", with_token(addr, "wrong").whoami())
        .await
        .unwrap_err();
    assert_eq!(err.code(), code::API_UNAUTHENTICATED);
    assert_eq!(err.kind(), ErrorKind::Auth);
    assert!(
        err.message().contains("401") && !err.message().contains("wrong"),
        "{err}"
    );

    let err = within("403", with_token(addr, FORBIDDEN_TOKEN).projects().list())
        .await
        .unwrap_err();
    assert_eq!(err.code(), code::API_FORBIDDEN);
    assert_eq!(err.kind(), ErrorKind::Auth);
    // The control plane's `{"error": ...}` message is surfaced.
    assert!(
        err.message().contains("this token may not do that"),
        "{err}"
    );

    // No credentials at all: the request goes without Authorization and
    // the control plane's 401 comes back.
    let anonymous = ControlPlane::builder()
        .url(format!("http://{addr}"))
        .build()
        .unwrap();
    let err = within("anonymous", anonymous.whoami()).await.unwrap_err();
    assert_eq!(err.code(), code::API_UNAUTHENTICATED);
    assert!(state.last().headers.get("authorization").is_none());

    let err = within("404", with_token(addr, TOKEN).projects().get("missing"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), code::API_NOT_FOUND);
    let err = with_token(addr, TOKEN)
        .projects()
        .get("  ")
        .await
        .unwrap_err();
    assert_eq!(err.code(), code::INVALID_ID);
}

#[tokio::test]
async fn hostile_answers_are_refused() {
    let creds = creds();
    let state = StandIn::new(&creds);
    let addr = start_http(state.clone()).await;
    let cp = with_token(addr, TOKEN);

    // Oversized: more than the 1 MiB default cap.
    let err = within("huge", cp.projects().resolve("huge"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), code::API_BODY_TOO_LARGE);
    // A smaller cap applies to ordinary answers too (the list is ~2.3 KiB).
    let small = ControlPlane::builder()
        .url(format!("http://{addr}"))
        .token(TOKEN)
        .max_body_size(1024)
        .build()
        .unwrap();
    let err = within("small cap", small.projects().list())
        .await
        .unwrap_err();
    assert_eq!(err.code(), code::API_BODY_TOO_LARGE);

    // Malformed JSON, and a known field with the wrong type.
    let err = within("malformed", cp.projects().resolve("malformed"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), code::API_INVALID_RESPONSE);
    let err = within("wrong type", cp.projects().resolve("wrong-type"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), code::API_INVALID_RESPONSE);

    // A redirect is not followed.
    let err = within("moved", cp.projects().resolve("moved"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), code::API_REDIRECT);
    assert!(
        !state
            .seen()
            .iter()
            .any(|s| s.path.ends_with("/redirect-target")),
        "the redirect was followed"
    );

    // A slow server hits the call's deadline.
    let quick = ControlPlane::builder()
        .url(format!("http://{addr}"))
        .token(TOKEN)
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = within("slow", quick.projects().resolve("slow"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), code::API_TIMEOUT);
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // Managed TURN answers are checked (TOKENS.md §6 schemes).
    let err = within("bad turn", cp.projects().turn_credentials("bad-turn", None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), code::API_INVALID_RESPONSE);
    assert!(err.message().contains("not turn:"), "{err}");
    // TURN answers are capped at 16 KiB whatever the client's body cap.
    let err = within("big turn", cp.projects().turn_credentials("big-turn", None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), code::API_BODY_TOO_LARGE);
}

#[tokio::test]
async fn api_url_rules() {
    for (url, ok) in [
        ("https://rstream.io", true),
        ("http://127.0.0.1:9", true),
        ("http://localhost:9", true),
        ("http://[::1]:9", true),
        ("http://rstream.io", false),
        ("ftp://rstream.io", false),
        ("https://user:pw@rstream.io", false),
        ("not a url", false),
    ] {
        let built = ControlPlane::builder().url(url).build();
        match (built, ok) {
            (Ok(_), true) => {}
            (Err(e), false) => assert_eq!(e.code(), code::INVALID_API_URL, "{url}"),
            (r, _) => panic!("{url}: {r:?}"),
        }
    }
    let err = ControlPlane::builder()
        .header("bad header", "x")
        .build()
        .unwrap_err();
    assert_eq!(err.code(), code::INVALID_CONFIG);
}

#[tokio::test]
async fn https_with_a_private_ca_and_turn_on_both_routes() {
    let creds = creds();
    let state = StandIn::new(&creds);
    let (port, ca_pem) = start_https(state.clone()).await;
    let tls = TlsOptions::new().add_ca_pem(ca_pem.as_bytes()).unwrap();

    // Without the CA, the handshake fails.
    let untrusted = ControlPlane::builder()
        .url(format!("https://localhost:{port}"))
        .token(TOKEN)
        .build()
        .unwrap();
    let err = within("untrusted", untrusted.whoami()).await.unwrap_err();
    assert_eq!(err.code(), code::TLS, "{err}");

    let cp = ControlPlane::builder()
        .url(format!("https://localhost:{port}"))
        .tls(tls.clone())
        .app_credentials(creds.clone())
        .build()
        .unwrap();
    let me = within("whoami over https", cp.whoami()).await.unwrap();
    assert_eq!(me.id, "usr_1");

    // Managed TURN on the control plane.
    let turn = within(
        "managed turn",
        cp.projects()
            .turn_credentials("demo", Some(Duration::from_secs(600))),
    )
    .await
    .unwrap();
    let seen = state.last();
    assert_eq!(seen.method, Method::POST);
    assert_eq!(
        seen.path,
        "/api/projects/tunnels/resolve/demo/turn-server/credentials"
    );
    assert_eq!(seen.body, json!({ "ttlSeconds": 600 }));
    assert_eq!(turn.ttl(), Duration::from_secs(600));
    assert_eq!(turn.urls().len(), 2);
    assert_eq!(turn.credential().expose(), "c2VjcmV0LWNyZWRlbnRpYWw=");
    assert!(!format!("{turn:?}").contains("c2VjcmV0"));

    // The engine route: the stand-in plays the engine at the same address
    // (the local engine does not serve this route). Token auth, as every
    // Engine API call.
    let client = ClientOptions::new()
        .no_config_file()
        .engine(format!("localhost:{port}"))
        .token(TOKEN)
        .tls(tls)
        .build()
        .unwrap();
    let turn = within("engine turn", client.api().turn_credentials(None))
        .await
        .unwrap();
    let seen = state.last();
    assert_eq!(
        (seen.method.clone(), seen.path.as_str()),
        (Method::POST, "/api/turn-server/credentials")
    );
    assert_eq!(seen.body, json!({}));
    assert_eq!(seen.headers["authorization"], format!("Bearer {TOKEN}"));
    assert_eq!(seen.headers["content-type"], "application/json");
    assert_eq!(turn.urls()[1], "stun:turn.example.test:3478");
    assert_eq!(turn.username(), "v1:1767225660:app:demo:app_cp");

    // Out-of-range ttls never leave the process.
    let before = state.seen().len();
    for ttl in [
        Duration::ZERO,
        Duration::from_secs(3601),
        Duration::from_millis(1500),
    ] {
        let err = client.api().turn_credentials(Some(ttl)).await.unwrap_err();
        assert_eq!(err.code(), code::INVALID_TURN_TTL);
    }
    assert_eq!(state.seen().len(), before);

    // App credentials: a fresh app token minted for this engine (the
    // stand-in checks `metadata.engine` and the signature).
    let client = ClientOptions::new()
        .no_config_file()
        .engine(format!("localhost:{port}"))
        .app_credentials(creds.clone())
        .tls(TlsOptions::new().add_ca_pem(ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    within(
        "engine turn with app credentials",
        client.api().turn_credentials(Some(Duration::from_secs(60))),
    )
    .await
    .unwrap();
    assert_eq!(state.last().body, json!({ "ttlSeconds": 60 }));

    // A 401 from the engine route maps as the Engine API's statuses do.
    let client = ClientOptions::new()
        .no_config_file()
        .engine(format!("localhost:{port}"))
        .token("wrong")
        .tls(TlsOptions::new().add_ca_pem(ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let err = within("engine 401", client.api().turn_credentials(None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), code::ENGINE_API_UNAUTHENTICATED);
}

#[tokio::test]
async fn calls_go_through_an_http_connect_proxy() {
    let creds = creds();
    let state = StandIn::new(&creds);
    let (port, ca_pem) = start_https(state.clone()).await;
    let (proxy, log) = crate::support::connect_proxy::start(None, None).await;
    let cp = ControlPlane::builder()
        .url(format!("https://localhost:{port}"))
        .tls(TlsOptions::new().add_ca_pem(ca_pem.as_bytes()).unwrap())
        .proxy(rstream::transport::HttpProxy::parse(&format!("http://{proxy}")).unwrap())
        .token(TOKEN)
        .build()
        .unwrap();
    let project = within("resolve via proxy", cp.projects().resolve("demo"))
        .await
        .unwrap();
    assert_eq!(project.id, "prj_1");
    // TLS end to end through the tunnel: the proxy saw only the target.
    assert_eq!(
        log.targets.lock().unwrap().as_slice(),
        [format!("localhost:{port}")]
    );
    assert_eq!(
        state.last().headers["authorization"],
        format!("Bearer {TOKEN}")
    );
}
