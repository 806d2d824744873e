//! List an engine's tunnels (or clients) with filters from the command line.
//!
//! ```text
//! cargo run --example list_tunnels
//! cargo run --example list_tunnels -- --label service --publish false
//! cargo run --example list_tunnels -- --label env=prod --limit 5
//! cargo run --example list_tunnels -- --clients
//! ```
//!
//! Uses `RSTREAM_ENGINE` (with `RSTREAM_AUTHENTICATION_TOKEN` and
//! `RSTREAM_CA_FILE`) when set, else starts a local engine in-process and
//! opens two demo tunnels in it first, so there is something to list.
//!
//! Tunnel filters: `--id`, `--name`, `--type`, `--status`, `--client-id`,
//! `--user-id`, `--protocol`, `--hostname`, `--publish true|false`,
//! `--http-version`, `--label KEY=VALUE` (exact) or `--label KEY` /
//! `--label KEY=*` (any value); repeat to AND them. `--limit N`.
//! With `--clients`: `--id`, `--status`, `--user-id`, `--agent`,
//! `--channel`, `--version`, `--os`, `--arch`, `--protocol-version`,
//! `--label`, `--limit`.

const USAGE: &str = "\
usage: list_tunnels [--clients] [--limit N] [--label KEY[=VALUE|=*]]... [FILTER VALUE]...
tunnel filters: --id --name --type --status --client-id --user-id --protocol
                --hostname --publish true|false --http-version
client filters (with --clients): --id --status --user-id --agent --channel
                --version --os --arch --protocol-version
repeated filters are ANDed; --label KEY or KEY=* matches any value";

use rstream::api::{ClientFilters, ListClientsParams, ListTunnelsParams, TunnelFilters};
use rstream::engine::LocalEngine;
use rstream::error::code;
use rstream::{Client, TlsOptions, TunnelOptions};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return Ok(());
    }
    let clients_mode = args.iter().any(|a| a == "--clients");
    let mut tunnels = TunnelFilters::new();
    let mut clients = ClientFilters::new();
    let mut limit = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--clients" {
            continue;
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?
            .clone();
        match flag.as_str() {
            "--limit" => limit = Some(value.parse::<u64>()?),
            "--label" => match value.split_once('=') {
                Some((k, v)) if !v.is_empty() && v != "*" => {
                    tunnels = tunnels.label(k, v);
                    clients = clients.label(k, v);
                }
                Some((k, _)) => {
                    tunnels = tunnels.label_any(k);
                    clients = clients.label_any(k);
                }
                None => {
                    tunnels = tunnels.label_any(value.as_str());
                    clients = clients.label_any(value.as_str());
                }
            },
            "--id" => {
                tunnels = tunnels.id(value.as_str());
                clients = clients.id(value);
            }
            "--status" => {
                tunnels = tunnels.status(value.as_str());
                clients = clients.status(value);
            }
            "--user-id" => {
                tunnels = tunnels.user_id(value.as_str());
                clients = clients.user_id(value);
            }
            "--name" => tunnels = tunnels.name(value),
            "--type" => tunnels = tunnels.tunnel_type(value),
            "--client-id" => tunnels = tunnels.client_id(value),
            "--protocol" => tunnels = tunnels.protocol(value),
            "--hostname" => tunnels = tunnels.hostname(value),
            "--publish" => tunnels = tunnels.publish(value.parse::<bool>()?),
            "--http-version" => tunnels = tunnels.http_version(value),
            "--agent" => clients = clients.agent(value),
            "--channel" => clients = clients.channel(value),
            "--version" => clients = clients.version(value),
            "--os" => clients = clients.os(value),
            "--arch" => clients = clients.arch(value),
            "--protocol-version" => clients = clients.protocol_version(value),
            other => return Err(format!("unknown flag {other:?}").into()),
        }
    }

    // The engine configured by the environment (RSTREAM_ENGINE,
    // RSTREAM_AUTHENTICATION_TOKEN, RSTREAM_CA_FILE, ~/.rstream/config.yaml),
    // or, when none is, a local engine in this process.
    let (client, local_engine) = match Client::from_env() {
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
    // Standalone: give the in-process engine something to list.
    let _demo = if local_engine.is_some() {
        let control = client.connect().await?;
        let web = control
            .create_tunnel(
                TunnelOptions::http()
                    .name("demo-web")
                    .label("service", "web"),
            )
            .await?;
        let ssh = control
            .create_tunnel(
                TunnelOptions::new()
                    .name("demo-ssh")
                    .label("service", "ssh")
                    .label("env", "prod"),
            )
            .await?;
        Some((control, web, ssh))
    } else {
        None
    };
    let api = client.api();

    if clients_mode {
        let mut params = ListClientsParams::new().filters(clients);
        if let Some(n) = limit {
            params = params.limit(n);
        }
        let found = api.list_clients(params).await?;
        println!(
            "{:<38} {:<8} {:<22} {:<10} OS/ARCH",
            "ID", "STATUS", "AGENT", "VERSION"
        );
        for c in &found {
            println!(
                "{:<38} {:<8} {:<22} {:<10} {}/{}",
                c.id,
                c.status,
                c.agent.as_deref().unwrap_or("-"),
                c.version.as_deref().unwrap_or("-"),
                c.os.as_deref().unwrap_or("-"),
                c.arch.as_deref().unwrap_or("-")
            );
        }
        println!("{} client(s)", found.len());
        return Ok(());
    }

    let mut params = ListTunnelsParams::new().filters(tunnels);
    if let Some(n) = limit {
        params = params.limit(n);
    }
    let found = api.list_tunnels(params).await?;
    println!(
        "{:<18} {:<12} {:<9} {:<8} {:<22} LABELS",
        "ID", "NAME", "PROTOCOL", "PUBLISH", "ADDRESS"
    );
    for t in &found {
        let labels: Vec<String> = t.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "{:<18} {:<12} {:<9} {:<8} {:<22} {}",
            t.id,
            t.name.as_deref().unwrap_or("-"),
            t.protocol.as_deref().unwrap_or("-"),
            t.publish.unwrap_or(false),
            t.display_host().unwrap_or_else(|| "-".into()),
            labels.join(",")
        );
    }
    println!("{} tunnel(s)", found.len());
    Ok(())
}
