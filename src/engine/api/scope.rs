//! App-token scopes on the Engine API (TOKENS.md §4.3): the `list`
//! permission and scope, and the query-token rules of `/api/sse` and
//! `/api/websocket`.
//!
//! What is not enforced yet is refused, never allowed: a `list` scope with
//! `filters` or `select` gets 403 until per-object filtering lands.

use axum::http::StatusCode;

use super::Rejection;
use crate::auth::{ResourceTree, Scope, TunnelScopes};
use crate::engine::auth::{Action, Apps, Grant, Verdict, LEEWAY_SECS, MAX_APP_TOKEN_TTL};

use crate::engine::auth::READ_ONLY;

fn forbidden(message: &'static str) -> Rejection {
    Rejection::new(StatusCode::FORBIDDEN, message)
}

/// The Engine API needs `tunnels.resources.read-only` (or `permissions:
/// null`) and a `list` scope that applies to this engine.
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
        Verdict::Conditional => Err(forbidden(
            "this engine does not apply list filters or select yet; the token is refused rather than shown everything",
        )),
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
        assert!(!ok(Resources::tunnels(
            TunnelScopes::new().list(TunnelFilter::new().name("x"))
        )));
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
