//! mTLS agents on the local engine: client certificates issued by a CA the
//! engine is given authenticate agents without a token and identify them.

#![cfg(feature = "local-engine")]

use crate::support::pki::{Ca, Leaf};
use crate::support::{self, raw};

use rstream::engine::{EngineEvent, LocalEngine};
use rstream::proto::{
    message::Payload, open_control_channel_rsp, stream_rsp, ClientDetails, ErrorCode,
    OpenControlChannelReq, StreamReq,
};
use rstream::transport::{ClientIdentity, EngineStream};
use rstream::{DialOptions, ErrorKind, TunnelOptions};
use sha2::{Digest, Sha256};
use support::{echo_round_trip, options, spawn_echo, within};

/// A client CA and one client certificate (PEM) issued by it.
struct Pki {
    ca_pem: String,
    leaf: Leaf,
}

fn pki(cn: &str) -> Pki {
    let ca = Ca::named(&format!("test client CA for {cn}"));
    Pki {
        ca_pem: ca.pem(),
        leaf: ca.client(cn),
    }
}

impl Pki {
    fn identity(&self) -> ClientIdentity {
        self.leaf.identity()
    }

    fn fingerprint(&self) -> String {
        format!(
            "sha256:{}",
            hex::encode(Sha256::digest(&self.leaf.cert_der))
        )
    }
}

async fn engine_with(client_ca: &str, require: bool) -> LocalEngine {
    support::init_tracing();
    LocalEngine::builder()
        .token("t")
        .client_ca_pem(client_ca)
        .require_client_certificate(require)
        .start()
        .await
        .expect("engine starts")
}

#[tokio::test]
async fn certificate_agent_needs_no_token_is_identified_and_dials() {
    let agent = pki("agent-1");
    let engine = engine_with(&agent.ca_pem, false).await;
    let mut events = engine.subscribe();

    let client = options(&engine)
        .client_identity(agent.identity())
        .build()
        .unwrap();
    let control = within("mTLS connect", client.connect()).await.unwrap();
    let tunnel = control
        .create_tunnel(TunnelOptions::new().name("mtls-echo"))
        .await
        .unwrap();
    let _echo = spawn_echo(tunnel);

    let clients = engine.clients();
    assert_eq!(clients.len(), 1);
    assert_eq!(clients[0].id, control.client_id());
    assert_eq!(
        clients[0].identity.as_deref(),
        Some(agent.fingerprint().as_str())
    );
    assert_eq!(clients[0].identity_name.as_deref(), Some("agent-1"));
    assert_eq!(clients[0].details.token, None);
    match within("ClientCreated", events.recv()).await.unwrap() {
        EngineEvent::ClientCreated { client } => {
            assert_eq!(client.identity, Some(agent.fingerprint()));
        }
        other => panic!("unexpected event {other:?}"),
    }

    // A dial authenticated by the certificate alone (both handshakes).
    for zero_rtt in [false, true] {
        let stream = within(
            "mTLS dial",
            client.dial_with("mtls-echo", DialOptions::new().zero_rtt(zero_rtt)),
        )
        .await
        .unwrap();
        assert_eq!(
            within("echo", echo_round_trip(stream, b"hello mtls")).await,
            b"hello mtls"
        );
    }

    // Tokens keep working next to certificates.
    let token_client = options(&engine).token("t").build().unwrap();
    let stream = within("token dial", token_client.dial("mtls-echo"))
        .await
        .unwrap();
    assert_eq!(
        within("echo", echo_round_trip(stream, b"tok")).await,
        b"tok"
    );
    let token_control = within("token connect", token_client.connect())
        .await
        .unwrap();
    let info = engine
        .clients()
        .into_iter()
        .find(|c| c.id == token_control.client_id())
        .unwrap();
    assert_eq!(info.identity, None);
    assert_eq!(info.identity_name, None);
    control.close().await.unwrap();
}

#[tokio::test]
async fn foreign_certificates_and_missing_credentials_are_refused() {
    let trusted = pki("trusted");
    let foreign = pki("foreign");
    let engine = engine_with(&trusted.ca_pem, false).await;

    // A certificate from another CA fails the TLS handshake.
    let client = options(&engine)
        .client_identity(foreign.identity())
        .build()
        .unwrap();
    let err = within("foreign connect", client.connect())
        .await
        .unwrap_err();
    assert_ne!(err.kind(), ErrorKind::Config, "{err}");
    let err = within(
        "foreign dial",
        client.dial_with("x", DialOptions::new().zero_rtt(false)),
    )
    .await
    .unwrap_err();
    assert_eq!(err.engine_code(), None, "{err}");

    // Neither a certificate nor a token: UNAUTHORIZED, as before.
    let anonymous = options(&engine).build().unwrap();
    let err = within("anonymous connect", anonymous.connect())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    assert_eq!(err.engine_code(), Some(ErrorCode::Unauthorized as i32));
    let err = within(
        "anonymous dial",
        anonymous.dial_with("x", DialOptions::new().zero_rtt(false)),
    )
    .await
    .unwrap_err();
    assert_eq!(err.engine_code(), Some(ErrorCode::Unauthorized as i32));
    assert!(engine.clients().is_empty());
}

fn details(token: Option<&str>) -> ClientDetails {
    raw::details("engine-mtls-test", token)
}

/// A raw engine connection presenting `identity` (the client SDK refuses a
/// token together with a certificate, so this speaks frames directly).
async fn raw(engine: &LocalEngine, identity: ClientIdentity) -> EngineStream {
    raw::dial(engine, Some(identity)).await
}

async fn exchange(conn: &mut EngineStream, payload: Payload) -> Payload {
    raw::send(conn, payload).await;
    raw::recv(conn).await
}

fn open_error(payload: Payload) -> Option<i32> {
    match payload {
        Payload::OpenControlChannelRsp(rsp) => match rsp.payload {
            Some(open_control_channel_rsp::Payload::Error(e)) => Some(e.code),
            Some(open_control_channel_rsp::Payload::Ok(_)) => None,
            None => panic!("empty OpenControlChannelRsp"),
        },
        other => panic!("unexpected {}", other.name()),
    }
}

fn stream_error(payload: Payload) -> Option<i32> {
    match payload {
        Payload::StreamRsp(rsp) => match rsp.payload {
            Some(stream_rsp::Payload::Error(e)) => Some(e.code),
            _ => None,
        },
        other => panic!("unexpected {}", other.name()),
    }
}

#[tokio::test]
async fn certificate_with_token_is_unauthorized() {
    let agent = pki("both");
    let engine = engine_with(&agent.ca_pem, false).await;
    let open = |token: Option<&str>| {
        Payload::OpenControlChannelReq(OpenControlChannelReq {
            client_details: Some(details(token)),
            liveness: None,
        })
    };
    let dial = |token: Option<&str>| {
        Payload::StreamReq(StreamReq {
            client_details: Some(details(token)),
            tunnel_id_name: "nope".into(),
            zero_rtt: Some(false),
            ..Default::default()
        })
    };
    let unauthorized = Some(ErrorCode::Unauthorized as i32);
    // Even the right token is refused next to a certificate.
    let mut conn = within("raw", raw(&engine, agent.identity())).await;
    assert_eq!(
        open_error(exchange(&mut conn, open(Some("t"))).await),
        unauthorized
    );
    let mut conn = within("raw", raw(&engine, agent.identity())).await;
    assert_eq!(
        stream_error(exchange(&mut conn, dial(Some("t"))).await),
        unauthorized
    );
    // The certificate alone passes authentication.
    let mut conn = within("raw", raw(&engine, agent.identity())).await;
    assert_eq!(
        stream_error(exchange(&mut conn, dial(None)).await),
        Some(ErrorCode::TunnelNotFound as i32)
    );
    let mut conn = within("raw", raw(&engine, agent.identity())).await;
    assert_eq!(open_error(exchange(&mut conn, open(None)).await), None);
    assert_eq!(engine.clients().len(), 1);
}

#[tokio::test]
async fn required_certificates_refuse_token_only_agents() {
    let agent = pki("required");
    let engine = engine_with(&agent.ca_pem, true).await;
    let token_only = options(&engine).token("t").build().unwrap();
    let err = within("token-only connect", token_only.connect())
        .await
        .unwrap_err();
    assert_ne!(err.kind(), ErrorKind::Config, "{err}");
    assert!(engine.clients().is_empty());

    let client = options(&engine)
        .client_identity(agent.identity())
        .build()
        .unwrap();
    let control = within("mTLS connect", client.connect()).await.unwrap();
    assert_eq!(
        engine.clients()[0].identity.as_deref(),
        Some(agent.fingerprint().as_str())
    );
    control.close().await.unwrap();
}

#[tokio::test]
async fn client_ca_settings_are_checked_at_start() {
    let err = LocalEngine::builder()
        .require_client_certificate(true)
        .start()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    let err = LocalEngine::builder()
        .client_ca_pem("not a certificate")
        .start()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    let missing = std::env::temp_dir().join("rstream-no-such-client-ca.pem");
    assert!(LocalEngine::builder()
        .client_ca_file(&missing)
        .start()
        .await
        .is_err());

    // From a file, as the binary's --client-ca does.
    let agent = pki("file");
    let dir = std::env::temp_dir().join(format!("rstream-mtls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("client-ca.pem");
    std::fs::write(&file, &agent.ca_pem).unwrap();
    let engine = LocalEngine::builder()
        .token("t")
        .client_ca_file(&file)
        .start()
        .await
        .unwrap();
    let client = options(&engine)
        .client_identity(agent.identity())
        .build()
        .unwrap();
    within("connect", client.connect()).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
