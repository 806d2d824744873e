//! Closing, end to end: the last handle dropped closes the tunnel and the
//! channel gracefully, the local engine forgets such a client, and an
//! engine closing a live tunnel leaves the channel open.
//!
//! Over real loopback TLS, against the local engine or against the
//! scripted engine (tests/support/scripted.rs).

use std::time::{Duration, Instant};

use rstream::engine::EngineEvent;
use rstream::proto::{self, message::Payload};
use rstream::{ConnectionStatus, ErrorKind, TunnelOptions};

use crate::support::scripted::{self, Scripted};
use crate::support::{self, within};

// ----- 1. close on drop of the last handle ------------------------------

/// The channel stays open while any handle or tunnel lives; dropping the
/// last of them closes the tunnel (`CloseTunnelReq`) and then the channel
/// gracefully (`CloseControlChannelReq`), ends with a clean status and a
/// TLS `close_notify`, and leaves accepted streams flowing.
#[tokio::test]
async fn dropping_the_last_handle_and_tunnel_closes_gracefully() {
    let engine = Scripted::start().await;
    let (control, mut peer) = scripted::channel(&engine).await;
    let tunnel = scripted::tunnel(&control, &mut peer, "dropped", "dropped-1").await;
    let mut status = control.status();
    let clone = control.clone();

    // One handle of two: nothing happens.
    drop(control);
    scripted::assert_silent(&mut peer, Duration::from_millis(300), "one clone dropped").await;
    // No handle left, but a tunnel: the channel still serves it.
    drop(clone);
    scripted::assert_silent(
        &mut peer,
        Duration::from_millis(300),
        "every handle dropped",
    )
    .await;
    assert!(status.borrow().is_connected());
    let mut tunnel = tunnel;
    let mut conn = scripted::proxy(&engine, &mut peer, "dropped-1", "s-1", None).await;
    let mut stream = within("accept", tunnel.accept()).await.unwrap();
    scripted::assert_flows(&mut stream, &mut conn, "before").await;

    // The last tunnel goes: tunnel close, then the graceful channel close.
    let started = Instant::now();
    drop(tunnel);
    match within("CloseTunnelReq", peer.recv()).await {
        Some(Payload::CloseTunnelReq(req)) => assert_eq!(req.tunnel_id, "dropped-1"),
        other => panic!("expected CloseTunnelReq, got {:?}", other.map(|p| p.name())),
    }
    peer.send(Payload::CloseTunnelRsp(proto::CloseTunnelRsp {
        tunnel_id: "dropped-1".into(),
    }))
    .await;
    match within("CloseControlChannelReq", peer.recv()).await {
        Some(Payload::CloseControlChannelReq(_)) => {}
        other => panic!(
            "expected CloseControlChannelReq, got {:?}",
            other.map(|p| p.name())
        ),
    }
    let closing = started.elapsed();
    assert!(closing < Duration::from_secs(2), "close took {closing:?}");
    peer.send(Payload::CloseControlChannelRsp(
        proto::CloseControlChannelRsp {},
    ))
    .await;
    // The client then ends the connection cleanly (close_notify: EOF, not
    // a truncation error) ...
    let end = within("connection end", proto::read_frame(&mut peer.io)).await;
    assert!(matches!(end, Ok(None)), "expected a clean EOF, got {end:?}");
    // ... and its status says it closed without error.
    let last = within(
        "Closed status",
        status.wait_for(ConnectionStatus::is_closed),
    )
    .await
    .expect("status sender alive until Closed")
    .clone();
    assert!(
        matches!(last, ConnectionStatus::Closed { error: None }),
        "{last:?}"
    );
    // Streams already accepted keep flowing.
    scripted::assert_flows(&mut stream, &mut conn, "after").await;
}

/// The same against the local engine: once the last handle and tunnel are
/// dropped, the engine deletes the tunnel and then the client (events, in
/// that order, within 2 s), and neither its inventory nor the Engine
/// API lists them any more.
#[tokio::test]
async fn local_engine_forgets_a_client_whose_handles_are_all_dropped() {
    let engine = support::engine().await;
    let observer = support::client(&engine);
    let api = observer.api();
    let owner = support::client(&engine);
    let control = within("connect", owner.connect()).await.unwrap();
    let tunnel = within(
        "create",
        control.create_tunnel(TunnelOptions::new().name("drop-me")),
    )
    .await
    .unwrap();
    let client_id = control.client_id();
    let tunnel_id = tunnel.id();
    assert!(engine.clients().iter().any(|c| c.id == client_id));
    let listed = within(
        "list",
        api.list_clients(rstream::api::ListClientsParams::new()),
    )
    .await
    .unwrap();
    assert!(listed.iter().any(|c| c.id == client_id), "{listed:?}");

    let mut events = engine.subscribe();
    let started = Instant::now();
    drop(tunnel);
    drop(control);
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match events.recv().await.expect("event") {
                EngineEvent::TunnelDeleted { tunnel, .. } if tunnel.id == tunnel_id => {
                    seen.push("tunnel.deleted");
                }
                EngineEvent::ClientDeleted { client, .. } if client.id == client_id => {
                    seen.push("client.deleted");
                    break;
                }
                _ => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the engine still holds the client (events so far: {seen:?})"));
    assert_eq!(seen, ["tunnel.deleted", "client.deleted"]);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "close took {took:?}");
    assert!(engine.clients().is_empty(), "{:?}", engine.clients());
    assert!(engine.tunnels().is_empty(), "{:?}", engine.tunnels());
    let listed = within(
        "list",
        api.list_clients(rstream::api::ListClientsParams::new()),
    )
    .await
    .unwrap();
    assert!(listed.iter().all(|c| c.id != client_id), "{listed:?}");
    let tunnels = within(
        "list",
        api.list_tunnels(rstream::api::ListTunnelsParams::new()),
    )
    .await
    .unwrap();
    assert!(tunnels.is_empty(), "{tunnels:?}");
}

// ----- 2. the engine closes a live tunnel -------------------------------

/// An unsolicited `CloseTunnelRsp` for a live tunnel closes that tunnel
/// only: `accept()` and `closed()` report it, later connections for it are
/// refused, an accepted stream keeps flowing, and the channel and its other
/// tunnel go on working. Dropping the closed tunnel sends nothing.
#[tokio::test]
async fn engine_closing_a_live_tunnel_leaves_the_channel_open() {
    let engine = Scripted::start().await;
    let (control, mut peer) = scripted::channel(&engine).await;
    let mut doomed = scripted::tunnel(&control, &mut peer, "doomed", "doomed-1").await;
    let mut other = scripted::tunnel(&control, &mut peer, "other", "other-1").await;
    let mut conn = scripted::proxy(&engine, &mut peer, "doomed-1", "d-1", None).await;
    let mut accepted = within("accept", doomed.accept()).await.unwrap();
    let closed = doomed.closed();

    peer.send(Payload::CloseTunnelRsp(proto::CloseTunnelRsp {
        tunnel_id: "doomed-1".into(),
    }))
    .await;
    let reason = within("tunnel closed()", closed).await;
    assert_eq!(reason.kind(), ErrorKind::Closed, "{reason}");
    assert_eq!(reason.code(), "ERR_RSTREAM_TUNNEL_CLOSED");
    assert!(reason.message().contains("engine"), "{reason}");
    let err = within("accept after close", doomed.accept())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "ERR_RSTREAM_TUNNEL_CLOSED", "{err}");
    assert!(doomed.is_closed());

    // A connection for the closed tunnel is refused; the channel stays up.
    peer.send(Payload::ProxyConnReq(proto::ProxyConnReq {
        tunnel_id: "doomed-1".into(),
        stream_id: "d-2".into(),
        secret: Some("secret-d-2".into()),
        ..Default::default()
    }))
    .await;
    match within("refusal", peer.recv()).await {
        Some(Payload::ProxyConnRsp(rsp)) => {
            assert_eq!(rsp.stream_id, "d-2");
            assert_eq!(
                rsp.error.expect("refused").code,
                proto::ErrorCode::InvalidStream as i32
            );
        }
        other => panic!("expected ProxyConnRsp, got {:?}", other.map(|p| p.name())),
    }
    assert!(!control.is_closed());
    assert!(control.status().borrow().is_connected());
    assert!(!other.is_closed());

    // The stream accepted before the close still flows.
    scripted::assert_flows(&mut accepted, &mut conn, "accepted").await;
    // The other tunnel still gets connections.
    let mut conn2 = scripted::proxy(&engine, &mut peer, "other-1", "o-1", None).await;
    let mut stream = within("accept other", other.accept()).await.unwrap();
    assert_eq!(stream.info().tunnel(), "other-1");
    scripted::assert_flows(&mut stream, &mut conn2, "other").await;
    // And new tunnels can still be created.
    let third = scripted::tunnel(&control, &mut peer, "third", "third-1").await;
    assert!(!third.is_closed());

    // Dropping the closed tunnel sends no CloseTunnelReq: the next frame
    // is the channel's own close.
    drop(doomed);
    scripted::close_gracefully(&control, &mut peer).await;
}
