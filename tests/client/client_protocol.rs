//! The client against a scripted engine: liveness negotiation and
//! enforcement, out-of-order responses, and every protocol-error path.

use crate::support::scripted;

use std::time::Duration;

use rstream::proto::{self, message::Payload, open_tunnel_rsp, Heartbeat};
use rstream::{ErrorKind, TunnelOptions};
use scripted::Scripted;

async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

fn ack(n: u64) -> Payload {
    Payload::Heartbeat(Heartbeat {
        sequence: 0,
        acknowledgement: n,
    })
}

async fn expect_heartbeat(peer: &mut scripted::Peer) -> Heartbeat {
    match peer.recv().await {
        Some(Payload::Heartbeat(hb)) => hb,
        other => panic!("expected a heartbeat, got {:?}", other.map(|p| p.name())),
    }
}

#[tokio::test]
async fn client_details_and_liveness_proposal() {
    let engine = Scripted::start().await;
    let client = engine.client().token("agent-token").build().unwrap();
    let (control, req) = tokio::join!(client.connect(), async {
        let mut peer = engine.accept().await;
        let req = peer.open_ok(Some(15_000)).await;
        (peer, req)
    });
    let control = control.unwrap();
    let (mut peer, req) = req;
    let d = req.client_details.unwrap();
    assert_eq!(d.agent.as_deref(), Some("rstream-rust-runtime"));
    assert_eq!(d.channel.as_deref(), Some("sdk"));
    assert_eq!(d.protocol_version.as_deref(), Some("1.4.5"));
    assert_eq!(d.version.as_deref(), Some(env!("CARGO_PKG_VERSION")));
    assert_eq!(d.token.as_deref(), Some("agent-token"));
    assert_eq!(req.liveness.unwrap().heartbeat_interval_ms, 5_000);
    assert_eq!(req.liveness.unwrap().heartbeat_timeout_ms, 0);
    // The first heartbeat goes out immediately, with sequence 1.
    assert_eq!(
        within("first heartbeat", expect_heartbeat(&mut peer))
            .await
            .sequence,
        1
    );
    assert_eq!(control.client_id(), "scripted-client");
}

#[tokio::test]
async fn delayed_acks_are_tolerated_and_skipping_is_fine() {
    let engine = Scripted::start().await;
    let client = engine
        .client()
        .heartbeat_interval(Duration::from_secs(1))
        .build()
        .unwrap();
    let (control, mut peer) = engine.open(client.connect(), Some(3_000)).await;
    let control = control.unwrap();
    // Let three heartbeats go unanswered for 2.5 s (< 3 s timeout)...
    for want in 1..=3 {
        assert_eq!(expect_heartbeat(&mut peer).await.sequence, want);
    }
    // ...then acknowledge only the latest.
    peer.send(ack(3)).await;
    for want in 4..=5 {
        assert_eq!(expect_heartbeat(&mut peer).await.sequence, want);
        peer.send(ack(want)).await;
    }
    assert!(!control.is_closed());
}

#[tokio::test]
async fn silent_engine_expires_liveness() {
    let engine = Scripted::start().await;
    let client = engine
        .client()
        .heartbeat_interval(Duration::from_secs(1))
        .build()
        .unwrap();
    // Reconnect off: the expiry itself must close the channel (with
    // reconnect on it would be a transient loss; tests/client/reliability.rs).
    let connect = client.connect_with(rstream::ReconnectPolicy::disabled());
    let (control, peer) = engine.open(connect, Some(2_000)).await;
    let control = control.unwrap();
    let started = std::time::Instant::now();
    let err = within("liveness expiry", control.closed()).await;
    assert_eq!(err.code(), "ERR_RSTREAM_CONTROL_LIVENESS");
    assert!(started.elapsed() >= Duration::from_millis(1_900));
    drop(peer);
}

async fn channel_with_bad_ack(bad: impl FnOnce(u64) -> Payload) -> rstream::Error {
    let engine = Scripted::start().await;
    let client = engine.client().build().unwrap();
    let (control, mut peer) = engine.open(client.connect(), Some(15_000)).await;
    let control = control.unwrap();
    let first = expect_heartbeat(&mut peer).await.sequence;
    peer.send(ack(first)).await;
    peer.send(bad(first)).await;
    within("protocol error", control.closed()).await
}

#[tokio::test]
async fn replayed_ack_is_a_protocol_error() {
    let err = channel_with_bad_ack(ack).await;
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
}

#[tokio::test]
async fn future_ack_is_a_protocol_error() {
    let err = channel_with_bad_ack(|n| ack(n + 5)).await;
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
}

#[tokio::test]
async fn heartbeat_with_sequence_from_engine_is_a_protocol_error() {
    let err = channel_with_bad_ack(|n| {
        Payload::Heartbeat(Heartbeat {
            sequence: 1,
            acknowledgement: n + 1,
        })
    })
    .await;
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
}

#[tokio::test]
async fn liveness_negotiation_errors_fail_connect() {
    for (timeout, proposed_none) in [
        (Some(4_999u32), false),
        (Some(900_001), false),
        (Some(15_000), true),
    ] {
        let engine = Scripted::start().await;
        let mut opts = engine.client();
        if proposed_none {
            opts = opts.disable_heartbeats();
        }
        let client = opts.build().unwrap();
        let (res, _peer) = tokio::join!(client.connect(), async {
            let mut peer = engine.accept().await;
            let Some(Payload::OpenControlChannelReq(req)) = peer.recv().await else {
                panic!("expected OpenControlChannelReq")
            };
            let interval = req.liveness.map_or(5_000, |l| l.heartbeat_interval_ms);
            peer.send(Payload::OpenControlChannelRsp(
                proto::OpenControlChannelRsp {
                    payload: Some(proto::open_control_channel_rsp::Payload::Ok(
                        proto::open_control_channel_rsp::Ok {
                            client_id: "c".into(),
                            server_details: None,
                            liveness: timeout.map(|t| proto::ControlChannelLiveness {
                                heartbeat_interval_ms: interval,
                                heartbeat_timeout_ms: t,
                            }),
                        },
                    )),
                },
            ))
            .await;
            peer
        });
        let err = res.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Protocol, "{timeout:?}: {err}");
    }
}

#[tokio::test]
async fn legacy_engine_gets_empty_heartbeats_and_disabled_means_none() {
    let engine = Scripted::start().await;
    let client = engine.client().build().unwrap();
    let (control, mut peer) = tokio::join!(client.connect(), async {
        let mut peer = engine.accept().await;
        peer.open_ok(None).await; // no liveness in the answer: legacy mode
        peer
    });
    let control = control.unwrap();
    assert_eq!(expect_heartbeat(&mut peer).await, Heartbeat::default());
    peer.send(Payload::Heartbeat(Heartbeat::default())).await;
    peer.send(ack(1)).await; // non-empty heartbeat in legacy mode
    let err = within("legacy violation", control.closed()).await;
    assert_eq!(err.kind(), ErrorKind::Protocol);

    let engine = Scripted::start().await;
    let client = engine.client().disable_heartbeats().build().unwrap();
    let (control, mut peer) = tokio::join!(client.connect(), async {
        let mut peer = engine.accept().await;
        let req = peer.open_ok(None).await;
        assert!(req.liveness.is_none());
        peer
    });
    let control = control.unwrap();
    peer.send(Payload::Heartbeat(Heartbeat::default())).await;
    let err = within("disabled violation", control.closed()).await;
    assert_eq!(err.kind(), ErrorKind::Protocol);
}

#[tokio::test]
async fn out_of_order_open_tunnel_responses_match_by_request_id() {
    let engine = Scripted::start().await;
    let client = engine.client().disable_heartbeats().build().unwrap();
    let (control, mut peer) = engine.open(client.connect(), None).await;
    let control = control.unwrap();
    let script = async {
        let mut reqs = Vec::new();
        for _ in 0..2 {
            match peer.recv().await {
                Some(Payload::OpenTunnelReq(r)) => reqs.push(r),
                other => panic!("expected OpenTunnelReq, got {:?}", other.map(|p| p.name())),
            }
        }
        // Unknown request ids are ignored; then answer in reverse order.
        peer.send(Payload::OpenTunnelRsp(proto::OpenTunnelRsp {
            request_id: "not-a-request".into(),
            payload: None,
        }))
        .await;
        for r in reqs.iter().rev() {
            let mut props = r.tunnel_properties.clone().unwrap();
            props.id = Some(format!("id-{}", props.name.clone().unwrap()));
            peer.send(Payload::OpenTunnelRsp(proto::OpenTunnelRsp {
                request_id: r.request_id.clone(),
                payload: Some(open_tunnel_rsp::Payload::TunnelProperties(props)),
            }))
            .await;
        }
        for r in &reqs {
            // canonical lowercase hyphenated UUID
            assert_eq!(r.request_id.len(), 36);
            assert_eq!(r.request_id, r.request_id.to_lowercase());
        }
        peer
    };
    let (a, b, _peer) = tokio::join!(
        control.create_tunnel(TunnelOptions::new().name("a")),
        control.create_tunnel(TunnelOptions::new().name("b")),
        script
    );
    assert_eq!(a.unwrap().id(), "id-a");
    assert_eq!(b.unwrap().id(), "id-b");
}

#[tokio::test]
async fn engine_errors_and_missing_id() {
    let engine = Scripted::start().await;
    let client = engine.client().disable_heartbeats().build().unwrap();
    let (control, mut peer) = engine.open(client.connect(), None).await;
    let control = control.unwrap();
    let script = async {
        let Some(Payload::OpenTunnelReq(r)) = peer.recv().await else {
            panic!()
        };
        peer.send(Payload::OpenTunnelRsp(proto::OpenTunnelRsp {
            request_id: r.request_id,
            payload: Some(open_tunnel_rsp::Payload::Error(proto::Error::new(
                proto::ErrorCode::FeatureNotAvailable,
                "no geoip here",
            ))),
        }))
        .await;
        let Some(Payload::OpenTunnelReq(r)) = peer.recv().await else {
            panic!()
        };
        peer.send(Payload::OpenTunnelRsp(proto::OpenTunnelRsp {
            request_id: r.request_id,
            payload: None,
        }))
        .await;
        let Some(Payload::OpenTunnelReq(r)) = peer.recv().await else {
            panic!()
        };
        peer.send(Payload::OpenTunnelRsp(proto::OpenTunnelRsp {
            request_id: r.request_id,
            payload: Some(open_tunnel_rsp::Payload::TunnelProperties(
                Default::default(),
            )),
        }))
        .await;
        peer
    };
    let client_side = async {
        let e = control
            .create_tunnel(TunnelOptions::new().geoip("FR"))
            .await
            .unwrap_err();
        assert_eq!(e.engine_code(), Some(5000));
        assert!(e.to_string().contains("no geoip here"));
        // Neither payload: that request fails, the channel stays.
        let e = control
            .create_tunnel(TunnelOptions::new())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol);
        assert!(!control.is_closed());
        // Properties without id: fails at once and tears the channel down.
        let e = control
            .create_tunnel(TunnelOptions::new())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol);
    };
    let (_, _peer) = tokio::join!(within("engine errors", client_side), script);
    within("teardown", control.closed()).await;
}

#[tokio::test]
async fn oversized_and_truncated_frames_from_the_engine() {
    // Oversized: a 4 GiB length prefix is rejected without reading a body.
    let engine = Scripted::start().await;
    let client = engine.client().disable_heartbeats().build().unwrap();
    let (control, mut peer) = tokio::join!(client.connect(), async {
        let mut p = engine.accept().await;
        p.open_ok(None).await;
        p
    });
    let control = control.unwrap();
    peer.send_raw(&[0xff, 0xff, 0xff, 0xff]).await;
    let err = within("oversized", control.closed()).await;
    assert_eq!(err.code(), "ERR_RSTREAM_FRAME_TOO_LARGE");

    // Truncated mid-body, then the connection closes.
    let engine = Scripted::start().await;
    let client = engine.client().disable_heartbeats().build().unwrap();
    let (control, mut peer) = tokio::join!(client.connect(), async {
        let mut p = engine.accept().await;
        p.open_ok(None).await;
        p
    });
    let control = control.unwrap();
    peer.send_raw(&[0, 0, 0, 10, 0x82, 0x01]).await;
    drop(peer);
    let err = within("truncated", control.closed()).await;
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");

    // Garbage as the first frame fails connect.
    let engine = Scripted::start().await;
    let client = engine.client().build().unwrap();
    let (res, _p) = tokio::join!(client.connect(), async {
        let mut p = engine.accept().await;
        let _ = p.recv().await;
        p.send_raw(&[0, 0, 0, 2, 0xff, 0xff]).await;
        p
    });
    assert_eq!(res.unwrap_err().kind(), ErrorKind::Protocol);
}

#[tokio::test]
async fn oversized_request_fails_locally_and_channel_survives() {
    let engine = Scripted::start().await;
    let client = engine.client().disable_heartbeats().build().unwrap();
    let (control, _peer) = tokio::join!(client.connect(), async {
        let mut p = engine.accept().await;
        p.open_ok(None).await;
        p
    });
    let control = control.unwrap();
    // Labels are bounded (20 KiB at most): pad with trusted IPs instead.
    let huge = (0..5_000).fold(TunnelOptions::new(), |o, i| {
        o.trusted_ip(format!("10.{}.{}.0/24", i / 256, i % 256))
    });
    let err = control.create_tunnel(huge).await.unwrap_err();
    assert_eq!(err.code(), "ERR_RSTREAM_FRAME_TOO_LARGE");
    assert!(!control.is_closed());
}

#[tokio::test]
async fn unknown_frames_are_ignored_and_unknown_tunnel_proxy_is_refused() {
    let engine = Scripted::start().await;
    let client = engine.client().disable_heartbeats().build().unwrap();
    let (control, mut peer) = tokio::join!(client.connect(), async {
        let mut p = engine.accept().await;
        p.open_ok(None).await;
        p
    });
    let control = control.unwrap();
    // An empty Message, an unknown member (field 99), a ServerMessage,
    // a stray StreamRsp, an unknown CloseTunnelRsp: all ignored.
    peer.send_raw(&[0, 0, 0, 0]).await;
    peer.send_raw(&[0, 0, 0, 3, 0x98, 0x06, 0x01]).await;
    peer.send(Payload::ServerMessage(proto::ServerMessage {
        message: "hello".into(),
    }))
    .await;
    peer.send(Payload::StreamRsp(proto::StreamRsp { payload: None }))
        .await;
    peer.send(Payload::CloseTunnelRsp(proto::CloseTunnelRsp {
        tunnel_id: "nope".into(),
    }))
    .await;
    peer.send(Payload::ProxyConnReq(proto::ProxyConnReq {
        tunnel_id: "unknown".into(),
        stream_id: "s1".into(),
        ..Default::default()
    }))
    .await;
    match within("refusal", peer.recv()).await {
        Some(Payload::ProxyConnRsp(rsp)) => {
            assert_eq!(rsp.stream_id, "s1");
            assert_eq!(
                rsp.error.unwrap().code,
                proto::ErrorCode::InvalidStream as i32
            );
        }
        other => panic!("expected ProxyConnRsp, got {:?}", other.map(|p| p.name())),
    }
    assert!(!control.is_closed());
    // Graceful close: CloseControlChannelReq, answered.
    scripted::close_gracefully(&control, &mut peer).await;
    assert!(control.is_closed());
}
