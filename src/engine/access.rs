//! Evaluating `create` and `connect` scopes against tunnels (TOKENS.md §3
//! semantics, §4.3 per surface): the requested properties of a new tunnel
//! (omitted single-valued properties forced from the filter), and the full
//! record of a dialed one.

use std::collections::HashMap;

use crate::auth::{
    ConnectScope, CreateScope, Filter, ResourceTree, Scope, StringMatch, TunnelFilter,
};
use crate::engine::auth::{Apps, Grant};
use crate::engine::events::TunnelInfo;
use crate::proto::{self, ErrorCode, TunnelProperties};

/// Compiled-program bound of one filter regex (a token is attacker
/// input): 256 KiB.
const REGEX_SIZE_LIMIT: usize = 256 * 1024;

/// What a filter is compared with: a tunnel's properties plus what the
/// engine knows about it.
struct Record<'a> {
    props: &'a TunnelProperties,
    id: Option<&'a str>,
    client_id: Option<&'a str>,
    status: Option<&'a str>,
    creation_date: Option<String>,
    project_id: Option<&'a str>,
}

pub(crate) fn string_matches(m: &StringMatch, value: Option<&str>) -> bool {
    let Some(value) = value else {
        // A constraint on a missing property fails.
        return false;
    };
    match m {
        StringMatch::Value(v) | StringMatch::Exact(v) => v == value,
        StringMatch::OneOf(values) => values.iter().any(|v| v == value),
        // Unanchored search; a bad (or too large) regex never matches.
        StringMatch::Regex(re) => regex::RegexBuilder::new(re)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .is_ok_and(|re| re.is_match(value)),
    }
}

fn eq<T: PartialEq>(want: &Option<T>, have: Option<T>) -> bool {
    match want {
        None => true,
        Some(w) => have.as_ref() == Some(w),
    }
}

fn list_eq(want: &Option<Vec<String>>, have: &[String]) -> bool {
    want.as_ref().is_none_or(|w| w.as_slice() == have)
}

fn str_eq(want: &Option<StringMatch>, have: Option<&str>) -> bool {
    want.as_ref().is_none_or(|m| string_matches(m, have))
}

fn labels_match(filter: &TunnelFilter, labels: &HashMap<String, String>) -> bool {
    filter.labels.as_ref().is_none_or(|wanted| {
        wanted
            .0
            .iter()
            .all(|(k, m)| string_matches(m, labels.get(k).map(String::as_str)))
    })
}

/// Whether every constraint of `f` holds for `r` (keys ANDed).
fn record_matches(f: &TunnelFilter, r: &Record<'_>) -> bool {
    let p = r.props;
    str_eq(&f.client_id, r.client_id)
        && str_eq(&f.user_id, None)
        && str_eq(&f.workspace_id, None)
        && str_eq(&f.project_id, r.project_id)
        && str_eq(&f.cluster_id, None)
        && str_eq(&f.plan, None)
        && str_eq(&f.provider, None)
        && str_eq(&f.region, None)
        && eq(&f.status.as_deref(), r.status)
        && str_eq(&f.id, r.id)
        && eq(&f.creation_date, r.creation_date.clone())
        && str_eq(&f.name, p.name.as_deref())
        && eq(&f.r#type.as_deref(), p.r#type.as_deref())
        && eq(&f.publish, p.publish)
        && eq(&f.protocol.as_deref(), p.protocol.as_deref())
        && labels_match(f, &p.labels)
        && list_eq(&f.geo_ip, &p.geoip)
        && list_eq(&f.trusted_ips, &p.trusted_ips)
        && str_eq(&f.host, p.host.as_deref())
        && str_eq(&f.hostname, p.hostname.as_deref())
        && eq(&f.port, p.port)
        && eq(&f.tls_mode.as_deref(), p.tls_mode.as_deref())
        && list_eq(&f.tls_alpns, &p.tls_alpns)
        && str_eq(&f.tls_min_version, p.tls_min_version.as_deref())
        && list_eq(&f.tls_ciphers, &p.tls_ciphers)
        && eq(&f.mtls_auth, p.mtls_auth)
        && eq(&f.http_version.as_deref(), p.http_version.as_deref())
        && eq(&f.http_use_tls, p.http_use_tls)
        && eq(&f.upstream_tls, p.upstream_tls)
        && eq(&f.token_auth, p.token_auth)
        && eq(&f.rstream_auth, p.rstream_auth)
        && eq(&f.challenge_mode, p.challenge_mode)
}

fn filter_matches(filter: &Filter<TunnelFilter>, r: &Record<'_>) -> bool {
    match filter {
        Filter::And(items) => items.iter().all(|f| filter_matches(f, r)),
        Filter::Or(items) => items.iter().any(|f| filter_matches(f, r)),
        Filter::Match(f) => record_matches(f, r),
    }
}

fn force_one<T: Clone>(slot: &mut Option<T>, value: &Option<T>) {
    if slot.is_none() {
        slot.clone_from(value);
    }
}

fn force_str(slot: &mut Option<String>, value: &Option<StringMatch>) {
    if slot.is_none() {
        if let Some(v) = value.as_ref().and_then(StringMatch::single_value) {
            *slot = Some(v.to_owned());
        }
    }
}

fn force_list(slot: &mut Vec<String>, value: &Option<Vec<String>>) {
    if slot.is_empty() {
        if let Some(v) = value {
            slot.clone_from(v);
        }
    }
}

/// Fills the properties a create request omits from the single-valued
/// constraints of `filter` (its top level and ANDed parts; an OR names no
/// single value). Given properties are never changed: they must match.
fn force(filter: &Filter<TunnelFilter>, p: &mut TunnelProperties) {
    match filter {
        Filter::And(items) => items.iter().for_each(|f| force(f, p)),
        Filter::Or(_) => {}
        Filter::Match(f) => {
            force_str(&mut p.name, &f.name);
            force_one(&mut p.r#type, &f.r#type);
            force_one(&mut p.publish, &f.publish);
            force_one(&mut p.protocol, &f.protocol);
            if let Some(labels) = &f.labels {
                for (k, m) in &labels.0 {
                    if let (false, Some(v)) = (p.labels.contains_key(k), m.single_value()) {
                        p.labels.insert(k.clone(), v.to_owned());
                    }
                }
            }
            force_list(&mut p.geoip, &f.geo_ip);
            force_list(&mut p.trusted_ips, &f.trusted_ips);
            force_str(&mut p.host, &f.host);
            force_one(&mut p.port, &f.port);
            force_one(&mut p.tls_mode, &f.tls_mode);
            force_list(&mut p.tls_alpns, &f.tls_alpns);
            force_str(&mut p.tls_min_version, &f.tls_min_version);
            force_list(&mut p.tls_ciphers, &f.tls_ciphers);
            force_one(&mut p.mtls_auth, &f.mtls_auth);
            force_one(&mut p.http_version, &f.http_version);
            force_one(&mut p.http_use_tls, &f.http_use_tls);
            force_one(&mut p.upstream_tls, &f.upstream_tls);
            force_one(&mut p.token_auth, &f.token_auth);
            force_one(&mut p.rstream_auth, &f.rstream_auth);
            force_one(&mut p.challenge_mode, &f.challenge_mode);
        }
    }
}

fn targets_engine(
    apps: &Apps,
    projects: Option<&Vec<String>>,
    workspaces: Option<&Vec<String>>,
) -> bool {
    match (projects, workspaces) {
        (None, None) => true,
        (Some(ids), _) => apps
            .project_id
            .as_ref()
            .is_some_and(|p| ids.iter().any(|id| id == p)),
        (None, Some(_)) => false,
    }
}

/// The properties a create is allowed with under `tree` (forced where
/// omitted), or `None`.
fn create_tree(
    apps: &Apps,
    tree: &ResourceTree,
    props: &TunnelProperties,
) -> Option<TunnelProperties> {
    match tree {
        ResourceTree::Leaf(leaf) => {
            if !targets_engine(apps, leaf.projects.as_ref(), leaf.workspaces.as_ref()) {
                return None;
            }
            let Some(scopes) = &leaf.scopes else {
                return Some(props.clone());
            };
            match &scopes.tunnels.create {
                None | Some(Scope::Allowed(false)) => None,
                Some(Scope::Allowed(true)) | Some(Scope::Rules(CreateScope { filters: None })) => {
                    Some(props.clone())
                }
                Some(Scope::Rules(CreateScope {
                    filters: Some(filter),
                })) => {
                    let mut forced = props.clone();
                    force(filter, &mut forced);
                    let record = Record {
                        props: &forced,
                        id: None,
                        client_id: None,
                        status: None,
                        creation_date: None,
                        project_id: apps.project_id.as_deref(),
                    };
                    filter_matches(filter, &record).then_some(forced)
                }
            }
        }
        ResourceTree::Or(items) => items.iter().find_map(|t| create_tree(apps, t, props)),
        ResourceTree::And(items) => items
            .iter()
            .try_fold(props.clone(), |p, t| create_tree(apps, t, &p)),
    }
}

fn connect_tree(apps: &Apps, tree: &ResourceTree, record: &Record<'_>, path: Option<&str>) -> bool {
    match tree {
        ResourceTree::Leaf(leaf) => {
            if !targets_engine(apps, leaf.projects.as_ref(), leaf.workspaces.as_ref()) {
                return false;
            }
            let Some(scopes) = &leaf.scopes else {
                return true;
            };
            match &scopes.tunnels.connect {
                None | Some(Scope::Allowed(false)) => false,
                Some(Scope::Allowed(true)) => true,
                Some(Scope::Rules(ConnectScope { filters, params })) => {
                    // A path rule on a private (non-HTTP) dial: no path to
                    // check, so no.
                    let params_ok = match params {
                        None => true,
                        Some(params) => path.is_some_and(|path| {
                            params.eval_with(&|p: &crate::auth::ParamsFilter| {
                                p.path
                                    .as_ref()
                                    .is_none_or(|m| string_matches(m, Some(path)))
                            })
                        }),
                    };
                    params_ok && filters.as_ref().is_none_or(|f| filter_matches(f, record))
                }
            }
        }
        ResourceTree::Or(items) => items.iter().any(|t| connect_tree(apps, t, record, path)),
        ResourceTree::And(items) => items.iter().all(|t| connect_tree(apps, t, record, path)),
    }
}

fn refused(message: impl Into<String>) -> proto::Error {
    proto::Error::new(ErrorCode::Unauthorized, message)
}

/// Checks a create request against `grant`'s create scope; on success the
/// request's omitted single-valued properties are forced from it.
pub(crate) fn check_create(
    apps: &Apps,
    grant: &Grant,
    requested: &mut Option<TunnelProperties>,
) -> Result<(), proto::Error> {
    let Some(resources) = &grant.resources else {
        return Ok(());
    };
    let props = requested.take().unwrap_or_default();
    match create_tree(apps, &resources.tunnels, &props) {
        Some(forced) => {
            *requested = Some(forced);
            Ok(())
        }
        None => {
            *requested = Some(props);
            Err(refused(
                "the token's create scope does not allow a tunnel with these properties",
            ))
        }
    }
}

/// Checks a dial of `target` against `grant`'s connect scope (the
/// target's full record: id, client_id, status, properties, labels).
pub(crate) fn check_connect(
    apps: &Apps,
    grant: &Grant,
    target: &TunnelInfo,
) -> Result<(), proto::Error> {
    check_connect_path(apps, grant, target, None)
}

/// [`check_connect`] for an HTTP request at `path` (`params.path` rules).
pub(crate) fn check_connect_path(
    apps: &Apps,
    grant: &Grant,
    target: &TunnelInfo,
    path: Option<&str>,
) -> Result<(), proto::Error> {
    let Some(resources) = &grant.resources else {
        return Ok(());
    };
    let record = Record {
        props: &target.properties,
        id: Some(&target.id),
        client_id: Some(&target.client_id),
        status: Some("online"),
        creation_date: Some(crate::engine::dates::rfc3339(target.created_at)),
        project_id: apps.project_id.as_deref(),
    };
    if connect_tree(apps, &resources.tunnels, &record, path) {
        Ok(())
    } else {
        Err(refused(
            "the token's connect scope does not allow dialing this tunnel",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Leaf, Resources, TunnelScopes};

    fn grant(scopes: TunnelScopes) -> Grant {
        Grant {
            client_id: "a".into(),
            permissions: None,
            resources: Some(Resources::tunnels(scopes)),
            exp: 0,
        }
    }

    fn props(
        name: Option<&str>,
        protocol: Option<&str>,
        labels: &[(&str, &str)],
    ) -> TunnelProperties {
        TunnelProperties {
            name: name.map(Into::into),
            protocol: protocol.map(Into::into),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn create_filters_force_and_refuse() {
        let apps = Apps::default();
        let g = grant(
            TunnelScopes::new().create(TunnelFilter::new().protocol("http").label("env", "dev")),
        );
        // Omitted: forced.
        let mut req = None;
        check_create(&apps, &g, &mut req).unwrap();
        let forced = req.unwrap();
        assert_eq!(forced.protocol.as_deref(), Some("http"));
        assert_eq!(forced.labels.get("env").map(String::as_str), Some("dev"));
        // Given and matching / not matching.
        let mut ok = Some(props(
            Some("x"),
            Some("http"),
            &[("env", "dev"), ("team", "a")],
        ));
        assert!(check_create(&apps, &g, &mut ok).is_ok());
        for bad in [
            props(None, Some("tls"), &[("env", "dev")]),
            props(None, Some("http"), &[("env", "prod")]),
        ] {
            assert!(check_create(&apps, &g, &mut Some(bad)).is_err());
        }
        // oneof/regex are not forced: omitted means refused.
        let g = grant(
            TunnelScopes::new().create(TunnelFilter::new().name(StringMatch::regex("^svc-"))),
        );
        assert!(check_create(&apps, &g, &mut None).is_err());
        assert!(check_create(&apps, &g, &mut Some(props(Some("svc-a"), None, &[]))).is_ok());
        assert!(check_create(&apps, &g, &mut Some(props(Some("web"), None, &[]))).is_err());
        // A bad regex never matches.
        let g =
            grant(TunnelScopes::new().create(TunnelFilter::new().name(StringMatch::regex("("))));
        assert!(check_create(&apps, &g, &mut Some(props(Some("("), None, &[]))).is_err());
    }

    #[test]
    fn connect_filters_and_targets() {
        let apps = Apps {
            project_id: Some("p".into()),
            ..Apps::default()
        };
        let info = TunnelInfo {
            id: "t1".into(),
            client_id: "c".into(),
            properties: std::sync::Arc::new(props(Some("api"), None, &[("env", "dev")])),
            created_at: std::time::SystemTime::UNIX_EPOCH,
        };
        let ok = |scopes: TunnelScopes| check_connect(&apps, &grant(scopes), &info).is_ok();
        assert!(ok(TunnelScopes::new().connect(TunnelFilter::new().id("t1"))));
        assert!(!ok(
            TunnelScopes::new().connect(TunnelFilter::new().id("t2"))
        ));
        assert!(ok(TunnelScopes::new().connect(
            TunnelFilter::new().status("online").label("env", "dev")
        )));
        assert!(!ok(
            TunnelScopes::new().connect(TunnelFilter::new().label("missing", "x"))
        ));
        assert!(!ok(TunnelScopes::new().connect_any().path("/ping")));
        assert!(!ok(TunnelScopes::new().create_any()));
        let other_project = Grant {
            resources: Some(Resources::tunnels(
                Leaf::new()
                    .projects(["q"])
                    .scopes(TunnelScopes::new().connect_any()),
            )),
            ..grant(TunnelScopes::new().connect_any())
        };
        assert!(check_connect(&apps, &other_project, &info).is_err());
        let any = Filter::any_of([TunnelFilter::new().id("x"), TunnelFilter::new().name("api")]);
        assert!(ok(TunnelScopes::new().connect(any)));
    }
}
