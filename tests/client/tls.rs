//! The client's TLS options end to end: an untrusted engine or a wrong
//! server name fails verification, the insecure option connects without
//! the CA, and proxy connections and dials resume TLS sessions.

use rstream::transport::TlsOptions;
use rstream::{Client, DialOptions, ErrorKind, Tunnel, TunnelOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{self, echo_round_trip, spawn_echo, within};

fn rustls_error(err: &rstream::Error) -> rustls::Error {
    let source = std::error::Error::source(err).expect("TLS error has a source");
    let io = source
        .downcast_ref::<std::io::Error>()
        .unwrap_or_else(|| panic!("source is not an io::Error: {source:?}"));
    io.get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .unwrap_or_else(|| panic!("io::Error does not wrap a rustls::Error: {io:?}"))
        .clone()
}

// ----- 4. TLS trust options ---------------------------------------------

/// A client that does not trust the engine's CA, or that overrides the
/// server name with one the certificate does not cover, fails with a TLS
/// error (kind `Tls`, code `ERR_RSTREAM_TLS`, not transient) carrying
/// rustls's verdict; the engine never admits it. The right override works.
#[tokio::test]
async fn untrusted_engine_and_wrong_server_name_fail_verification() {
    let engine = support::engine().await;

    let no_ca = Client::builder()
        .engine(engine.engine_address())
        .build()
        .unwrap();
    let err = within("connect without CA", no_ca.connect())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls, "{err:?}");
    assert_eq!(err.code(), "ERR_RSTREAM_TLS");
    assert!(!err.is_transient());
    assert!(
        matches!(
            rustls_error(&err),
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
        ),
        "{err:?}"
    );
    // Private dials go through the same verification.
    let err = within("dial without CA", no_ca.dial("anything"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls, "{err:?}");
    assert_eq!(err.code(), "ERR_RSTREAM_TLS");

    let wrong_name = Client::builder()
        .engine(engine.engine_address())
        .tls(
            TlsOptions::new()
                .add_ca_pem(engine.ca_pem().as_bytes())
                .unwrap()
                .server_name("wrong.example"),
        )
        .build()
        .unwrap();
    let err = within("connect with a wrong server name", wrong_name.connect())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls, "{err:?}");
    assert_eq!(err.code(), "ERR_RSTREAM_TLS");
    assert!(
        matches!(
            rustls_error(&err),
            rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                    | rustls::CertificateError::NotValidForNameContext { .. }
            )
        ),
        "{err:?}"
    );
    assert!(engine.clients().is_empty(), "{:?}", engine.clients());

    // A name the certificate covers is fine.
    let right_name = Client::builder()
        .engine(engine.engine_address())
        .tls(
            TlsOptions::new()
                .add_ca_pem(engine.ca_pem().as_bytes())
                .unwrap()
                .server_name("localhost"),
        )
        .build()
        .unwrap();
    let control = within("connect as localhost", right_name.connect())
        .await
        .unwrap();
    assert_eq!(engine.clients().len(), 1);
    control.close().await.unwrap();
}

/// `danger_accept_invalid_certs` connects without the engine's CA (and
/// even with a wrong server name), and applies to every connection: the
/// control channel, proxy connections and private dials.
#[tokio::test]
async fn insecure_option_connects_without_the_ca() {
    let engine = support::engine().await;
    let insecure = Client::builder()
        .engine(engine.engine_address())
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let control = within("insecure connect", insecure.connect())
        .await
        .unwrap();
    let tunnel = within(
        "create",
        control.create_tunnel(TunnelOptions::new().name("insecure")),
    )
    .await
    .unwrap();
    let _echo = spawn_echo(tunnel);
    for zero_rtt in [true, false] {
        let stream = within(
            "insecure dial",
            insecure.dial_with("insecure", DialOptions::new().zero_rtt(zero_rtt)),
        )
        .await
        .unwrap();
        let back = within("echo", echo_round_trip(stream, b"no CA needed")).await;
        assert_eq!(back, b"no CA needed", "zero_rtt={zero_rtt}");
    }

    let insecure_wrong_name = Client::builder()
        .engine(engine.engine_address())
        .tls(
            TlsOptions::new()
                .server_name("wrong.example")
                .danger_accept_invalid_certs(true),
        )
        .build()
        .unwrap();
    let other = within(
        "insecure connect, wrong name",
        insecure_wrong_name.connect(),
    )
    .await
    .unwrap();
    assert_eq!(engine.clients().len(), 2);
    other.close().await.unwrap();
    control.close().await.unwrap();
}

// ----- 5. TLS session resumption ----------------------------------------

/// One dial and the owner's side of it, echoing `msg`; returns whether the
/// dialed and the accepted TLS connections resumed a session.
async fn resumed_round_trip(dialer: &Client, tunnel: &mut Tunnel, msg: &[u8]) -> (bool, bool) {
    let (dialed, accepted) = tokio::join!(dialer.dial("resume"), tunnel.accept());
    let (mut dialed, mut accepted) = (dialed.unwrap(), accepted.unwrap());
    let resumed = (dialed.tls_resumed(), accepted.tls_resumed());
    // Reading on both sides also takes in the fresh session tickets the
    // engine sends after each handshake.
    dialed.write_all(msg).await.unwrap();
    let mut buf = vec![0u8; msg.len()];
    accepted.read_exact(&mut buf).await.unwrap();
    accepted.write_all(&buf).await.unwrap();
    dialed.read_exact(&mut buf).await.unwrap();
    assert_eq!(buf, msg);
    resumed
}

/// With the client's shared TLS configuration, proxy connections resume
/// the TLS session: every stream the owner accepts is resumed (the control
/// channel's handshake already brought tickets), a fresh dialer's first
/// dial is a full handshake and its later ones resume. After a warm-up,
/// a burst of 10 concurrent connections — more than rustls's default store
/// keeps per server (8) — resumes in full on both sides.
#[tokio::test]
async fn proxy_connections_and_dials_resume_tls_sessions() {
    let engine = support::engine().await;
    // TLS session resumption is a TLS fact: not left to the auto race.
    let tls_client = || {
        support::options(&engine)
            .transport(rstream::Transport::Tls)
            .build()
            .unwrap()
    };
    let owner = tls_client();
    let control = within("connect", owner.connect()).await.unwrap();
    let mut tunnel = within(
        "create",
        control.create_tunnel(TunnelOptions::new().name("resume")),
    )
    .await
    .unwrap();
    let dialer = tls_client();

    const WARM_UP: usize = 10;
    let mut owner_side = Vec::new();
    let mut dialer_side = Vec::new();
    for i in 0..WARM_UP {
        let (dialed, accepted) = within(
            "round trip",
            resumed_round_trip(&dialer, &mut tunnel, format!("ping {i}").as_bytes()),
        )
        .await;
        dialer_side.push(dialed);
        owner_side.push(accepted);
    }
    assert_eq!(owner_side, [true; WARM_UP], "owner's proxy connections");
    assert!(!dialer_side[0], "a fresh client's first dial cannot resume");
    assert_eq!(
        dialer_side[1..],
        [true; WARM_UP - 1],
        "dialer's later connections"
    );

    // A burst of concurrent connections.
    const BURST: usize = 10;
    let owner_task = tokio::spawn(async move {
        let mut resumed = Vec::new();
        for _ in 0..BURST {
            let stream = tunnel.accept().await.unwrap();
            resumed.push(stream.tls_resumed());
            tokio::spawn(async move {
                let mut stream = stream;
                let mut buf = [0u8; 5];
                if stream.read_exact(&mut buf).await.is_ok() {
                    let _ = stream.write_all(&buf).await;
                }
            });
        }
        (resumed, tunnel)
    });
    let mut dials = tokio::task::JoinSet::new();
    for _ in 0..BURST {
        let dialer = dialer.clone();
        dials.spawn(async move {
            let mut stream = dialer.dial("resume").await.unwrap();
            let resumed = stream.tls_resumed();
            stream.write_all(b"burst").await.unwrap();
            let mut buf = [0u8; 5];
            stream.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"burst");
            resumed
        });
    }
    let dialed: Vec<bool> = within("burst", dials.join_all()).await;
    let (accepted, _tunnel) = within("owner", owner_task).await.unwrap();
    assert_eq!(accepted, [true; BURST], "owner's burst");
    assert_eq!(dialed, [true; BURST], "dialer's burst");
}
