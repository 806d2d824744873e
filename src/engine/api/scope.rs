//! App-token scopes on the Engine API (TOKENS.md §4.3): the `list`
//! permission and scope, and the query-token rules of `/api/sse` and
//! `/api/websocket`.
//!
//! List `filters` and `select` apply to `GET /api/tunnels`, `/api/clients`
//! and their `/{id}` forms ([`list_scope`] filters and projects what the
//! handlers answer) and to watches ([`ListView`]: the `state.initial`
//! snapshot and every later event).

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::Rejection;
use crate::auth::{Filter, ResourceTree, Scope, StringMatch, TunnelFilter, TunnelScopes};
use crate::engine::auth::{Action, Apps, Grant, Verdict, LEEWAY_SECS, MAX_APP_TOKEN_TTL};

use crate::engine::auth::READ_ONLY;

fn forbidden(message: &'static str) -> Rejection {
    Rejection::new(StatusCode::FORBIDDEN, message)
}

/// The Engine API needs `tunnels.resources.read-only` (or `permissions:
/// null`) and a `list` scope that applies to this engine; with filters or
/// `select`, which are applied to what is answered.
pub(crate) fn check_list_permission(grant: &Grant, apps: &Apps) -> Result<(), Rejection> {
    if let Some(permissions) = &grant.permissions {
        if !permissions.iter().any(|p| p == READ_ONLY) {
            return Err(forbidden(
                "token lacks the tunnels.resources.read-only permission",
            ));
        }
    }
    let Some(resources) = &grant.resources else {
        return Ok(());
    };
    match apps.verdict(&resources.tunnels, Action::List) {
        Verdict::Allow => Ok(()),
        Verdict::Deny => Err(forbidden(
            "token resources do not allow listing tunnels on this engine",
        )),
        // Filters and select are applied to what is answered (REST:
        // `list_scope`; watches: `ListView`).
        Verdict::Conditional => Ok(()),
    }
}

/// Request extension: where [`Authorized`](super::Authorized) leaves the
/// app token's grant for [`list_scope`].
#[derive(Clone, Default)]
pub(crate) struct GrantSlot(pub(crate) Arc<OnceLock<Arc<Grant>>>);

/// Largest answer [`list_scope`] re-reads to filter: 64 MiB (the engine's
/// own JSON; bounded anyway).
const MAX_FILTERED_BODY: usize = 64 << 20;

/// Which fields of a visible object a token may see.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Fields {
    All,
    Only(BTreeSet<String>),
}

impl Fields {
    fn union(self, other: Fields) -> Fields {
        match (self, other) {
            (Fields::All, _) | (_, Fields::All) => Fields::All,
            (Fields::Only(mut a), Fields::Only(b)) => {
                a.extend(b);
                Fields::Only(a)
            }
        }
    }

    fn intersect(self, other: Fields) -> Fields {
        match (self, other) {
            (Fields::All, x) | (x, Fields::All) => x,
            (Fields::Only(a), Fields::Only(b)) => {
                Fields::Only(a.intersection(&b).cloned().collect())
            }
        }
    }
}

/// A JSON constraint against an object's value: strings are `S`
/// matchers, everything else compares equal; a missing value fails.
fn value_matches(constraint: &Value, have: Option<&Value>) -> bool {
    let Some(have) = have.filter(|v| !v.is_null()) else {
        return false;
    };
    match constraint {
        Value::String(_) | Value::Object(_) => {
            match serde_json::from_value::<StringMatch>(constraint.clone()) {
                Ok(m) => crate::engine::access::string_matches(&m, have.as_str()),
                Err(_) => false,
            }
        }
        other => other == have,
    }
}

fn object_matches(filter: &TunnelFilter, item: &Value) -> bool {
    let Ok(Value::Object(constraints)) = serde_json::to_value(filter) else {
        return false;
    };
    constraints
        .iter()
        .all(|(key, constraint)| match (key.as_str(), constraint) {
            ("labels", Value::Object(labels)) => labels
                .iter()
                .all(|(k, c)| value_matches(c, item.get("labels").and_then(|l| l.get(k)))),
            _ => value_matches(constraint, item.get(key)),
        })
}

fn json_filter_matches(filter: &Filter<TunnelFilter>, item: &Value) -> bool {
    match filter {
        Filter::And(items) => items.iter().all(|f| json_filter_matches(f, item)),
        Filter::Or(items) => items.iter().any(|f| json_filter_matches(f, item)),
        Filter::Match(f) => object_matches(f, item),
    }
}

/// What `tree` shows of `item`: `None` hides it.
fn view(apps: &Apps, tree: &ResourceTree, item: &Value) -> Option<Fields> {
    match tree {
        ResourceTree::Leaf(leaf) => {
            if apps.verdict(tree, Action::List) == Verdict::Deny {
                return None;
            }
            let Some(scopes) = &leaf.scopes else {
                return Some(Fields::All);
            };
            match &scopes.tunnels.list {
                None | Some(Scope::Allowed(false)) => None,
                Some(Scope::Allowed(true)) => Some(Fields::All),
                Some(Scope::Rules(rules)) => {
                    if !rules
                        .filters
                        .as_ref()
                        .is_none_or(|f| json_filter_matches(f, item))
                    {
                        return None;
                    }
                    Some(match &rules.select {
                        None => Fields::All,
                        Some(select) => Fields::Only(select.fields().map(str::to_owned).collect()),
                    })
                }
            }
        }
        ResourceTree::Or(items) => items
            .iter()
            .filter_map(|t| view(apps, t, item))
            .reduce(Fields::union),
        ResourceTree::And(items) => items
            .iter()
            .map(|t| view(apps, t, item))
            .try_fold(Fields::All, |acc, v| v.map(|v| acc.intersect(v))),
    }
}

/// `item` as `tree` shows it, or `None`.
fn project(apps: &Apps, tree: &ResourceTree, item: Value) -> Option<Value> {
    match view(apps, tree, &item)? {
        Fields::All => Some(item),
        Fields::Only(keep) => match item {
            Value::Object(map) => Some(Value::Object(
                map.into_iter().filter(|(k, _)| keep.contains(k)).collect(),
            )),
            other => Some(other),
        },
    }
}

/// Middleware: after a list or get of tunnels/clients authorized by an app
/// token with list `filters`/`select`, drops the objects the token may not
/// see and the fields it did not select (a hidden `/{id}` is 404).
pub(crate) async fn list_scope(
    axum::extract::State(inner): axum::extract::State<Arc<crate::engine::Inner>>,
    mut req: Request,
    next: Next,
) -> Response {
    let slot = GrantSlot::default();
    req.extensions_mut().insert(slot.clone());
    let path = req.uri().path().to_owned();
    let response = next.run(req).await;
    let Some(grant) = slot.0.get() else {
        return response;
    };
    let Some(resources) = &grant.resources else {
        return response;
    };
    let apps = &inner.config.apps;
    if apps.verdict(&resources.tunnels, Action::List) != Verdict::Conditional
        || response.status() != StatusCode::OK
    {
        return response;
    }
    let single = match path.as_str() {
        "/api/tunnels" | "/api/clients" => false,
        p if p.starts_with("/api/tunnels/") || p.starts_with("/api/clients/") => true,
        _ => return response,
    };
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_FILTERED_BODY).await else {
        return Rejection::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "answer too large to filter",
        )
        .into_response();
    };
    let Ok(value) = serde_json::from_slice::<Value>(&bytes) else {
        return Rejection::new(StatusCode::INTERNAL_SERVER_ERROR, "answer is not JSON")
            .into_response();
    };
    let filtered = if single {
        match project(apps, &resources.tunnels, value) {
            Some(v) => v,
            None => {
                return Rejection::new(StatusCode::NOT_FOUND, "not found").into_response();
            }
        }
    } else {
        match value {
            Value::Array(items) => Value::Array(
                items
                    .into_iter()
                    .filter_map(|item| project(apps, &resources.tunnels, item))
                    .collect(),
            ),
            _ => {
                return Rejection::new(StatusCode::INTERNAL_SERVER_ERROR, "answer is not a list")
                    .into_response();
            }
        }
    };
    let body = serde_json::to_vec(&filtered).unwrap_or_default();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

/// A watch's list scope: which objects of the snapshot and events the
/// token may see, and which of their fields.
pub(crate) struct ListView {
    inner: Arc<crate::engine::Inner>,
    grant: Arc<Grant>,
}

impl ListView {
    /// The view of the watch's app token, when its list scope filters or
    /// selects (`None`: everything, as for static tokens).
    pub(crate) fn for_watch(
        inner: &Arc<crate::engine::Inner>,
        slot: Option<axum::Extension<GrantSlot>>,
    ) -> Option<ListView> {
        let grant = slot?.0 .0.get()?.clone();
        let resources = grant.resources.as_ref()?;
        if inner.config.apps.verdict(&resources.tunnels, Action::List) != Verdict::Conditional {
            return None;
        }
        Some(ListView {
            inner: inner.clone(),
            grant,
        })
    }

    /// `event` as JSON after the scope, or `None` when the token may not
    /// see its object. A deleted object is judged on its last live state
    /// (`online`), as the watch filters do, and sent `offline`.
    pub(crate) fn event_json(&self, event: &crate::api::Event) -> Option<String> {
        let resources = self.grant.resources.as_ref()?;
        let apps = &self.inner.config.apps;
        let tree = &resources.tunnels;
        let mut value = serde_json::to_value(event).ok()?;
        let object = value.get_mut("object")?;
        if event.event_type == crate::api::EventType::StateInitial {
            for key in ["clients", "tunnels"] {
                if let Some(Value::Array(items)) = object.get_mut(key) {
                    let all = std::mem::take(items);
                    *items = all
                        .into_iter()
                        .filter_map(|item| project(apps, tree, item))
                        .collect();
                }
            }
        } else {
            let mut probe = object.clone();
            if let Some(status) = probe.get_mut("status") {
                *status = Value::String("online".into());
            }
            let fields = view(apps, tree, &probe)?;
            let taken = object.take();
            *object = match (fields, taken) {
                (Fields::Only(keep), Value::Object(map)) => {
                    Value::Object(map.into_iter().filter(|(k, _)| keep.contains(k)).collect())
                }
                (_, other) => other,
            };
        }
        serde_json::to_string(&value).ok()
    }
}

fn is_list_only(scopes: &TunnelScopes) -> bool {
    fn allowed<T>(s: &Option<Scope<T>>) -> bool {
        s.as_ref().is_some_and(Scope::is_allowed)
    }
    allowed(&scopes.list) && !allowed(&scopes.create) && !allowed(&scopes.connect)
}

fn every_branch_list_only(tree: &ResourceTree) -> bool {
    match tree {
        ResourceTree::Leaf(leaf) => leaf
            .scopes
            .as_ref()
            .is_some_and(|s| is_list_only(&s.tunnels)),
        // A product of branches is list-only when each factor that has
        // scopes is; a union when every branch is.
        ResourceTree::Or(items) => items.iter().all(every_branch_list_only),
        ResourceTree::And(items) => {
            items.iter().all(|t| match t {
                ResourceTree::Leaf(leaf) => leaf
                    .scopes
                    .as_ref()
                    .is_none_or(|s| is_list_only(&s.tunnels)),
                other => every_branch_list_only(other),
            }) && items.iter().any(every_branch_list_only)
        }
    }
}

/// `rstream.token` on `/api/sse` and `/api/websocket`: an app token,
/// remaining lifetime at most 3600 s (+ leeway), `resources.tunnels` with
/// every branch list-only, permissions null or read-only only. Unusable is
/// 401, not allowed 403.
pub(crate) fn check_query_token(grant: &Grant, now: i64) -> Result<(), Rejection> {
    if grant.exp.saturating_sub(now) > MAX_APP_TOKEN_TTL + LEEWAY_SECS {
        return Err(Rejection::new(
            StatusCode::UNAUTHORIZED,
            "a query token must expire within 3600 s",
        ));
    }
    if let Some(permissions) = &grant.permissions {
        if permissions.iter().any(|p| p != READ_ONLY) {
            return Err(forbidden(
                "a query token carries only the tunnels.resources.read-only permission",
            ));
        }
    }
    let list_only = grant
        .resources
        .as_ref()
        .is_some_and(|r| every_branch_list_only(&r.tunnels));
    if !list_only {
        return Err(forbidden(
            "a query token must carry list-only resources (no create or connect)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Leaf, Resources, TunnelFilter};

    fn grant(resources: Option<Resources>, permissions: Option<Vec<&str>>) -> Grant {
        Grant {
            client_id: "a".into(),
            permissions: permissions.map(|p| p.into_iter().map(String::from).collect()),
            resources,
            exp: 1060,
        }
    }

    #[test]
    fn list_permission() {
        let apps = Apps {
            project_id: Some("p".into()),
            ..Apps::default()
        };
        let ok = |r: Resources| check_list_permission(&grant(Some(r), None), &apps).is_ok();
        assert!(ok(Resources::tunnels(TunnelScopes::new().list_any())));
        assert!(ok(Resources::tunnels(
            Leaf::new()
                .projects(["p"])
                .scopes(TunnelScopes::new().list_any())
        )));
        assert!(!ok(Resources::tunnels(
            Leaf::new()
                .projects(["q"])
                .scopes(TunnelScopes::new().list_any())
        )));
        assert!(!ok(Resources::tunnels(TunnelScopes::new().create_any())));
        // Filters: applied to what is answered.
        let filtered = Resources::tunnels(TunnelScopes::new().list(TunnelFilter::new().name("x")));
        assert!(ok(filtered.clone()));
        assert!(check_list_permission(&grant(Some(filtered), None), &apps).is_ok());
        assert!(check_list_permission(&grant(None, Some(vec!["other"])), &apps).is_err());
        assert!(check_list_permission(&grant(None, Some(vec![READ_ONLY])), &apps).is_ok());
    }

    #[test]
    fn query_tokens() {
        let list = Resources::tunnels(TunnelScopes::new().list_any());
        assert!(check_query_token(&grant(Some(list.clone()), None), 1000).is_ok());
        assert!(check_query_token(&grant(None, None), 1000).is_err());
        let both = Resources::tunnels(TunnelScopes::new().list_any().connect_any());
        assert!(check_query_token(&grant(Some(both), None), 1000).is_err());
        assert!(check_query_token(&grant(Some(list.clone()), Some(vec!["x"])), 1000).is_err());
        let mut long = grant(Some(list), None);
        long.exp = 1000 + 3600 + LEEWAY_SECS + 1;
        assert!(check_query_token(&long, 1000).is_err());
    }
}
