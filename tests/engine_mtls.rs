//! mTLS agents on the local engine: client certificates issued by a CA the
//! engine is given authenticate agents without a token and identify them.

#![cfg(feature = "local-engine")]

mod support;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rstream::engine::{EngineEvent, LocalEngine};
use rstream::proto::{
    self, message::Payload, open_control_channel_rsp, read_frame, stream_rsp, write_frame,
    ClientDetails, ErrorCode, Message, OpenControlChannelReq, StreamReq,
};
use rstream::transport::{ClientIdentity, Endpoint, EngineStream, TlsDialer, TlsOptions};
use rstream::{DialOptions, ErrorKind, TunnelOptions};
use sha2::{Digest, Sha256};
use support::{echo_round_trip, options, spawn_echo, within, LIMIT};

/// A client CA and one client certificate (PEM) issued by it.
struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
    cert_der: Vec<u8>,
}

fn pki(cn: &str) -> Pki {
    let mut ca_params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("test client CA for {cn}"));
    ca_params.distinguished_name = dn;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "rstream tests");
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    Pki {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        cert_der: cert.der().to_vec(),
    }
}

impl Pki {
    fn identity(&self) -> ClientIdentity {
        ClientIdentity::from_pem(self.cert_pem.as_bytes(), self.key_pem.as_bytes()).unwrap()
    }

    fn fingerprint(&self) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(&self.cert_der)))
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
    ClientDetails {
        agent: Some("engine-mtls-test".into()),
        channel: Some("test".into()),
        version: Some("0.0.0".into()),
        os: Some("linux".into()),
        arch: Some("x86_64".into()),
        token: token.map(str::to_owned),
        protocol_version: Some(proto::PROTOCOL_VERSION.into()),
    }
}

/// A raw engine connection presenting `identity` (the client SDK refuses a
/// token together with a certificate, so this speaks frames directly).
async fn raw(engine: &LocalEngine, identity: ClientIdentity) -> EngineStream {
    let config = TlsOptions::new()
        .add_ca_pem(engine.ca_pem().as_bytes())
        .unwrap()
        .client_identity(identity)
        .client_config(&[proto::ALPN])
        .unwrap();
    let endpoint = Endpoint::parse(&engine.engine_address()).unwrap();
    TlsDialer::new(config, LIMIT)
        .connect(&endpoint, "127.0.0.1")
        .await
        .unwrap()
}

async fn exchange(conn: &mut EngineStream, payload: Payload) -> Payload {
    write_frame(conn, &Message::new(payload)).await.unwrap();
    within("a frame", read_frame(conn))
        .await
        .unwrap()
        .expect("a frame")
        .payload
        .expect("a payload")
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
