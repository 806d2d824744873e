//! Print tunnels and clients coming and going, live, from the Engine API.
//!
//! ```text
//! cargo run --example watch_events                 # demo, then exit
//! cargo run --example watch_events -- --follow     # keep watching (Ctrl-C)
//! cargo run --example watch_events -- --websocket --label service
//! ```
//!
//! Uses `RSTREAM_ENGINE` (with `RSTREAM_AUTHENTICATION_TOKEN` and
//! `RSTREAM_CA_FILE`) when set, else starts a local engine in-process.
//! By default it opens a watch (SSE; `--websocket` for WebSocket), creates
//! and closes a tunnel of its own, prints the events that causes and
//! exits. With `--follow` it only watches, reconnecting after drops (a
//! resilient watch), so you can see what another example, e.g.
//! `cargo run --example quickstart -- --serve`, does on the same engine.
//! `--label KEY[=VALUE]` watches only tunnels with that label.

use std::time::Duration;

use futures_util::StreamExt;
use rstream::api::{Event, EventObject, EventType, TunnelFilters, WatchParams};
use rstream::engine::LocalEngine;
use rstream::error::code;
use rstream::{Client, TlsOptions, TunnelOptions};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let follow = args.iter().any(|a| a == "--follow");
    let websocket = args.iter().any(|a| a == "--websocket");
    let mut tunnels = TunnelFilters::new();
    let mut filtered = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--follow" | "--websocket" => {}
            "--label" => {
                let spec = it.next().ok_or("--label needs KEY or KEY=VALUE")?;
                tunnels = match spec.split_once('=') {
                    Some((k, v)) if !v.is_empty() && v != "*" => tunnels.label(k, v),
                    Some((k, _)) => tunnels.label_any(k),
                    None => tunnels.label_any(spec.as_str()),
                };
                filtered = true;
            }
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }

    // The engine configured by the environment (RSTREAM_ENGINE,
    // RSTREAM_AUTHENTICATION_TOKEN, RSTREAM_CA_FILE, ~/.rstream/config.yaml),
    // or, when none is, a local engine in this process.
    let (client, _local_engine) = match Client::from_env() {
        Err(e) if e.code() == code::ENGINE_REQUIRED => {
            let engine = LocalEngine::builder().start().await?;
            let tls = TlsOptions::new().add_ca_pem(engine.ca_pem().as_bytes())?;
            let client = Client::builder()
                .engine(engine.engine_address())
                .tls(tls)
                .build()?;
            (client, Some(engine))
        }
        configured => (configured?, None),
    };
    let api = client.api();
    let mut params = WatchParams::new();
    if filtered {
        params = params.tunnels(tunnels.clone());
    }
    let mut events = api.watch(params);
    if websocket {
        events = events.websocket();
    }
    if follow {
        events = events.resilient();
    }
    println!(
        "watching {} over {}",
        client
            .engine()
            .map_or("the engine".to_owned(), |e| e.to_string()),
        if websocket { "WebSocket" } else { "SSE" }
    );

    let first = events.next().await.ok_or("the watch ended at once")??;
    print(&first);
    if follow {
        println!("following; press Ctrl-C to stop");
        loop {
            tokio::select! {
                next = events.next() => match next {
                    Some(event) => print(&event?),
                    None => break,
                },
                _ = tokio::signal::ctrl_c() => break,
            }
        }
        return Ok(());
    }

    // Demo: a client of our own opens a tunnel (labelled to match any
    // --label filter) and closes it; print until its client is gone.
    let mut options = TunnelOptions::new().name(format!("watch-events-{}", std::process::id()));
    for (k, v) in &tunnels.labels {
        options = options.label(k, v.clone().unwrap_or_else(|| "demo".into()));
    }
    let control = client.connect().await?;
    let demo_client = control.client_id().to_owned();
    let tunnel = control.create_tunnel(options).await?;
    tunnel.close().await?;
    control.close().await?;
    let wait = async {
        while let Some(event) = events.next().await {
            let event = event?;
            print(&event);
            if event.event_type == EventType::ClientDeleted
                && event.client().is_some_and(|c| c.id == demo_client)
            {
                return Ok::<_, BoxError>(());
            }
        }
        Err("the watch ended early".into())
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .map_err(|_| "no client.deleted within 30 s")??;
    println!("done (pass --follow to keep watching)");
    Ok(())
}

fn print(event: &Event) {
    match &event.object {
        EventObject::Initial(s) => {
            println!(
                "state.initial: {} client(s), {} tunnel(s)",
                s.clients.len(),
                s.tunnels.len()
            );
            for c in &s.clients {
                println!("  client {} {}", c.id, c.agent.as_deref().unwrap_or("?"));
            }
            for t in &s.tunnels {
                println!("  tunnel {} {}", t.id, describe(t));
            }
        }
        EventObject::Client(c) => {
            let sign = if event.event_type == EventType::ClientDeleted {
                '-'
            } else {
                '+'
            };
            println!(
                "{sign} {:<15} {} {} {}",
                event.event_type,
                c.id,
                c.agent.as_deref().unwrap_or("?"),
                c.version.as_deref().unwrap_or("")
            );
        }
        EventObject::Tunnel(t) => {
            let sign = if event.event_type == EventType::TunnelDeleted {
                '-'
            } else {
                '+'
            };
            println!("{sign} {:<15} {} {}", event.event_type, t.id, describe(t));
        }
        _ => println!("? {}", event.event_type),
    }
}

fn describe(t: &rstream::api::TunnelRecord) -> String {
    let mut s = format!(
        "name={} protocol={} client={}",
        t.name.as_deref().unwrap_or("-"),
        t.protocol.as_deref().unwrap_or("bytestream"),
        t.client_id
    );
    if let Some(host) = t.display_host() {
        s.push_str(&format!(" at={host}"));
    }
    if !t.labels.is_empty() {
        let labels: Vec<String> = t.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        s.push_str(&format!(" labels={}", labels.join(",")));
    }
    s
}
