//! Access control end to end over TLS: app tokens minted by `rstream::auth`
//! against the local engine with a registered application (TOKENS.md).
#![cfg(feature = "local-engine")]

use crate::support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rstream::api::ListTunnelsParams;
use rstream::auth::{AppCredentials, Resources, TokenRequest, TunnelFilter, TunnelScopes};
use rstream::engine::LocalEngine;
use rstream::proto::{
    self, message::Payload, open_control_channel_rsp, ErrorCode, OpenControlChannelReq,
};
use rstream::{Client, DialOptions, TunnelOptions};
use support::{echo_round_trip, raw_get, spawn_echo, within};

/// The protocol's `UNAUTHORIZED`.
const UNAUTHORIZED: i32 = 1000;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn engine_for(creds: &AppCredentials, static_token: Option<&str>) -> LocalEngine {
    support::init_tracing();
    let key = rstream::auth::AppPublicKey::from_pem(&creds.public_key_pem().unwrap()).unwrap();
    let mut builder = LocalEngine::builder()
        .app(creds.client_id(), key)
        .project_id("proj-local");
    if let Some(t) = static_token {
        builder = builder.token(t);
    }
    builder.start().await.expect("engine")
}

fn app_client(engine: &LocalEngine, creds: &AppCredentials) -> Client {
    support::options(engine)
        .app_credentials(creds.clone())
        .build()
        .expect("client")
}

fn token_client(engine: &LocalEngine, token: &str) -> Client {
    support::options(engine)
        .token(token)
        .build()
        .expect("client")
}

/// A client with app credentials mints its own tokens: it opens control
/// channels, creates and dials tunnels and calls the Engine API; static
/// tokens keep working beside it.
#[tokio::test]
async fn app_credentials_authenticate_agents_dials_and_the_api() {
    let creds = AppCredentials::generate("backend").unwrap();
    let engine = engine_for(&creds, Some("static-token")).await;
    let client = app_client(&engine, &creds);
    assert!(!format!("{client:?}").contains(creds.client_secret().unwrap().expose()));

    let control = within("app connect", client.connect()).await.unwrap();
    let tunnel = control
        .create_tunnel(TunnelOptions::new().name("app-echo"))
        .await
        .unwrap();
    let _echo = spawn_echo(tunnel);
    let stream = within("app dial", client.dial("app-echo")).await.unwrap();
    assert_eq!(
        within("echo", echo_round_trip(stream, b"minted")).await,
        b"minted"
    );
    let tunnels = within("list", client.api().list_tunnels(ListTunnelsParams::new()))
        .await
        .unwrap();
    assert!(tunnels
        .iter()
        .any(|t| t.name.as_deref() == Some("app-echo")));

    // The static token still works; no credentials at all does not.
    let stream = within(
        "static dial",
        token_client(&engine, "static-token").dial("app-echo"),
    )
    .await
    .unwrap();
    assert_eq!(within("echo", echo_round_trip(stream, b"s")).await, b"s");
    let err = within("anonymous", support::client(&engine).connect())
        .await
        .unwrap_err();
    assert_eq!(err.engine_code(), Some(UNAUTHORIZED), "{err}");
    control.close().await.unwrap();
}

/// Expired, foreign-key, tampered and unsigned tokens are each refused with
/// `UNAUTHORIZED` (control channel) and 401 (Engine API).
#[tokio::test]
async fn bad_app_tokens_are_refused() {
    let creds = AppCredentials::generate("backend").unwrap();
    let engine = engine_for(&creds, None).await;

    let expired = creds
        .mint(
            &TokenRequest::new()
                .issued_at(now() - 290)
                .expires_in(Duration::from_secs(1)),
        )
        .unwrap();
    let impostor = AppCredentials::generate("backend").unwrap();
    let foreign = impostor.mint(&TokenRequest::new()).unwrap();
    let good = creds.mint(&TokenRequest::new()).unwrap();
    let parts: Vec<&str> = good.expose().split('.').collect();
    let forged_claims = base64_url(&format!(
        r#"{{"metadata":{{}},"permissions":null,"clientId":"backend","exp":{},"iat":{},"type":"app"}}"#,
        now() + 3000,
        now()
    ));
    let tampered = format!("{}.{forged_claims}.{}", parts[0], parts[2]);
    let unsigned = format!(
        "{}.{}.",
        base64_url(r#"{"alg":"none","typ":"JWT"}"#),
        parts[1]
    );
    // The SDK itself refuses to send a token it can see has expired.
    let err = support::options(&engine)
        .token(expired.expose())
        .build()
        .unwrap_err();
    assert_eq!(err.code(), "ERR_RSTREAM_TOKEN_EXPIRED", "{err}");
    for (what, token, needle) in [
        ("expired", expired.expose().to_owned(), "expired"),
        ("foreign key", foreign.expose().to_owned(), "signature"),
        ("tampered", tampered.clone(), "signature"),
        ("alg none", unsigned.clone(), "ES512"),
    ] {
        let refused = open_raw(&engine, &token).await.expect_err(what);
        assert_eq!(
            refused.code,
            ErrorCode::Unauthorized as i32,
            "{what}: {refused:?}"
        );
        assert!(
            refused
                .message
                .as_deref()
                .unwrap_or_default()
                .contains(needle),
            "{what}: {refused:?}"
        );
        let (status, body) = raw_get(&engine, "/api/tunnels", Some(&token)).await;
        assert_eq!(status, 401, "{what}: {body}");
    }
    // The good one passes both.
    let control = within("good", token_client(&engine, good.expose()).connect())
        .await
        .unwrap();
    let (status, body) = raw_get(&engine, "/api/tunnels", Some(good.expose())).await;
    assert_eq!(status, 200, "{body}");
    control.close().await.unwrap();
}

/// Opens a control channel by hand with `token` (what the SDK would not
/// send): `Err` with the engine's refusal.
async fn open_raw(engine: &LocalEngine, token: &str) -> Result<(), proto::Error> {
    let mut conn = support::raw::dial(engine, None).await;
    let req = OpenControlChannelReq {
        client_details: Some(support::raw::details("access-test", Some(token))),
        liveness: None,
    };
    support::raw::send(&mut conn, Payload::OpenControlChannelReq(req)).await;
    match support::raw::recv(&mut conn).await {
        Payload::OpenControlChannelRsp(rsp) => match rsp.payload {
            Some(open_control_channel_rsp::Payload::Ok(_)) => Ok(()),
            Some(open_control_channel_rsp::Payload::Error(e)) => Err(e),
            None => panic!("empty OpenControlChannelRsp"),
        },
        other => panic!("expected OpenControlChannelRsp, got {}", other.name()),
    }
}

fn base64_url(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

/// Scopes at the front doors: a list-only token cannot open a control
/// channel or dial; a create-only token cannot list; a project-targeted
/// token must name this engine's project; permissions narrow too.
#[tokio::test]
async fn scopes_gate_each_surface() {
    let creds = AppCredentials::generate("backend").unwrap();
    let engine = engine_for(&creds, None).await;
    let mint = |scopes: TunnelScopes| {
        creds
            .mint(&TokenRequest::new().resources(Resources::tunnels(scopes)))
            .unwrap()
    };
    let list_only = mint(TunnelScopes::new().list_any());
    let create_only = mint(TunnelScopes::new().create_any());

    let err = within(
        "list-only connect",
        token_client(&engine, list_only.expose()).connect(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.engine_code(), Some(UNAUTHORIZED), "{err}");
    let (status, body) = raw_get(&engine, "/api/tunnels", Some(list_only.expose())).await;
    assert_eq!(status, 200, "{body}");

    let control = within(
        "create connect",
        token_client(&engine, create_only.expose()).connect(),
    )
    .await
    .unwrap();
    let tunnel = control
        .create_tunnel(TunnelOptions::new().name("scoped"))
        .await
        .unwrap();
    let _echo = spawn_echo(tunnel);
    let (status, body) = raw_get(&engine, "/api/tunnels", Some(create_only.expose())).await;
    assert_eq!(status, 403, "{body}");
    // Without 0-RTT the dial waits for the engine's answer.
    let err = within(
        "create-only dial",
        token_client(&engine, create_only.expose())
            .dial_with("scoped", DialOptions::new().zero_rtt(false)),
    )
    .await
    .unwrap_err();
    assert_eq!(err.engine_code(), Some(UNAUTHORIZED), "{err}");

    // Connect scope: dials, nothing else.
    let dialer = mint(TunnelScopes::new().connect_any());
    let stream = within(
        "dial",
        token_client(&engine, dialer.expose()).dial("scoped"),
    )
    .await
    .unwrap();
    assert_eq!(within("echo", echo_round_trip(stream, b"d")).await, b"d");

    // Project targets: this engine's project passes, another does not.
    for (project, status) in [("proj-local", 200), ("proj-other", 403)] {
        let token = creds
            .mint(
                &TokenRequest::new()
                    .project_id(project)
                    .resources(Resources::tunnels(TunnelScopes::new().list_any())),
            )
            .unwrap();
        let (got, body) = raw_get(&engine, "/api/tunnels", Some(token.expose())).await;
        assert_eq!(got, status, "{project}: {body}");
    }
    // Permissions without the read-only one: 403.
    let token = creds
        .mint(&TokenRequest::new().permissions(["tunnels.tunnels.create-delete"]))
        .unwrap();
    let (got, body) = raw_get(&engine, "/api/tunnels", Some(token.expose())).await;
    assert_eq!(got, 403, "{body}");
    control.close().await.unwrap();
}

/// `rstream.token` on the watch routes: a list-only app token is accepted
/// on `/api/sse`; a token with connect scope is 403; the query token is
/// never read on `/api/tunnels` (401).
#[tokio::test]
async fn query_tokens_follow_the_watch_rules() {
    let creds = AppCredentials::generate("backend").unwrap();
    let engine = engine_for(&creds, None).await;
    let list_only = creds
        .mint(&TokenRequest::new().resources(Resources::tunnels(TunnelScopes::new().list_any())))
        .unwrap();
    let broad = creds
        .mint(&TokenRequest::new().resources(Resources::tunnels(
            TunnelScopes::new().list_any().connect_any(),
        )))
        .unwrap();
    let unscoped = creds.mint(&TokenRequest::new()).unwrap();
    let (status, body) = raw_get(
        &engine,
        &format!("/api/sse?rstream.token={}", list_only.expose()),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for token in [&broad, &unscoped] {
        let (status, body) = raw_get(
            &engine,
            &format!("/api/sse?rstream.token={}", token.expose()),
            None,
        )
        .await;
        assert_eq!(status, 403, "{body}");
    }
    let (status, body) = raw_get(
        &engine,
        &format!("/api/tunnels?rstream.token={}", list_only.expose()),
        None,
    )
    .await;
    assert_eq!(status, 401, "{body}");
}

/// The binary's `--new-app-credentials` writes a public key that `--app`
/// accepts, and prints the exports that `AppCredentials::new` reads.
#[test]
fn new_app_credentials_flag() {
    let dir = std::env::temp_dir().join(format!("rstream-newapp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let pem = dir.join("app.pem");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rstream-local-engine"))
        .arg("--new-app-credentials")
        .arg(format!("local-app={}", pem.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let line = String::from_utf8(out.stdout).unwrap();
    let mut vars = std::collections::HashMap::new();
    for pair in line.trim().trim_start_matches("export ").split(' ') {
        let (k, v) = pair.split_once('=').unwrap();
        vars.insert(k.to_owned(), v.to_owned());
    }
    let creds =
        AppCredentials::new(&vars["RSTREAM_CLIENT_ID"], &vars["RSTREAM_CLIENT_SECRET"]).unwrap();
    assert_eq!(creds.client_id(), "local-app");
    assert_eq!(
        std::fs::read_to_string(&pem).unwrap(),
        creds.public_key_pem().unwrap()
    );
    // Never overwrites.
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_rstream-local-engine"))
        .arg("--new-app-credentials")
        .arg(format!("local-app={}", pem.display()))
        .output()
        .unwrap();
    assert!(!again.status.success());
    // `--app` parses it.
    let settings = rstream::engine::cli::parse_from([
        "rstream-local-engine",
        "--app",
        &format!("local-app={}", pem.display()),
        "--project-id",
        "p",
    ]);
    assert!(settings.is_ok());
    let bad = rstream::engine::cli::parse_from(["rstream-local-engine", "--app", "no-equals"]);
    assert!(bad.is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The issue's create case: an agent whose create scope is limited to
/// `protocol: http` + label `env=dev` creates that tunnel, gets omitted
/// properties forced (a bare tunnel becomes http + env=dev), and is refused
/// any other.
#[tokio::test]
async fn create_scope_filters_requested_properties() {
    let creds = AppCredentials::generate("backend").unwrap();
    let engine = engine_for(&creds, None).await;
    let agent = creds
        .mint(&TokenRequest::new().resources(Resources::tunnels(
            TunnelScopes::new().create(TunnelFilter::new().protocol("http").label("env", "dev")),
        )))
        .unwrap();
    let control = within("connect", token_client(&engine, agent.expose()).connect())
        .await
        .unwrap();

    let allowed = control
        .create_tunnel(TunnelOptions::http().name("dev-web").label("env", "dev"))
        .await
        .unwrap();
    assert_eq!(allowed.properties().protocol.as_deref(), Some("http"));

    // Omitted protocol and label: forced from the single-valued filter.
    let forced = control
        .create_tunnel(TunnelOptions::new().name("forced"))
        .await
        .unwrap();
    let props = forced.properties();
    assert_eq!(props.protocol.as_deref(), Some("http"), "{props:?}");
    assert_eq!(props.labels.get("env").map(String::as_str), Some("dev"));

    for (what, options) in [
        ("other label", TunnelOptions::http().label("env", "prod")),
        ("other protocol", TunnelOptions::tls().label("env", "dev")),
    ] {
        let err = control.create_tunnel(options).await.unwrap_err();
        assert_eq!(err.engine_code(), Some(UNAUTHORIZED), "{what}: {err}");
        assert!(err.to_string().contains("create scope"), "{what}: {err}");
    }
    assert_eq!(engine.tunnels().len(), 2);
    control.close().await.unwrap();
}

/// The issue's connect case: a dialer whose connect scope names one tunnel
/// dials it and not another; label and status filters see the full record.
#[tokio::test]
async fn connect_scope_filters_the_dialed_tunnel() {
    let creds = AppCredentials::generate("backend").unwrap();
    let engine = engine_for(&creds, None).await;
    let owner = app_client(&engine, &creds);
    let control = within("owner", owner.connect()).await.unwrap();
    let first = control
        .create_tunnel(TunnelOptions::new().name("one").label("team", "a"))
        .await
        .unwrap();
    let first_id = first.id();
    let _one = spawn_echo(first);
    let _two = spawn_echo(
        control
            .create_tunnel(TunnelOptions::new().name("two").label("team", "b"))
            .await
            .unwrap(),
    );
    let dial = |token: &str, tunnel: &'static str| {
        let client = token_client(&engine, token);
        async move {
            client
                .dial_with(tunnel, DialOptions::new().zero_rtt(false))
                .await
        }
    };
    let by_id = creds
        .mint(&TokenRequest::new().resources(Resources::tunnels(
            TunnelScopes::new().connect(TunnelFilter::new().id(first_id.as_str())),
        )))
        .unwrap();
    let stream = within("dial one", dial(by_id.expose(), "one"))
        .await
        .unwrap();
    assert_eq!(within("echo", echo_round_trip(stream, b"1")).await, b"1");
    let err = within("dial two", dial(by_id.expose(), "two"))
        .await
        .unwrap_err();
    assert_eq!(err.engine_code(), Some(UNAUTHORIZED), "{err}");
    assert!(err.to_string().contains("connect scope"), "{err}");

    let by_label = creds
        .mint(&TokenRequest::new().resources(Resources::tunnels(
            TunnelScopes::new().connect(TunnelFilter::new().status("online").label("team", "b")),
        )))
        .unwrap();
    let stream = within("dial two", dial(by_label.expose(), "two"))
        .await
        .unwrap();
    assert_eq!(within("echo", echo_round_trip(stream, b"2")).await, b"2");
    assert!(within("dial one", dial(by_label.expose(), "one"))
        .await
        .is_err());
    control.close().await.unwrap();
}

/// The issue's list case over REST: a label filter and a `select` show only
/// matching tunnels, and only the selected fields; a hidden tunnel's
/// `/{id}` is 404.
#[tokio::test]
async fn list_scope_filters_and_selects() {
    let creds = AppCredentials::generate("backend").unwrap();
    let engine = engine_for(&creds, None).await;
    let control = within("owner", app_client(&engine, &creds).connect())
        .await
        .unwrap();
    let dev = control
        .create_tunnel(TunnelOptions::new().name("dev-api").label("env", "dev"))
        .await
        .unwrap();
    let prod = control
        .create_tunnel(TunnelOptions::new().name("prod-api").label("env", "prod"))
        .await
        .unwrap();
    let token = creds
        .mint(
            &TokenRequest::new().resources(Resources::tunnels(
                TunnelScopes::new()
                    .list(TunnelFilter::new().label("env", "dev"))
                    .select(["id", "name"]),
            )),
        )
        .unwrap();
    let (status, body) = raw_get(&engine, "/api/tunnels", Some(token.expose())).await;
    assert_eq!(status, 200, "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        listed,
        serde_json::json!([{ "id": dev.id(), "name": "dev-api" }]),
        "{body}"
    );
    let (status, body) = raw_get(
        &engine,
        &format!("/api/tunnels/{}", dev.id()),
        Some(token.expose()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = raw_get(
        &engine,
        &format!("/api/tunnels/{}", prod.id()),
        Some(token.expose()),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    // Clients carry no labels: the label filter hides them.
    let (status, body) = raw_get(&engine, "/api/clients", Some(token.expose())).await;
    assert_eq!((status, body.as_str()), (200, "[]"));
    // An unfiltered list token sees both, whole.
    let all = creds
        .mint(&TokenRequest::new().resources(Resources::tunnels(TunnelScopes::new().list_any())))
        .unwrap();
    let (_, body) = raw_get(&engine, "/api/tunnels", Some(all.expose())).await;
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{body}");
    assert!(listed[0].get("client_id").is_some());
    control.close().await.unwrap();
}

/// Edge authentication the local engine cannot provide (all but
/// `token_auth` and `mtls_auth`) is refused with
/// `FEATURE_NOT_AVAILABLE` and a message that says why and where to read.
#[tokio::test]
async fn edge_auth_refusals_say_why() {
    let engine = support::engine().await;
    let control = within("connect", support::client(&engine).connect())
        .await
        .unwrap();
    for (what, options, needle) in [
        (
            "rstream_auth",
            TunnelOptions::http().rstream_auth(true),
            "login",
        ),
        (
            "challenge_mode",
            TunnelOptions::http().challenge_mode(true),
            "challenge",
        ),
        ("geoip", TunnelOptions::http().geoip("FR"), "GeoIP"),
    ] {
        let err = control.create_tunnel(options).await.unwrap_err();
        assert_eq!(err.engine_code(), Some(5000), "{what}: {err}");
        let text = err.to_string();
        assert!(
            text.contains(needle) && text.contains("ACCESS_CONTROL.md"),
            "{what}: {text}"
        );
    }
    control.close().await.unwrap();
}

/// The token-endpoint pattern (`examples/token_endpoint.rs`): a backend
/// route mints a 60 s list-only token; the browser-side calls with it can
/// watch over `/api/sse?rstream.token=` and list, and nothing else.
#[tokio::test]
async fn browser_token_from_a_minting_endpoint() {
    use axum::routing::get;
    let creds = AppCredentials::generate("web-backend").unwrap();
    let engine = engine_for(&creds, None).await;
    let owner = within("owner", app_client(&engine, &creds).connect())
        .await
        .unwrap();
    let _tunnel = owner
        .create_tunnel(TunnelOptions::new().name("watched"))
        .await
        .unwrap();

    // The backend route, as in the example.
    let minter = creds.clone();
    let engine_address = engine.engine_address();
    let app = axum::Router::new().route(
        "/rstream/token",
        get(move || {
            let minter = minter.clone();
            let engine_address = engine_address.clone();
            async move {
                let token = minter
                    .mint(
                        &TokenRequest::new()
                            .permissions(["tunnels.resources.read-only"])
                            .engine(engine_address)
                            .resources(Resources::tunnels(TunnelScopes::new().list_any())),
                    )
                    .unwrap();
                axum::Json(serde_json::json!({ "token": token.expose() }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    // The browser fetches its token...
    let tcp = tokio::net::TcpStream::connect(backend).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let rsp = send
        .send_request(
            http::Request::get("/rstream/token")
                .header("host", backend.to_string())
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    let minted: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let token = minted["token"].as_str().unwrap().to_owned();

    // ...watches and lists with it...
    let (status, body) = raw_get(&engine, &format!("/api/sse?rstream.token={token}"), None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = raw_get(&engine, "/api/tunnels", Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"watched\""), "{body}");
    // ...and can do nothing else.
    let err = within("browser connect", token_client(&engine, &token).connect())
        .await
        .unwrap_err();
    assert_eq!(err.engine_code(), Some(UNAUTHORIZED), "{err}");
    let err = within(
        "browser dial",
        token_client(&engine, &token).dial_with("watched", DialOptions::new().zero_rtt(false)),
    )
    .await
    .unwrap_err();
    assert_eq!(err.engine_code(), Some(UNAUTHORIZED), "{err}");
    owner.close().await.unwrap();
}

/// The issue's list case over SSE and WebSocket: the `state.initial`
/// snapshot and later events hold only the tunnels the label filter
/// matches, with only the selected fields (the typed client parses them:
/// `id`, `status`, `client_id` are selected).
#[tokio::test]
async fn list_scope_filters_watches() {
    use futures_util::StreamExt;
    use rstream::api::{EventObject, EventType, WatchParams};
    let creds = AppCredentials::generate("backend").unwrap();
    let engine = engine_for(&creds, None).await;
    let control = within("owner", app_client(&engine, &creds).connect())
        .await
        .unwrap();
    let _dev = control
        .create_tunnel(TunnelOptions::new().name("dev-api").label("env", "dev"))
        .await
        .unwrap();
    let _prod = control
        .create_tunnel(TunnelOptions::new().name("prod-api").label("env", "prod"))
        .await
        .unwrap();
    let token = creds
        .mint(
            &TokenRequest::new().resources(Resources::tunnels(
                TunnelScopes::new()
                    .list(TunnelFilter::new().label("env", "dev"))
                    .select(["id", "status", "client_id", "name"]),
            )),
        )
        .unwrap();
    let api = token_client(&engine, token.expose()).api();
    let mut kept = Vec::new();
    for websocket in [false, true] {
        let watch = api.watch(WatchParams::new());
        let mut watch = if websocket { watch.websocket() } else { watch };
        let first = within("initial", watch.next()).await.unwrap().unwrap();
        assert_eq!(first.event_type, EventType::StateInitial);
        let EventObject::Initial(initial) = &first.object else {
            panic!("{first:?}")
        };
        let names: Vec<_> = initial.tunnels.iter().map(|t| t.name.clone()).collect();
        assert!(
            names
                .iter()
                .all(|n| n.as_deref().is_some_and(|n| n.starts_with("dev-"))),
            "ws={websocket}: {names:?}"
        );
        assert!(names.contains(&Some("dev-api".into())), "{names:?}");
        assert!(
            initial.tunnels.iter().all(|t| t.labels.is_empty()),
            "labels not selected"
        );
        assert!(initial.clients.is_empty(), "clients have no labels");
        // A prod tunnel is skipped; the next dev one comes through.
        kept.push(
            control
                .create_tunnel(
                    TunnelOptions::new()
                        .name(format!("prod-{websocket}"))
                        .label("env", "prod"),
                )
                .await
                .unwrap(),
        );
        let dev_name = format!("dev-{websocket}");
        kept.push(
            control
                .create_tunnel(
                    TunnelOptions::new()
                        .name(dev_name.clone())
                        .label("env", "dev"),
                )
                .await
                .unwrap(),
        );
        let next = within("event", watch.next()).await.unwrap().unwrap();
        assert_eq!(next.event_type, EventType::TunnelCreated, "{next:?}");
        let EventObject::Tunnel(t) = &next.object else {
            panic!("{next:?}")
        };
        assert_eq!(t.name.as_deref(), Some(dev_name.as_str()));
        assert!(t.labels.is_empty() && t.protocol.is_none(), "{t:?}");
    }
    control.close().await.unwrap();
}

/// One GET to a published endpoint over TLS, HTTP/1.1 or h2.
async fn edge_get(
    url: &str,
    ca: &str,
    h2: bool,
    path: &str,
    bearer: Option<&str>,
) -> (u16, String) {
    let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
    let tls = support::tls_connect(url, ca, alpn).await;
    let authority = support::authority(url);
    let mut req = if h2 {
        http::Request::get(format!("https://{authority}{path}"))
    } else {
        http::Request::get(path).header("host", authority.clone())
    };
    if let Some(t) = bearer {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req.body(Empty::<Bytes>::new()).unwrap();
    let rsp = if h2 {
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            TokioIo::new(tls),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        within("h2 request", send.send_request(req)).await.unwrap()
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        within("h1 request", send.send_request(req)).await.unwrap()
    };
    let status = rsp.status().as_u16();
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// `token_auth` on published HTTP/1.1 and h2c tunnels: no token 401, bad
/// token 401, a token for another tunnel or path 403 (the app sees none of
/// them); a valid token by header or `?rstream.token=` reaches the app,
/// which never sees the token itself.
#[tokio::test]
async fn token_auth_guards_published_http_tunnels() {
    use rstream::HttpVersion;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let creds = AppCredentials::generate("backend").unwrap();
    let engine = engine_for(&creds, None).await;
    let control = within("owner", app_client(&engine, &creds).connect())
        .await
        .unwrap();
    for h2c in [false, true] {
        let seen = std::sync::Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                let auth = req.headers().get("authorization").is_some();
                format!(
                    "{} {} auth={auth} {:?}",
                    req.uri().path(),
                    req.uri().query().unwrap_or(""),
                    req.version()
                )
            }
        });
        let mut options = TunnelOptions::http()
            .name(format!("guarded-{h2c}"))
            .token_auth(true);
        if h2c {
            options = options.http_version(HttpVersion::H2c);
        }
        let tunnel = control.create_tunnel(options).await.unwrap();
        let tunnel_id = tunnel.id();
        let url = tunnel.forwarding_address();
        let _server = tokio::spawn(std::future::IntoFuture::into_future(rstream::http::serve(
            tunnel, app,
        )));
        let ca = engine.ca_pem();

        let good = creds
            .mint(&TokenRequest::new().resources(Resources::tunnels(
                TunnelScopes::new().connect(TunnelFilter::new().id(tunnel_id.as_str())),
            )))
            .unwrap();
        let other = creds
            .mint(&TokenRequest::new().resources(Resources::tunnels(
                TunnelScopes::new().connect(TunnelFilter::new().id("another")),
            )))
            .unwrap();
        let ping_only = creds
            .mint(
                &TokenRequest::new().resources(Resources::tunnels(
                    TunnelScopes::new()
                        .connect_any()
                        .path(rstream::auth::StringMatch::Exact("/ping".into())),
                )),
            )
            .unwrap();
        let impostor = AppCredentials::generate("backend")
            .unwrap()
            .mint(&TokenRequest::new())
            .unwrap();

        assert_eq!(edge_get(&url, ca, h2c, "/", None).await.0, 401, "h2c={h2c}");
        assert_eq!(
            edge_get(&url, ca, h2c, "/", Some(impostor.expose()))
                .await
                .0,
            401
        );
        assert_eq!(
            edge_get(&url, ca, h2c, "/", Some(other.expose())).await.0,
            403
        );
        assert_eq!(
            edge_get(&url, ca, h2c, "/private", Some(ping_only.expose()))
                .await
                .0,
            403
        );
        assert_eq!(
            seen.load(Ordering::SeqCst),
            0,
            "refused requests reached the app"
        );

        let (status, body) = edge_get(&url, ca, h2c, "/ping", Some(ping_only.expose())).await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = edge_get(&url, ca, h2c, "/hello?x=1", Some(good.expose())).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.starts_with("/hello x=1 auth=false"), "{body}");
        if h2c {
            assert!(body.ends_with("HTTP/2.0"), "{body}");
        }
        let (status, body) = edge_get(
            &url,
            ca,
            h2c,
            &format!("/q?a=b&rstream.token={}", good.expose()),
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert!(body.starts_with("/q a=b auth=false"), "{body}");
        assert_eq!(seen.load(Ordering::SeqCst), 3);
    }
    control.close().await.unwrap();
}

/// One GET to a published endpoint over TLS (HTTP/1.1 or h2), presenting
/// `identity` when given. `Err` when the engine refuses the connection
/// (during or right after the handshake: TLS 1.3 clients finish before the
/// server has checked their certificate).
async fn mtls_get(
    url: &str,
    ca: &str,
    identity: Option<rstream::transport::ClientIdentity>,
    h2: bool,
    path: &str,
) -> Result<(u16, String), String> {
    let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
    let mut tls = rstream::transport::TlsOptions::new()
        .add_ca_pem(ca.as_bytes())
        .unwrap();
    if let Some(identity) = identity {
        tls = tls.client_identity(identity);
    }
    let config = tls.client_config(alpn).unwrap();
    let authority = support::authority(url);
    let tcp = tokio::net::TcpStream::connect(&authority).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let stream = within(
        "mtls handshake",
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .map_err(|e| format!("handshake: {e}"))?;
    let req = if h2 {
        http::Request::get(format!("https://{authority}{path}"))
    } else {
        http::Request::get(path).header("host", authority.clone())
    }
    .body(Empty::<Bytes>::new())
    .unwrap();
    let rsp = if h2 {
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            TokioIo::new(stream),
        )
        .await
        .map_err(|e| format!("h2 handshake: {e}"))?;
        tokio::spawn(conn);
        within("h2 request", send.send_request(req)).await
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("h1 handshake: {e}"))?;
        tokio::spawn(conn);
        within("h1 request", send.send_request(req)).await
    }
    .map_err(|e| format!("request: {e}"))?;
    let status = rsp.status().as_u16();
    let body = rsp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// `mtls_auth` on published HTTP/1.1 and h2c tunnels of an engine with an
/// edge client CA: a client certificate from that CA reaches the app; no
/// certificate, or one from another CA, is refused in the TLS handshake
/// and the app never sees it. A tunnel without `mtls_auth` on the same
/// engine asks for nothing.
#[tokio::test]
async fn mtls_auth_admits_only_certificates_from_the_edge_ca() {
    use rstream::HttpVersion;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use support::pki::Ca;
    support::init_tracing();
    let edge_ca = Ca::named("rstream tests edge CA");
    let other_ca = Ca::named("rstream tests other CA");
    let user = edge_ca.client("user-1");
    let stranger = other_ca.client("user-1");
    let engine = LocalEngine::builder()
        .edge_client_ca(edge_ca.pem())
        .start()
        .await
        .expect("engine");
    let ca = engine.ca_pem();
    let control = within("owner", support::client(&engine).connect())
        .await
        .unwrap();
    for h2c in [false, true] {
        let seen = std::sync::Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                format!("{} {:?}", req.uri().path(), req.version())
            }
        });
        let mut options = TunnelOptions::http()
            .name(format!("mtls-{h2c}"))
            .mtls_auth(true);
        if h2c {
            options = options.http_version(HttpVersion::H2c);
        }
        let tunnel = control.create_tunnel(options).await.unwrap();
        assert_eq!(tunnel.properties().mtls_auth, Some(true));
        let url = tunnel.forwarding_address();
        let _server = tokio::spawn(std::future::IntoFuture::into_future(rstream::http::serve(
            tunnel, app,
        )));

        let refused = mtls_get(&url, ca, None, h2c, "/").await;
        assert!(refused.is_err(), "h2c={h2c}: no certificate: {refused:?}");
        let refused = mtls_get(&url, ca, Some(stranger.identity()), h2c, "/").await;
        assert!(refused.is_err(), "h2c={h2c}: other CA: {refused:?}");
        assert_eq!(
            seen.load(Ordering::SeqCst),
            0,
            "a refused client reached the app"
        );

        let (status, body) = mtls_get(&url, ca, Some(user.identity()), h2c, "/hello")
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.starts_with("/hello"), "{body}");
        if h2c {
            assert!(body.ends_with("HTTP/2.0"), "{body}");
        }
        assert_eq!(seen.load(Ordering::SeqCst), 1);
    }
    // Without mtls_auth the endpoint needs no certificate.
    let open = control.create_tunnel(TunnelOptions::http()).await.unwrap();
    let url = open.forwarding_address();
    let _server = tokio::spawn(std::future::IntoFuture::into_future(rstream::http::serve(
        open,
        axum::Router::new().fallback(|| async { "open" }),
    )));
    assert_eq!(
        mtls_get(&url, ca, None, false, "/").await.unwrap(),
        (200, "open".to_owned())
    );
    control.close().await.unwrap();
}

/// `mtls_auth` is refused, saying why, without an edge CA, outside
/// published http tunnels, and together with `token_auth`.
#[tokio::test]
async fn mtls_auth_refusals_say_why() {
    let plain = support::engine().await;
    let control = within("connect", support::client(&plain).connect())
        .await
        .unwrap();
    let err = control
        .create_tunnel(TunnelOptions::http().mtls_auth(true))
        .await
        .unwrap_err();
    assert_eq!(err.engine_code(), Some(5000), "{err}");
    assert!(err.to_string().contains("--edge-client-ca"), "{err}");
    control.close().await.unwrap();

    let edge_ca = support::pki::Ca::named("rstream tests edge CA");
    let engine = LocalEngine::builder()
        .edge_client_ca(edge_ca.pem())
        .start()
        .await
        .expect("engine");
    let control = within("connect", support::client(&engine).connect())
        .await
        .unwrap();
    for (what, options, needle) in [
        (
            "tls",
            TunnelOptions::tls().mtls_auth(true),
            "published http tunnels",
        ),
        (
            "private http",
            TunnelOptions::http().private().mtls_auth(true),
            "published http tunnels",
        ),
        (
            "with token_auth",
            TunnelOptions::http().mtls_auth(true).token_auth(true),
            "token_auth",
        ),
    ] {
        let err = control.create_tunnel(options).await.unwrap_err();
        assert_eq!(err.engine_code(), Some(5000), "{what}: {err}");
        assert!(err.to_string().contains(needle), "{what}: {err}");
    }
    control.close().await.unwrap();
}

/// A WebSocket through a `token_auth` tunnel: the upgrade without a token
/// is refused (401, the app never sees it); with a valid token the upgrade
/// reaches the app, which never sees the token, and frames flow both ways
/// through the spliced connection.
#[tokio::test]
async fn websocket_upgrades_through_token_auth() {
    use axum::extract::ws::{Message as WsMessage, WebSocketUpgrade};
    use futures_util::{SinkExt, StreamExt};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio_tungstenite::tungstenite::Message;
    let creds = AppCredentials::generate("backend").unwrap();
    let engine = engine_for(&creds, None).await;
    let control = within("owner", app_client(&engine, &creds).connect())
        .await
        .unwrap();
    let seen = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let app = axum::Router::new().route(
        "/ws",
        axum::routing::get(move |ws: WebSocketUpgrade, uri: http::Uri| {
            counter.fetch_add(1, Ordering::SeqCst);
            let query = uri.query().unwrap_or("").to_owned();
            async move {
                ws.on_upgrade(move |mut socket| async move {
                    while let Some(Ok(msg)) = socket.recv().await {
                        if let WsMessage::Text(t) = msg {
                            let reply = format!("echo {t} query={query}");
                            if socket.send(WsMessage::Text(reply.into())).await.is_err() {
                                break;
                            }
                        }
                    }
                })
            }
        }),
    );
    let tunnel = control
        .create_tunnel(TunnelOptions::http().token_auth(true))
        .await
        .unwrap();
    let tunnel_id = tunnel.id();
    let url = tunnel.forwarding_address();
    let _server = tokio::spawn(std::future::IntoFuture::into_future(rstream::http::serve(
        tunnel, app,
    )));
    let ca = engine.ca_pem();
    let authority = support::authority(&url);

    let tls = support::tls_connect(&url, ca, &[b"http/1.1"]).await;
    let refused = tokio_tungstenite::client_async(format!("ws://{authority}/ws"), tls).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(rsp)) => {
            assert_eq!(rsp.status().as_u16(), 401)
        }
        other => panic!("expected a 401, got {:?}", other.map(|(_, rsp)| rsp)),
    }
    assert_eq!(
        seen.load(Ordering::SeqCst),
        0,
        "a refused upgrade reached the app"
    );

    let token = creds
        .mint(&TokenRequest::new().resources(Resources::tunnels(
            TunnelScopes::new().connect(TunnelFilter::new().id(tunnel_id.as_str())),
        )))
        .unwrap();
    let tls = support::tls_connect(&url, ca, &[b"http/1.1"]).await;
    let (mut ws, rsp) = within(
        "websocket handshake",
        tokio_tungstenite::client_async(
            format!("ws://{authority}/ws?rstream.token={}", token.expose()),
            tls,
        ),
    )
    .await
    .unwrap();
    assert_eq!(rsp.status().as_u16(), 101);
    for i in 0..3 {
        ws.send(Message::Text(format!("hi {i}").into()))
            .await
            .unwrap();
        let reply = within("websocket reply", ws.next()).await.unwrap().unwrap();
        assert_eq!(
            reply.into_text().unwrap().as_str(),
            format!("echo hi {i} query=")
        );
    }
    ws.close(None).await.unwrap();
    assert_eq!(seen.load(Ordering::SeqCst), 1);

    // An h2c application cannot take an HTTP/1.1 upgrade: 501, said by
    // the engine.
    let h2c = control
        .create_tunnel(
            TunnelOptions::http()
                .token_auth(true)
                .http_version(rstream::HttpVersion::H2c),
        )
        .await
        .unwrap();
    let h2c_url = h2c.forwarding_address();
    let token = creds
        .mint(&TokenRequest::new().resources(Resources::tunnels(
            TunnelScopes::new().connect(TunnelFilter::new().id(h2c.id().as_str())),
        )))
        .unwrap();
    let tls = support::tls_connect(&h2c_url, ca, &[b"http/1.1"]).await;
    let refused = tokio_tungstenite::client_async(
        format!(
            "ws://{}/ws?rstream.token={}",
            support::authority(&h2c_url),
            token.expose()
        ),
        tls,
    )
    .await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(rsp)) => {
            assert_eq!(rsp.status().as_u16(), 501)
        }
        other => panic!("expected a 501, got {:?}", other.map(|(_, rsp)| rsp)),
    }
    control.close().await.unwrap();
}

/// `--edge-client-ca FILE` configures the edge CA (an `mtls_auth` tunnel
/// is then accepted); a file without a certificate fails the start.
#[tokio::test]
async fn edge_client_ca_flag() {
    support::init_tracing();
    let dir = std::env::temp_dir().join(format!("rstream-edge-ca-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("edge-ca.pem");
    std::fs::write(&good, support::pki::Ca::named("edge").pem()).unwrap();
    let bad = dir.join("not-a-ca.pem");
    std::fs::write(&bad, "nothing here\n").unwrap();

    let settings = rstream::engine::cli::parse_from([
        "rstream-local-engine".as_ref(),
        "--edge-client-ca".as_ref(),
        good.as_os_str(),
    ])
    .unwrap();
    let engine = settings.builder.start().await.expect("engine");
    let control = within("connect", support::client(&engine).connect())
        .await
        .unwrap();
    let tunnel = control
        .create_tunnel(TunnelOptions::http().mtls_auth(true))
        .await
        .unwrap();
    assert_eq!(tunnel.properties().mtls_auth, Some(true));
    control.close().await.unwrap();

    let settings = rstream::engine::cli::parse_from([
        "rstream-local-engine".as_ref(),
        "--edge-client-ca".as_ref(),
        bad.as_os_str(),
    ])
    .unwrap();
    let err = settings.builder.start().await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("not-a-ca.pem") && text.contains("no PEM certificate"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
