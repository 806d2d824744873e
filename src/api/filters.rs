//! Typed filters and params for the list and watch calls (ENGINE_API.md §4).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::models::{ClientRecord, TunnelRecord};

macro_rules! setters {
    ($ty:ident { $($field:ident => $doc:literal),* $(,)? }) => {
        impl $ty {
            $(
                #[doc = $doc]
                pub fn $field(mut self, value: impl Into<String>) -> Self {
                    self.$field = Some(value.into());
                    self
                }
            )*
        }
    };
}

/// Filters for [`TunnelRecord`]s: every key optional, all conditions ANDed.
///
/// The whole params object travels as compact JSON in one `params` query
/// value; unset fields are omitted. A label mapped to a value must match
/// exactly; a label mapped to `null` ([`label_any`](Self::label_any)) means
/// "the key exists, with any value".
///
/// ```
/// use rstream::api::{ListTunnelsParams, TunnelFilters};
///
/// let params = ListTunnelsParams::new()
///     .limit(10)
///     .filters(TunnelFilters::new().status("online").label("env", "prod").label_any("service"));
/// assert_eq!(
///     serde_json::to_string(&params).unwrap(),
///     r#"{"limit":10,"filters":{"status":"online","labels":{"env":"prod","service":null}}}"#
/// );
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
#[must_use = "a builder does nothing unless its result is used"]
pub struct TunnelFilters {
    /// Exact tunnel id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Exact tunnel name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `bytestream` or `datagram` (JSON `type`).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub tunnel_type: Option<String>,
    /// `online` or `offline`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The owning client's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The owning user's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// `tls`, `http`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Exact public hostname.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Published or private.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<bool>,
    /// `http/1.1`, `h2`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_version: Option<String>,
    /// Labels: `Some(v)` must match exactly, `None` (JSON `null`) matches any value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, Option<String>>,
}

setters!(TunnelFilters {
    id => "Only the tunnel with this id.",
    name => "Only the tunnel with this name.",
    tunnel_type => "Only tunnels of this type (`bytestream`, `datagram`).",
    status => "Only tunnels with this status (`online`, `offline`).",
    client_id => "Only tunnels of this client.",
    user_id => "Only tunnels of this user.",
    protocol => "Only tunnels with this protocol (`http`, `tls`, …).",
    hostname => "Only tunnels with this public hostname.",
    http_version => "Only tunnels with this HTTP version (`http/1.1`, `h2`, …).",
});

impl TunnelFilters {
    /// No filter: everything matches.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only published (`true`) or private (`false`) tunnels.
    pub fn publish(mut self, published: bool) -> Self {
        self.publish = Some(published);
        self
    }

    /// Only tunnels whose label `key` is exactly `value`.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), Some(value.into()));
        self
    }

    /// Only tunnels that have the label `key`, with any value.
    pub fn label_any(mut self, key: impl Into<String>) -> Self {
        self.labels.insert(key.into(), None);
        self
    }

    /// Whether `tunnel` matches every condition.
    pub fn matches(&self, tunnel: &TunnelRecord) -> bool {
        eq(&self.id, Some(&tunnel.id))
            && eq(&self.name, tunnel.name.as_ref())
            && eq(&self.tunnel_type, tunnel.tunnel_type.as_ref())
            && self
                .status
                .as_deref()
                .is_none_or(|s| s == tunnel.status.as_str())
            && eq(&self.client_id, Some(&tunnel.client_id))
            && eq(&self.user_id, tunnel.user_id.as_ref())
            && eq(&self.protocol, tunnel.protocol.as_ref())
            && eq(&self.hostname, tunnel.hostname.as_ref())
            && self
                .publish
                .is_none_or(|p| p == tunnel.publish.unwrap_or(false))
            && eq(&self.http_version, tunnel.http_version.as_ref())
            && labels_match(&self.labels, &tunnel.labels)
    }
}

/// Filters for [`ClientRecord`]s: every key optional, all conditions ANDed; labels as in
/// [`TunnelFilters`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
#[must_use = "a builder does nothing unless its result is used"]
pub struct ClientFilters {
    /// Exact client id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `online` or `offline`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The owning user's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Agent name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Agent channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Agent version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Operating system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    /// CPU architecture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// Runtime protocol version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
    /// Labels: `Some(v)` must match exactly, `None` (JSON `null`) matches any value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, Option<String>>,
}

setters!(ClientFilters {
    id => "Only the client with this id.",
    status => "Only clients with this status (`online`, `offline`).",
    user_id => "Only clients of this user.",
    agent => "Only clients with this agent name.",
    channel => "Only clients with this agent channel.",
    version => "Only clients with this agent version.",
    os => "Only clients on this operating system.",
    arch => "Only clients on this CPU architecture.",
    protocol_version => "Only clients speaking this protocol version.",
});

impl ClientFilters {
    /// No filter: everything matches.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only clients whose label `key` is exactly `value`.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), Some(value.into()));
        self
    }

    /// Only clients that have the label `key`, with any value.
    pub fn label_any(mut self, key: impl Into<String>) -> Self {
        self.labels.insert(key.into(), None);
        self
    }

    /// Whether `client` matches every condition.
    pub fn matches(&self, client: &ClientRecord) -> bool {
        eq(&self.id, Some(&client.id))
            && self
                .status
                .as_deref()
                .is_none_or(|s| s == client.status.as_str())
            && eq(&self.user_id, client.user_id.as_ref())
            && eq(&self.agent, client.agent.as_ref())
            && eq(&self.channel, client.channel.as_ref())
            && eq(&self.version, client.version.as_ref())
            && eq(&self.os, client.os.as_ref())
            && eq(&self.arch, client.arch.as_ref())
            && eq(&self.protocol_version, client.protocol_version.as_ref())
            && labels_match(&self.labels, &client.labels)
    }
}

fn eq(want: &Option<String>, have: Option<&String>) -> bool {
    match want {
        None => true,
        Some(w) => have == Some(w),
    }
}

fn labels_match(want: &BTreeMap<String, Option<String>>, have: &BTreeMap<String, String>) -> bool {
    want.iter().all(|(k, v)| match (v, have.get(k)) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(v), Some(h)) => v == h,
    })
}

/// List params, `{"limit"?, "filters"?}`: [`ListTunnelsParams`] for
/// `GET /api/tunnels`, [`ListClientsParams`] for `GET /api/clients`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
#[must_use = "a builder does nothing unless its result is used"]
pub struct ListParams<F> {
    /// At most this many objects (≥ 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// The filters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<F>,
}

/// `GET /api/tunnels` params.
pub type ListTunnelsParams = ListParams<TunnelFilters>;

/// `GET /api/clients` params.
pub type ListClientsParams = ListParams<ClientFilters>;

// By hand: the derive would require `F: Default`.
impl<F> Default for ListParams<F> {
    fn default() -> Self {
        ListParams {
            limit: None,
            filters: None,
        }
    }
}

impl<F> ListParams<F> {
    /// No limit, no filter.
    pub fn new() -> Self {
        Self::default()
    }

    /// At most `n` objects (the engine rejects 0).
    pub fn limit(mut self, n: u64) -> Self {
        self.limit = Some(n);
        self
    }

    /// Only the objects `filters` match.
    pub fn filters(mut self, filters: F) -> Self {
        self.filters = Some(filters);
        self
    }
}

impl From<TunnelFilters> for ListTunnelsParams {
    fn from(filters: TunnelFilters) -> Self {
        ListParams::new().filters(filters)
    }
}

impl From<ClientFilters> for ListClientsParams {
    fn from(filters: ClientFilters) -> Self {
        ListParams::new().filters(filters)
    }
}

/// Watch params (`/api/sse`, `/api/websocket`): `{"clients"?, "tunnels"?}`,
/// no limit. A side without filters sees all its objects.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
#[must_use = "a builder does nothing unless its result is used"]
pub struct WatchParams {
    /// Which clients (all when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clients: Option<ClientFilters>,
    /// Which tunnels (all when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnels: Option<TunnelFilters>,
}

impl WatchParams {
    /// Everything.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only the clients `filters` match.
    pub fn clients(mut self, filters: ClientFilters) -> Self {
        self.clients = Some(filters);
        self
    }

    /// Only the tunnels `filters` match.
    pub fn tunnels(mut self, filters: TunnelFilters) -> Self {
        self.tunnels = Some(filters);
        self
    }

    /// Whether `client` is watched.
    pub fn matches_client(&self, client: &ClientRecord) -> bool {
        self.clients.as_ref().is_none_or(|f| f.matches(client))
    }

    /// Whether `tunnel` is watched.
    pub fn matches_tunnel(&self, tunnel: &TunnelRecord) -> bool {
        self.tunnels.as_ref().is_none_or(|f| f.matches(tunnel))
    }
}

/// The `?params=…` query for a params object, or `""` when it is empty
/// (the SDKs then omit the parameter).
pub(crate) fn query<T: Serialize + Default + PartialEq>(params: &T) -> String {
    if *params == T::default() {
        return String::new();
    }
    match serde_json::to_string(params) {
        Ok(json) => format!("?params={}", crate::percent::encode_component(&json)),
        // Plain structs with string keys always serialise.
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::models::Status;

    #[test]
    fn encoding() {
        assert_eq!(query(&ListTunnelsParams::new()), "");
        assert_eq!(
            query(&ListTunnelsParams::new().limit(2)),
            "?params=%7B%22limit%22%3A2%7D"
        );
        let w = WatchParams::new()
            .clients(ClientFilters::new().agent("rstream"))
            .tunnels(TunnelFilters::new().label("service", "ssh"));
        assert_eq!(
            serde_json::to_string(&w).unwrap(),
            r#"{"clients":{"agent":"rstream"},"tunnels":{"labels":{"service":"ssh"}}}"#
        );
    }

    #[test]
    fn matching() {
        let mut t = TunnelRecord::new("t1", "c1", Status::Online);
        t.labels.insert("env".into(), "prod".into());
        t.publish = Some(true);
        assert!(TunnelFilters::new().matches(&t));
        assert!(TunnelFilters::new().label_any("env").matches(&t));
        assert!(TunnelFilters::new()
            .label("env", "prod")
            .publish(true)
            .matches(&t));
        assert!(!TunnelFilters::new().label("env", "dev").matches(&t));
        assert!(!TunnelFilters::new().label_any("team").matches(&t));
        assert!(!TunnelFilters::new().status("offline").matches(&t));
        assert!(!TunnelFilters::new().name("x").matches(&t));
        let strict: Result<TunnelFilters, _> = serde_json::from_str(r#"{"nme":"x"}"#);
        assert!(strict.is_err());
    }
}
