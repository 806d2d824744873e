//! `GET /api/clients`, `/api/tunnels` and their `/{id}` forms, and the
//! conversion of the engine's state into the API's objects.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::Json;
use http::StatusCode;

use super::{Authorized, Engine, Params, Rejection};
use crate::api::{ClientRecord, ListClientsParams, ListTunnelsParams, Status, TunnelRecord};
use crate::engine::events::{ClientInfo, TunnelInfo};

/// The API object of a connected client (also the `object` of the
/// engine's `client.*` webhooks).
pub(crate) fn client_object(info: &ClientInfo, status: Status) -> ClientRecord {
    let d = &info.details;
    let mut c = ClientRecord::new(info.id.clone(), status);
    c.agent = d.agent.clone();
    c.channel = d.channel.clone();
    c.version = d.version.clone();
    c.os = d.os.clone();
    c.arch = d.arch.clone();
    c.protocol_version = d.protocol_version.clone();
    c
}

/// The API object of an open tunnel (also the `object` of the engine's
/// `tunnel.*` webhooks).
pub(crate) fn tunnel_object(info: &TunnelInfo, status: Status) -> TunnelRecord {
    let p = &info.properties;
    let mut t = TunnelRecord::new(info.id.clone(), info.client_id.clone(), status);
    t.creation_date = Some(crate::engine::dates::rfc3339(info.created_at));
    t.name = p.name.clone();
    t.tunnel_type = p.r#type.clone();
    t.publish = p.publish;
    t.protocol = p.protocol.clone();
    t.labels = p
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect::<BTreeMap<_, _>>();
    t.geo_ip = p.geoip.clone();
    t.trusted_ips = p.trusted_ips.clone();
    t.host = p.host.clone();
    t.hostname = p.hostname.clone();
    t.port = p.port.and_then(|port| u16::try_from(port).ok());
    t.tls_mode = p.tls_mode.clone();
    t.tls_alpns = p.tls_alpns.clone();
    t.tls_min_version = p.tls_min_version.clone();
    t.tls_ciphers = p.tls_ciphers.clone();
    t.mtls_auth = p.mtls_auth;
    t.http_version = p.http_version.clone();
    t.http_use_tls = p.http_use_tls;
    t.upstream_tls = p.upstream_tls;
    t.token_auth = p.token_auth;
    t.rstream_auth = p.rstream_auth;
    t.challenge_mode = p.challenge_mode;
    t.datagram_guaranteed_delivery = p.datagram_guaranteed_delivery;
    t.allow_cross_region_routing = p.allow_cross_region_routing;
    t
}

/// Clients, oldest first.
pub(super) fn clients(mut infos: Vec<ClientInfo>) -> Vec<ClientRecord> {
    infos.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    infos
        .iter()
        .map(|c| client_object(c, Status::Online))
        .collect()
}

/// Tunnels, oldest first.
pub(super) fn tunnels(mut infos: Vec<TunnelInfo>) -> Vec<TunnelRecord> {
    infos.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    infos
        .iter()
        .map(|t| tunnel_object(t, Status::Online))
        .collect()
}

fn check_limit(limit: Option<u64>) -> Result<usize, Rejection> {
    match limit {
        None => Ok(usize::MAX),
        Some(0) => Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            "invalid params: limit must be at least 1",
        )),
        Some(n) => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
    }
}

pub(super) async fn list_clients(
    _: Authorized,
    State(inner): State<Engine>,
    Params(params): Params<ListClientsParams>,
) -> Result<Json<Vec<ClientRecord>>, Rejection> {
    let limit = check_limit(params.limit)?;
    // Copy (cheap: shared details) under the lock, convert after it.
    let infos = inner.state().clients();
    let all = clients(infos);
    let filters = params.filters.unwrap_or_default();
    Ok(Json(
        all.into_iter()
            .filter(|c| filters.matches(c))
            .take(limit)
            .collect(),
    ))
}

pub(super) async fn list_tunnels(
    _: Authorized,
    State(inner): State<Engine>,
    Params(params): Params<ListTunnelsParams>,
) -> Result<Json<Vec<TunnelRecord>>, Rejection> {
    let limit = check_limit(params.limit)?;
    // Copy (cheap: shared properties) under the lock, convert after it.
    let infos = inner.state().tunnels();
    let all = tunnels(infos);
    let filters = params.filters.unwrap_or_default();
    Ok(Json(
        all.into_iter()
            .filter(|t| filters.matches(t))
            .take(limit)
            .collect(),
    ))
}

pub(super) async fn get_client(
    _: Authorized,
    State(inner): State<Engine>,
    Path(id): Path<String>,
) -> Result<Json<ClientRecord>, Rejection> {
    let found = inner.state().client(&id);
    match found {
        Some(c) => Ok(Json(client_object(&c, Status::Online))),
        None => Err(Rejection::new(
            StatusCode::NOT_FOUND,
            format!("client {id:?} not found"),
        )),
    }
}

pub(super) async fn get_tunnel(
    _: Authorized,
    State(inner): State<Engine>,
    Path(id): Path<String>,
) -> Result<Json<TunnelRecord>, Rejection> {
    let found = inner.state().tunnel(&id);
    match found {
        Some(t) => Ok(Json(tunnel_object(&t, Status::Online))),
        None => Err(Rejection::new(
            StatusCode::NOT_FOUND,
            format!("tunnel {id:?} not found"),
        )),
    }
}
