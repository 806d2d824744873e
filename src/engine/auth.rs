//! App tokens at the local engine: registered applications and the checks
//! TOKENS.md §4.1 lists (signature, algorithm, times, `metadata.engine`).
//!
//! Static tokens and client certificates are checked where they were
//! before (`control::check_token`, the API's `authorize`); a presented
//! token that is none of the static ones and looks like a JWT comes here
//! when applications are registered.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::auth::{AppPublicKey, ResourceTree, Resources, Scope, Token};

/// The permission that grants listing (Engine API).
pub(crate) const READ_ONLY: &str = "tunnels.resources.read-only";
/// The permission that grants creating tunnels (control channels).
const CREATE_DELETE: &str = "tunnels.tunnels.create-delete";
/// The permission that grants dialing (stream requests).
const STREAMS: &str = "tunnels.streams.create-delete";

/// What a token is used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Open a control channel and create tunnels.
    Create,
    /// Dial a tunnel.
    Connect,
    /// List and watch (Engine API).
    List,
}

/// What an action's scope says under a resource tree, for this engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Not allowed.
    Deny,
    /// Allowed without conditions.
    Allow,
    /// Allowed under filters, params or a projection, which this engine
    /// does not evaluate yet: callers refuse it rather than allow all.
    Conditional,
}

/// Clock skew allowed on `exp`, `nbf` and `iat`, in seconds. Small on
/// purpose: app tokens live 60 s by default.
pub(crate) const LEEWAY_SECS: i64 = 60;
/// Longest lifetime (`exp - iat`) of an app token.
pub(crate) const MAX_APP_TOKEN_TTL: i64 = 3600;

/// The applications the engine trusts, and what it is (for targets and
/// `metadata.engine`).
#[derive(Clone, Debug, Default)]
pub(crate) struct Apps {
    pub(crate) keys: HashMap<String, AppPublicKey>,
    /// The engine's project id: leaves targeting projects must name it.
    pub(crate) project_id: Option<String>,
    /// The engine's address, for `metadata.engine`.
    pub(crate) listen: Option<SocketAddr>,
}

/// What a verified app token grants (its claims, now trusted).
#[derive(Clone, Debug)]
pub(crate) struct Grant {
    /// The application's client id.
    #[allow(dead_code)] // Read by logs and scope checks as they land.
    pub(crate) client_id: String,
    /// `permissions` (`None`: the credential's, i.e. all).
    pub(crate) permissions: Option<Vec<String>>,
    /// `resources` (`None`: permissions only).
    pub(crate) resources: Option<Resources>,
    /// `exp`, seconds since the Unix epoch.
    pub(crate) exp: i64,
}

/// Why a token was refused: a message for the `UNAUTHORIZED` answer (never
/// the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal(pub(crate) String);

fn refuse(message: impl Into<String>) -> Refusal {
    Refusal(message.into())
}

impl Apps {
    /// Registers `client_id` with its public key.
    pub(crate) fn insert(&mut self, client_id: String, key: AppPublicKey) {
        self.keys.insert(client_id, key);
    }

    /// Whether any application is registered.
    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Verifies an app token at `now` (seconds since the Unix epoch).
    pub(crate) fn verify(&self, token: &str, now: i64) -> Result<Arc<Grant>, Refusal> {
        let decoded = Token::decode(token).map_err(|e| refuse(format!("invalid token: {e}")))?;
        let claims = decoded.claims();
        if decoded.header().alg != "ES512" {
            return Err(refuse(format!(
                "app tokens are signed with ES512, not {:?}",
                decoded.header().alg
            )));
        }
        if claims.kind.as_deref() != Some("app") {
            return Err(refuse(
                "only app tokens (type \"app\") and the configured static tokens are accepted",
            ));
        }
        let Some(client_id) = claims.client_id.as_deref() else {
            return Err(refuse("app token without clientId"));
        };
        let Some(key) = self.keys.get(client_id) else {
            return Err(refuse(format!(
                "app token for an unknown application {client_id:?}"
            )));
        };
        if !key.verify_signature(&decoded) {
            return Err(refuse("app token signature does not verify"));
        }
        let (Some(exp), Some(iat)) = (claims.exp, claims.iat) else {
            return Err(refuse("app token without exp or iat"));
        };
        if exp.saturating_add(LEEWAY_SECS) <= now {
            return Err(refuse("app token has expired"));
        }
        if iat > now.saturating_add(LEEWAY_SECS)
            || claims
                .nbf
                .is_some_and(|nbf| nbf > now.saturating_add(LEEWAY_SECS))
        {
            return Err(refuse("app token is not valid yet (iat/nbf in the future)"));
        }
        if exp.saturating_sub(iat) > MAX_APP_TOKEN_TTL || exp < iat {
            return Err(refuse("app token lives longer than 3600 s"));
        }
        if let Some(engine) = claims.metadata.as_ref().and_then(|m| m.engine.as_deref()) {
            if !self.is_this_engine(engine) {
                return Err(refuse(format!(
                    "app token was minted for engine {engine:?}, not this one"
                )));
            }
        }
        Ok(Arc::new(Grant {
            client_id: client_id.to_owned(),
            permissions: claims.permissions.clone(),
            resources: claims.resources.clone(),
            exp,
        }))
    }

    /// The verdict of `tree` on `action` here: a leaf applies when it has
    /// no target or names this engine's project (the local engine belongs
    /// to no workspace); AND needs all, OR any.
    pub(crate) fn verdict(&self, tree: &ResourceTree, action: Action) -> Verdict {
        match tree {
            ResourceTree::Leaf(leaf) => {
                let targeted = match (&leaf.projects, &leaf.workspaces) {
                    (None, None) => true,
                    (Some(ids), _) => self
                        .project_id
                        .as_ref()
                        .is_some_and(|p| ids.iter().any(|id| id == p)),
                    (None, Some(_)) => false,
                };
                if !targeted {
                    return Verdict::Deny;
                }
                let Some(scopes) = &leaf.scopes else {
                    return Verdict::Allow;
                };
                let t = &scopes.tunnels;
                let (scope_allowed, unconditional) = match action {
                    Action::Create => (
                        t.create.as_ref().filter(|s| s.is_allowed()).is_some(),
                        t.create.as_ref().is_some_and(|s| {
                            matches!(s, Scope::Allowed(true))
                                || s.rules().is_some_and(|r| r.filters.is_none())
                        }),
                    ),
                    Action::Connect => (
                        t.connect.as_ref().filter(|s| s.is_allowed()).is_some(),
                        t.connect.as_ref().is_some_and(|s| {
                            matches!(s, Scope::Allowed(true))
                                || s.rules()
                                    .is_some_and(|r| r.filters.is_none() && r.params.is_none())
                        }),
                    ),
                    Action::List => (
                        t.list.as_ref().filter(|s| s.is_allowed()).is_some(),
                        t.list.as_ref().is_some_and(|s| {
                            matches!(s, Scope::Allowed(true))
                                || s.rules()
                                    .is_some_and(|r| r.filters.is_none() && r.select.is_none())
                        }),
                    ),
                };
                match (scope_allowed, unconditional) {
                    (false, _) => Verdict::Deny,
                    (true, true) => Verdict::Allow,
                    (true, false) => Verdict::Conditional,
                }
            }
            ResourceTree::Or(items) => {
                items
                    .iter()
                    .map(|t| self.verdict(t, action))
                    .fold(Verdict::Deny, |acc, v| match (acc, v) {
                        (Verdict::Allow, _) | (_, Verdict::Allow) => Verdict::Allow,
                        (Verdict::Conditional, _) | (_, Verdict::Conditional) => {
                            Verdict::Conditional
                        }
                        _ => Verdict::Deny,
                    })
            }
            ResourceTree::And(items) => {
                items
                    .iter()
                    .map(|t| self.verdict(t, action))
                    .fold(Verdict::Allow, |acc, v| match (acc, v) {
                        (Verdict::Deny, _) | (_, Verdict::Deny) => Verdict::Deny,
                        (Verdict::Conditional, _) | (_, Verdict::Conditional) => {
                            Verdict::Conditional
                        }
                        _ => Verdict::Allow,
                    })
            }
        }
    }

    /// Whether `grant` may open a control channel ([`Action::Create`]) or
    /// dial ([`Action::Connect`]) at all: the permission, and a scope that
    /// allows the action on this engine (its filters are then checked per
    /// tunnel by `engine::access`).
    pub(crate) fn check_agent(&self, grant: &Grant, action: Action) -> Result<(), Refusal> {
        let (permission, what) = match action {
            Action::Create => (CREATE_DELETE, "create tunnels"),
            Action::Connect => (STREAMS, "dial tunnels"),
            Action::List => (READ_ONLY, "list tunnels"),
        };
        if let Some(permissions) = &grant.permissions {
            if !permissions.iter().any(|p| p == permission) {
                return Err(refuse(format!(
                    "token lacks the {permission} permission needed to {what}"
                )));
            }
        }
        let Some(resources) = &grant.resources else {
            return Ok(());
        };
        match self.verdict(&resources.tunnels, action) {
            Verdict::Allow => Ok(()),
            Verdict::Deny => Err(refuse(format!(
                "token resources do not allow it to {what} on this engine"
            ))),
            // Create and connect filters are evaluated per tunnel
            // (`engine::access`); list filters are the API's to refuse.
            Verdict::Conditional if action != Action::List => Ok(()),
            Verdict::Conditional => Err(refuse(format!(
                "token resources allow it to {what} only under filters, which the local engine does not evaluate yet; refused rather than allowed"
            ))),
        }
    }

    /// Whether `host[:port]` names this engine: the port (when given) is
    /// the engine's, the host its listen address, a loopback name, or a
    /// wildcard listen address's any host.
    fn is_this_engine(&self, engine: &str) -> bool {
        let Some(listen) = self.listen else {
            return true;
        };
        let engine = engine.trim().to_ascii_lowercase();
        let (host, port) = match engine.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(':') && p.bytes().all(|b| b.is_ascii_digit()) => {
                (h.to_owned(), Some(p.parse::<u16>().ok()))
            }
            _ => (engine.clone(), None),
        };
        match port {
            Some(Some(p)) if p == listen.port() => {}
            Some(_) => return false,
            None => {}
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        listen.ip().is_unspecified()
            || host == listen.ip().to_string()
            || (listen.ip().is_loopback() && matches!(host, "localhost" | "127.0.0.1" | "::1"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTORS: &str = include_str!("../../tests/support/token-vectors.json");

    fn vectors() -> serde_json::Value {
        serde_json::from_str(VECTORS).unwrap()
    }

    fn apps(listen: &str) -> Apps {
        let v = vectors();
        let mut apps = Apps {
            listen: Some(listen.parse().unwrap()),
            ..Apps::default()
        };
        let pem = v["app_token"]["public_key_pem"].as_str().unwrap();
        apps.insert("app_test".into(), AppPublicKey::from_pem(pem).unwrap());
        apps
    }

    #[test]
    fn the_vector_token_is_accepted_at_its_time() {
        let v = vectors();
        let token = v["app_token"]["token"].as_str().unwrap();
        let apps = apps("127.0.0.1:7443");
        let grant = apps.verify(token, 1_767_225_600).unwrap();
        assert_eq!(grant.client_id, "app_test");
        assert_eq!(grant.exp, 1_767_225_660);
        assert!(grant.permissions.is_none());
        // Expired once past exp + leeway.
        let err = apps.verify(token, 1_767_225_660 + LEEWAY_SECS).unwrap_err();
        assert!(err.0.contains("expired"), "{err:?}");
        // Minted for another engine.
        let err = self::apps("127.0.0.1:7444")
            .verify(token, 1_767_225_600)
            .unwrap_err();
        assert!(err.0.contains("engine"), "{err:?}");
    }

    #[test]
    fn forged_tokens_are_refused() {
        let v = vectors();
        let apps = apps("127.0.0.1:7443");
        let now = 1_767_225_600;
        let tampered = v["negative"]["tampered_claims_token"].as_str().unwrap();
        assert!(apps
            .verify(tampered, now)
            .unwrap_err()
            .0
            .contains("signature"));
        let none = v["negative"]["alg_none_token"].as_str().unwrap();
        assert!(apps.verify(none, now).unwrap_err().0.contains("ES512"));
        // Same claims under an unknown application's key.
        let other = crate::auth::AppCredentials::generate("app_test").unwrap();
        let forged = other
            .mint_at(
                &crate::auth::TokenRequest::new().engine("127.0.0.1:7443"),
                now,
            )
            .unwrap();
        assert!(apps
            .verify(forged.expose(), now)
            .unwrap_err()
            .0
            .contains("signature"));
        let unknown = crate::auth::AppCredentials::generate("nobody").unwrap();
        let token = unknown
            .mint_at(&crate::auth::TokenRequest::new(), now)
            .unwrap();
        assert!(apps
            .verify(token.expose(), now)
            .unwrap_err()
            .0
            .contains("unknown"));
        for junk in ["", "a.b.c", "x"] {
            assert!(apps.verify(junk, now).is_err());
        }
    }

    #[test]
    fn engine_names() {
        let apps = apps("127.0.0.1:7443");
        for ok in [
            "127.0.0.1:7443",
            "LOCALHOST:7443",
            "localhost",
            "[::1]:7443",
        ] {
            assert!(apps.is_this_engine(ok), "{ok}");
        }
        for no in ["127.0.0.1:1", "example.com:7443", "127.0.0.1:99999"] {
            assert!(!apps.is_this_engine(no), "{no}");
        }
    }
}
