//! The `resources` claim: which tunnels a token may create, connect to and
//! list (TOKENS.md §3).
//!
//! Every type serialises to exactly the JSON the JavaScript SDK puts in a
//! token (same keys, same order), and deserialises strictly: unknown keys,
//! empty target lists, a leaf naming both projects and workspaces, a string
//! matcher with two operators are all refused. [`Resources::from_json`]
//! also bounds the document's size and nesting, because the engine parses
//! this from tokens that arrive over the network.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

use crate::error::{code, Error, ErrorKind, Result};

/// Largest `resources` document [`Resources::from_json`] parses: 32 KiB.
pub const MAX_RESOURCES_BYTES: usize = 32 * 1024;
/// Deepest nesting of JSON objects and arrays [`Resources::from_json`]
/// accepts (AND/OR trees and filters included): 24.
pub const MAX_RESOURCES_DEPTH: usize = 24;

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Config, code::INVALID_RESOURCES, message.into())
}

/// The `resources` claim of a token: `{"tunnels": R}`.
///
/// ```
/// use rstream::auth::{Resources, TunnelFilter, TunnelScopes};
///
/// let resources = Resources::tunnels(
///     TunnelScopes::new()
///         .create(TunnelFilter::new().protocol("http").label("env", "dev"))
///         .into_leaf()
///         .projects(["my-project"]),
/// );
/// assert_eq!(
///     serde_json::to_string(&resources).unwrap(),
///     r#"{"tunnels":{"projects":["my-project"],"scopes":{"tunnels":{"create":{"filters":{"protocol":"http","labels":{"env":"dev"}}}}}}}"#
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// The tunnel rules.
    pub tunnels: ResourceTree,
}

impl Resources {
    /// Resources whose tunnel rules are `tree` (a [`Leaf`], or an AND/OR of
    /// them).
    pub fn tunnels(tree: impl Into<ResourceTree>) -> Self {
        Resources {
            tunnels: tree.into(),
        }
    }

    /// Parses and validates a `resources` document: strict keys, at most
    /// [`MAX_RESOURCES_BYTES`] bytes and [`MAX_RESOURCES_DEPTH`] levels.
    /// Fails with `ERR_RSTREAM_INVALID_RESOURCES`.
    pub fn from_json(json: &str) -> Result<Self> {
        if json.len() > MAX_RESOURCES_BYTES {
            return Err(invalid(format!(
                "resources document is larger than {MAX_RESOURCES_BYTES} bytes"
            )));
        }
        // serde_json itself stops at 128 levels; the tighter bound is
        // checked on the text first, so the typed walk below (which keeps
        // key order and sees duplicate keys, unlike a `Value`) never
        // recurses deeper.
        if json_depth(json.as_bytes()) > MAX_RESOURCES_DEPTH {
            return Err(invalid(format!(
                "resources nest deeper than {MAX_RESOURCES_DEPTH} levels"
            )));
        }
        let resources: Resources =
            serde_json::from_str(json).map_err(|e| invalid(format!("invalid resources: {e}")))?;
        resources.validate()?;
        Ok(resources)
    }

    /// Checks what serde's derive cannot: non-empty lists, one target per
    /// leaf, at least one key in leaves and scopes.
    pub(crate) fn validate(&self) -> Result<()> {
        self.tunnels.validate()
    }

    /// Whether every expanded branch (OR = union of branches, AND = their
    /// product) holds a `scopes.tunnels`, as the JS SDK requires before
    /// minting ("Tunnel resources must include explicit scopes.").
    pub fn has_explicit_scopes(&self) -> bool {
        self.tunnels.has_scopes()
    }
}

/// The deepest nesting of `{`/`[` outside strings (the text need not be
/// valid JSON: the parser judges that).
pub(crate) fn json_depth(text: &[u8]) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in text {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// `R := Leaf | {"AND":[R…]} | {"OR":[R…]}`.
#[derive(Clone, Debug, PartialEq)]
pub enum ResourceTree {
    /// Every branch must allow the action (`{"AND":[…]}`, at least one).
    And(Vec<ResourceTree>),
    /// At least one branch must allow the action (`{"OR":[…]}`, at least
    /// one).
    Or(Vec<ResourceTree>),
    /// Targets and scopes (boxed: a leaf with filters is large).
    Leaf(Box<Leaf>),
}

/// `{"AND": [...]}` exactly (untagged struct variants would ignore extra
/// keys, so the strict shapes are their own structs).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AndRepr<T> {
    #[serde(rename = "AND")]
    and: Vec<T>,
}

/// `{"OR": [...]}` exactly.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrRepr<T> {
    #[serde(rename = "OR")]
    or: Vec<T>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TreeRepr<T, L> {
    And(AndRepr<T>),
    Or(OrRepr<T>),
    Leaf(L),
}

impl Serialize for ResourceTree {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            ResourceTree::And(items) => one_entry(s, "AND", items),
            ResourceTree::Or(items) => one_entry(s, "OR", items),
            ResourceTree::Leaf(leaf) => leaf.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for ResourceTree {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(match TreeRepr::<ResourceTree, Leaf>::deserialize(d)? {
            TreeRepr::And(r) => ResourceTree::And(r.and),
            TreeRepr::Or(r) => ResourceTree::Or(r.or),
            TreeRepr::Leaf(l) => ResourceTree::Leaf(Box::new(l)),
        })
    }
}

impl ResourceTree {
    /// All of `trees` (`{"AND":[…]}`).
    pub fn all_of(trees: impl IntoIterator<Item = impl Into<ResourceTree>>) -> Self {
        ResourceTree::And(trees.into_iter().map(Into::into).collect())
    }

    /// Any of `trees` (`{"OR":[…]}`).
    pub fn any_of(trees: impl IntoIterator<Item = impl Into<ResourceTree>>) -> Self {
        ResourceTree::Or(trees.into_iter().map(Into::into).collect())
    }

    fn validate(&self) -> Result<()> {
        match self {
            ResourceTree::And(items) | ResourceTree::Or(items) => {
                if items.is_empty() {
                    return Err(invalid("an AND/OR of resources needs at least one branch"));
                }
                items.iter().try_for_each(ResourceTree::validate)
            }
            ResourceTree::Leaf(leaf) => leaf.validate(),
        }
    }

    fn has_scopes(&self) -> bool {
        match self {
            ResourceTree::Leaf(leaf) => leaf.scopes.is_some(),
            ResourceTree::Or(or) => or.iter().all(ResourceTree::has_scopes),
            ResourceTree::And(and) => and.iter().any(ResourceTree::has_scopes),
        }
    }

    /// Gives every leaf that has scopes and no target `projects: [project]`,
    /// unless it sits in an AND whose other branches name a target (the JS
    /// SDK's project scoping).
    pub(crate) fn scope_to_project(&mut self, project: &str) {
        match self {
            ResourceTree::Leaf(leaf) => {
                if leaf.scopes.is_some() && leaf.workspaces.is_none() && leaf.projects.is_none() {
                    leaf.projects = Some(vec![project.to_owned()]);
                }
            }
            ResourceTree::Or(or) => or.iter_mut().for_each(|t| t.scope_to_project(project)),
            ResourceTree::And(and) => {
                if !and.iter().any(ResourceTree::has_target) {
                    and.iter_mut().for_each(|t| t.scope_to_project(project));
                }
            }
        }
    }

    fn has_target(&self) -> bool {
        match self {
            ResourceTree::Leaf(leaf) => leaf.workspaces.is_some() || leaf.projects.is_some(),
            ResourceTree::And(items) | ResourceTree::Or(items) => {
                items.iter().any(ResourceTree::has_target)
            }
        }
    }
}

impl From<Leaf> for ResourceTree {
    fn from(leaf: Leaf) -> Self {
        ResourceTree::Leaf(Box::new(leaf))
    }
}

impl From<TunnelScopes> for ResourceTree {
    fn from(scopes: TunnelScopes) -> Self {
        ResourceTree::Leaf(Box::new(scopes.into_leaf()))
    }
}

/// `{workspaces?, projects?, scopes?}`: a target (not both kinds) and what
/// may be done there.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Leaf {
    /// The workspaces this leaf applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspaces: Option<Vec<String>>,
    /// The projects this leaf applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projects: Option<Vec<String>>,
    /// What may be done; absent = any action on the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Scopes>,
}

impl Leaf {
    /// An empty leaf (add a target or scopes before use).
    pub fn new() -> Self {
        Leaf::default()
    }

    /// Limits the leaf to these projects.
    pub fn projects(mut self, ids: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.projects = Some(ids.into_iter().map(Into::into).collect());
        self
    }

    /// Limits the leaf to these workspaces.
    pub fn workspaces(mut self, ids: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.workspaces = Some(ids.into_iter().map(Into::into).collect());
        self
    }

    /// The tunnel scopes of the leaf.
    pub fn scopes(mut self, scopes: TunnelScopes) -> Self {
        self.scopes = Some(Scopes { tunnels: scopes });
        self
    }

    fn validate(&self) -> Result<()> {
        if self.workspaces.is_some() && self.projects.is_some() {
            return Err(invalid(
                "a resources leaf names either projects or workspaces, not both",
            ));
        }
        if self.workspaces.is_none() && self.projects.is_none() && self.scopes.is_none() {
            return Err(invalid(
                "a resources leaf needs projects, workspaces or scopes",
            ));
        }
        for ids in [&self.workspaces, &self.projects].into_iter().flatten() {
            if ids.is_empty() || ids.iter().any(|id| id.is_empty()) {
                return Err(invalid(
                    "project/workspace lists hold at least one non-empty id",
                ));
            }
        }
        if let Some(scopes) = &self.scopes {
            scopes.tunnels.validate()?;
        }
        Ok(())
    }
}

/// `{"tunnels": T}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scopes {
    /// The tunnel actions.
    pub tunnels: TunnelScopes,
}

/// `T := {create?, connect?, list?}`: each absent (not allowed), a bool,
/// or rules.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelScopes {
    /// Creating tunnels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create: Option<Scope<CreateScope>>,
    /// Dialing tunnels (and requests on published `token_auth` tunnels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<Scope<ConnectScope>>,
    /// Listing and watching tunnels and clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<Scope<ListScope>>,
}

impl TunnelScopes {
    /// No action yet.
    pub fn new() -> Self {
        TunnelScopes::default()
    }

    /// Allows creating tunnels whose properties match `filter` (forced
    /// where the request omits a single-valued one).
    pub fn create(mut self, filter: impl Into<Filter<TunnelFilter>>) -> Self {
        self.create = Some(Scope::Rules(CreateScope {
            filters: Some(filter.into()),
        }));
        self
    }

    /// Allows creating any tunnel (`"create": true`).
    pub fn create_any(mut self) -> Self {
        self.create = Some(Scope::Allowed(true));
        self
    }

    /// Allows dialing tunnels whose record matches `filter`; narrow to HTTP
    /// paths with [`path`](Self::path).
    pub fn connect(mut self, filter: impl Into<Filter<TunnelFilter>>) -> Self {
        let params = match self.connect.take() {
            Some(Scope::Rules(rules)) => rules.params,
            _ => None,
        };
        self.connect = Some(Scope::Rules(ConnectScope {
            filters: Some(filter.into()),
            params,
        }));
        self
    }

    /// Allows dialing any tunnel (`"connect": true`).
    pub fn connect_any(mut self) -> Self {
        self.connect = Some(Scope::Allowed(true));
        self
    }

    /// Limits `connect` to HTTP requests whose path (without the query)
    /// matches `path`.
    pub fn path(mut self, path: impl Into<StringMatch>) -> Self {
        let filters = match self.connect.take() {
            Some(Scope::Rules(rules)) => rules.filters,
            _ => None,
        };
        self.connect = Some(Scope::Rules(ConnectScope {
            filters,
            params: Some(Filter::Match(ParamsFilter {
                path: Some(path.into()),
            })),
        }));
        self
    }

    /// Allows listing tunnels and clients whose record matches `filter`.
    pub fn list(mut self, filter: impl Into<Filter<TunnelFilter>>) -> Self {
        let select = match self.list.take() {
            Some(Scope::Rules(rules)) => rules.select,
            _ => None,
        };
        self.list = Some(Scope::Rules(ListScope {
            filters: Some(filter.into()),
            select,
        }));
        self
    }

    /// Allows listing everything (`"list": true`).
    pub fn list_any(mut self) -> Self {
        self.list = Some(Scope::Allowed(true));
        self
    }

    /// Keeps only these fields of each listed object (`select`).
    pub fn select(mut self, fields: impl IntoIterator<Item = impl Into<String>>) -> Self {
        let filters = match self.list.take() {
            Some(Scope::Rules(rules)) => rules.filters,
            _ => None,
        };
        self.list = Some(Scope::Rules(ListScope {
            filters,
            select: Some(Select(
                fields.into_iter().map(|f| (f.into(), true)).collect(),
            )),
        }));
        self
    }

    /// A leaf holding these scopes and no target.
    pub fn into_leaf(self) -> Leaf {
        Leaf::new().scopes(self)
    }

    fn validate(&self) -> Result<()> {
        if self.create.is_none() && self.connect.is_none() && self.list.is_none() {
            return Err(invalid("scopes.tunnels needs create, connect or list"));
        }
        if let Some(Scope::Rules(c)) = &self.create {
            if let Some(f) = &c.filters {
                f.validate(&|m: &TunnelFilter| m.validate(true))?;
            }
        }
        if let Some(Scope::Rules(c)) = &self.connect {
            if let Some(f) = &c.filters {
                f.validate(&|m: &TunnelFilter| m.validate(false))?;
            }
            if let Some(p) = &c.params {
                p.validate(&|m: &ParamsFilter| {
                    m.path.as_ref().map_or(Ok(()), StringMatch::validate)
                })?;
            }
        }
        if let Some(Scope::Rules(l)) = &self.list {
            if let Some(f) = &l.filters {
                f.validate(&|m: &TunnelFilter| m.validate(false))?;
            }
        }
        Ok(())
    }
}

/// A scope: `true`/`false`, or rules.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Scope<T> {
    /// `true` allows the action without conditions; `false` denies it.
    Allowed(bool),
    /// Allowed under these rules.
    Rules(T),
}

impl<T> Scope<T> {
    /// The rules, when the scope is not a plain bool.
    pub fn rules(&self) -> Option<&T> {
        match self {
            Scope::Rules(rules) => Some(rules),
            Scope::Allowed(_) => None,
        }
    }

    /// Whether the action is allowed at all (`false` is not).
    pub fn is_allowed(&self) -> bool {
        !matches!(self, Scope::Allowed(false))
    }
}

/// `create {filters?}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateScope {
    /// What the created tunnel must look like.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<Filter<TunnelFilter>>,
}

/// `connect {filters?, params?}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectScope {
    /// What the dialed tunnel must look like.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<Filter<TunnelFilter>>,
    /// What the request must look like (`path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Filter<ParamsFilter>>,
}

/// `list {filters?, select?}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListScope {
    /// Which objects are visible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<Filter<TunnelFilter>>,
    /// Which fields of them are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select: Option<Select>,
}

/// `select: {field: bool}` in input order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Select(pub Vec<(String, bool)>);

impl Select {
    /// The fields selected (`true`).
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter(|(_, on)| *on).map(|(k, _)| k.as_str())
    }
}

/// `F := Obj | {"AND":[F…]} | {"OR":[F…]}`.
#[derive(Clone, Debug, PartialEq)]
pub enum Filter<T> {
    /// Every filter must match (empty: true).
    And(Vec<Filter<T>>),
    /// Some filter must match (empty: false).
    Or(Vec<Filter<T>>),
    /// Property constraints, ANDed.
    Match(T),
}

impl<T: Serialize> Serialize for Filter<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Filter::And(items) => one_entry(s, "AND", items),
            Filter::Or(items) => one_entry(s, "OR", items),
            Filter::Match(m) => m.serialize(s),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Filter<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(match TreeRepr::<Filter<T>, T>::deserialize(d)? {
            TreeRepr::And(r) => Filter::And(r.and),
            TreeRepr::Or(r) => Filter::Or(r.or),
            TreeRepr::Leaf(m) => Filter::Match(m),
        })
    }
}

impl<T> Filter<T> {
    /// All of `filters`.
    pub fn all_of(filters: impl IntoIterator<Item = impl Into<Filter<T>>>) -> Self {
        Filter::And(filters.into_iter().map(Into::into).collect())
    }

    /// Any of `filters`.
    pub fn any_of(filters: impl IntoIterator<Item = impl Into<Filter<T>>>) -> Self {
        Filter::Or(filters.into_iter().map(Into::into).collect())
    }

    /// Evaluates the tree with `leaf` for each constraint object (empty
    /// AND: true; empty OR: false). Only the local engine evaluates scopes.
    #[cfg_attr(not(feature = "local-engine"), allow(dead_code))]
    pub(crate) fn eval_with(&self, leaf: &dyn Fn(&T) -> bool) -> bool {
        match self {
            Filter::And(items) => items.iter().all(|f| f.eval_with(leaf)),
            Filter::Or(items) => items.iter().any(|f| f.eval_with(leaf)),
            Filter::Match(m) => leaf(m),
        }
    }

    fn validate(&self, leaf: &dyn Fn(&T) -> Result<()>) -> Result<()> {
        match self {
            Filter::And(items) | Filter::Or(items) => {
                items.iter().try_for_each(|f| f.validate(leaf))
            }
            Filter::Match(m) => leaf(m),
        }
    }
}

impl From<TunnelFilter> for Filter<TunnelFilter> {
    fn from(f: TunnelFilter) -> Self {
        Filter::Match(f)
    }
}

/// `params` of a connect scope: `{path?}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamsFilter {
    /// The HTTP path, without the query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<StringMatch>,
}

/// A string constraint: `"v"`, `{"exact":"v"}`, `{"oneof":[…]}` or
/// `{"regex":"re"}` (one operator). Serialises as given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StringMatch {
    /// A bare value: case-sensitive equality.
    Value(String),
    /// `{"exact": v}`: case-sensitive equality.
    Exact(String),
    /// `{"oneof": [..]}`: membership.
    OneOf(Vec<String>),
    /// `{"regex": re}`: unanchored search (anchor with `^…$`).
    Regex(String),
}

impl StringMatch {
    /// `{"oneof": values}`.
    pub fn one_of(values: impl IntoIterator<Item = impl Into<String>>) -> Self {
        StringMatch::OneOf(values.into_iter().map(Into::into).collect())
    }

    /// `{"regex": re}`.
    pub fn regex(re: impl Into<String>) -> Self {
        StringMatch::Regex(re.into())
    }

    /// The single value a property takes when a create request omits it
    /// (bare and `exact` only).
    pub fn single_value(&self) -> Option<&str> {
        match self {
            StringMatch::Value(v) | StringMatch::Exact(v) => Some(v),
            _ => None,
        }
    }

    fn validate(&self) -> Result<()> {
        match self {
            StringMatch::OneOf(values) if values.is_empty() => {
                Err(invalid("`oneof` needs at least one value"))
            }
            _ => Ok(()),
        }
    }
}

impl From<&str> for StringMatch {
    fn from(v: &str) -> Self {
        StringMatch::Value(v.to_owned())
    }
}

impl From<String> for StringMatch {
    fn from(v: String) -> Self {
        StringMatch::Value(v)
    }
}

impl Serialize for StringMatch {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            StringMatch::Value(v) => s.serialize_str(v),
            StringMatch::Exact(v) => one_entry(s, "exact", v),
            StringMatch::OneOf(v) => one_entry(s, "oneof", v),
            StringMatch::Regex(v) => one_entry(s, "regex", v),
        }
    }
}

fn one_entry<S: Serializer, V: Serialize + ?Sized>(
    s: S,
    key: &str,
    value: &V,
) -> std::result::Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(1))?;
    map.serialize_entry(key, value)?;
    map.end()
}

impl<'de> Deserialize<'de> for StringMatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        enum Operator {
            #[serde(rename = "exact")]
            Exact(String),
            #[serde(rename = "oneof")]
            OneOf(Vec<String>),
            #[serde(rename = "regex")]
            Regex(String),
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Value(String),
            Operator(Operator),
        }
        Ok(match Raw::deserialize(d)? {
            Raw::Value(v) => StringMatch::Value(v),
            Raw::Operator(Operator::Exact(v)) => StringMatch::Exact(v),
            Raw::Operator(Operator::OneOf(v)) => StringMatch::OneOf(v),
            Raw::Operator(Operator::Regex(v)) => StringMatch::Regex(v),
        })
    }
}

/// Ordered `{key: value}` maps (labels, select) keep input order, which
/// serde_json's default map would sort.
macro_rules! ordered_map_serde {
    ($ty:ty, $value:ty, $what:literal) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                let mut map = s.serialize_map(Some(self.0.len()))?;
                for (k, v) in &self.0 {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_map<A: MapAccess<'de>>(
                        self,
                        mut access: A,
                    ) -> std::result::Result<$ty, A::Error> {
                        let mut out: Vec<(String, $value)> = Vec::new();
                        while let Some((k, v)) = access.next_entry::<String, $value>()? {
                            if out.iter().any(|(seen, _)| *seen == k) {
                                return Err(de::Error::custom(format!("duplicate key {k:?}")));
                            }
                            out.push((k, v));
                        }
                        Ok(<$ty>::from_entries(out))
                    }
                }
                d.deserialize_map(V)
            }
        }
    };
}

impl Select {
    fn from_entries(entries: Vec<(String, bool)>) -> Self {
        Select(entries)
    }
}

/// `labels: {key: S}` in input order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Labels(pub Vec<(String, StringMatch)>);

impl Labels {
    fn from_entries(entries: Vec<(String, StringMatch)>) -> Self {
        Labels(entries)
    }
}

ordered_map_serde!(Select, bool, "a map of field names to booleans");
ordered_map_serde!(
    Labels,
    StringMatch,
    "a map of label keys to string matchers"
);

macro_rules! tunnel_filter {
    ($( $(#[$doc:meta])* $field:ident : $ty:ty => $setter:ident ( $arg:ty ) $conv:expr ;)*) => {
        /// Constraints on a tunnel's properties (TOKENS.md §3 `Obj`), ANDed;
        /// keys serialise in the documented order. Create filters may not
        /// use the first eleven (`client_id` … `creation_date`).
        #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct TunnelFilter {
            $(
                $(#[$doc])*
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )*
        }

        impl TunnelFilter {
            $(
                $(#[$doc])*
                pub fn $setter(mut self, value: $arg) -> Self {
                    #[allow(clippy::redundant_closure_call)]
                    let v = ($conv)(value);
                    self.$field = Some(v);
                    self
                }
            )*
        }
    };
}

tunnel_filter! {
    /// The owning client's id.
    client_id: StringMatch => client_id(impl Into<StringMatch>) Into::into;
    /// The owning user's id.
    user_id: StringMatch => user_id(impl Into<StringMatch>) Into::into;
    /// The workspace id.
    workspace_id: StringMatch => workspace_id(impl Into<StringMatch>) Into::into;
    /// The project id.
    project_id: StringMatch => project_id(impl Into<StringMatch>) Into::into;
    /// The cluster id.
    cluster_id: StringMatch => cluster_id(impl Into<StringMatch>) Into::into;
    /// The plan.
    plan: StringMatch => plan(impl Into<StringMatch>) Into::into;
    /// The provider.
    provider: StringMatch => provider(impl Into<StringMatch>) Into::into;
    /// The region.
    region: StringMatch => region(impl Into<StringMatch>) Into::into;
    /// `online`/`offline` (bare value).
    status: String => status(impl Into<String>) Into::into;
    /// The tunnel id.
    id: StringMatch => id(impl Into<StringMatch>) Into::into;
    /// The creation date (bare value).
    creation_date: String => creation_date(impl Into<String>) Into::into;
    /// The tunnel name.
    name: StringMatch => name(impl Into<StringMatch>) Into::into;
    /// `bytestream`/`datagram` (bare value).
    r#type: String => tunnel_type(impl Into<String>) Into::into;
    /// Published or private.
    publish: bool => publish(bool) std::convert::identity;
    /// `http`/`tls`/… (bare value).
    protocol: String => protocol(impl Into<String>) Into::into;
    /// Label constraints: listed labels must exist and match.
    labels: Labels => labels(Labels) std::convert::identity;
    /// GeoIP restriction (bare array).
    geo_ip: Vec<String> => geo_ip(Vec<String>) std::convert::identity;
    /// Trusted IP ranges (bare array).
    trusted_ips: Vec<String> => trusted_ips(Vec<String>) std::convert::identity;
    /// The published host.
    host: StringMatch => host(impl Into<StringMatch>) Into::into;
    /// The requested host name.
    hostname: StringMatch => hostname(impl Into<StringMatch>) Into::into;
    /// The published port (bare value).
    port: u32 => port(u32) std::convert::identity;
    /// TLS mode (bare value).
    tls_mode: String => tls_mode(impl Into<String>) Into::into;
    /// TLS ALPNs (bare array).
    tls_alpns: Vec<String> => tls_alpns(Vec<String>) std::convert::identity;
    /// Minimum TLS version.
    tls_min_version: StringMatch => tls_min_version(impl Into<StringMatch>) Into::into;
    /// TLS ciphers (bare array).
    tls_ciphers: Vec<String> => tls_ciphers(Vec<String>) std::convert::identity;
    /// Client-certificate edge auth.
    mtls_auth: bool => mtls_auth(bool) std::convert::identity;
    /// HTTP version (bare value).
    http_version: String => http_version(impl Into<String>) Into::into;
    /// Upstream speaks TLS (HTTP).
    http_use_tls: bool => http_use_tls(bool) std::convert::identity;
    /// Upstream TLS.
    upstream_tls: bool => upstream_tls(bool) std::convert::identity;
    /// Token edge auth.
    token_auth: bool => token_auth(bool) std::convert::identity;
    /// rstream login edge auth.
    rstream_auth: bool => rstream_auth(bool) std::convert::identity;
    /// Challenge edge mode.
    challenge_mode: bool => challenge_mode(bool) std::convert::identity;
}

impl TunnelFilter {
    /// No constraint (matches every tunnel).
    pub fn new() -> Self {
        TunnelFilter::default()
    }

    /// Adds one label constraint (kept in call order).
    pub fn label(mut self, key: impl Into<String>, value: impl Into<StringMatch>) -> Self {
        self.labels
            .get_or_insert_with(Labels::default)
            .0
            .push((key.into(), value.into()));
        self
    }

    fn validate(&self, create: bool) -> Result<()> {
        if create {
            let server_side = [
                ("client_id", self.client_id.is_some()),
                ("user_id", self.user_id.is_some()),
                ("workspace_id", self.workspace_id.is_some()),
                ("project_id", self.project_id.is_some()),
                ("cluster_id", self.cluster_id.is_some()),
                ("plan", self.plan.is_some()),
                ("provider", self.provider.is_some()),
                ("region", self.region.is_some()),
                ("status", self.status.is_some()),
                ("id", self.id.is_some()),
                ("creation_date", self.creation_date.is_some()),
            ];
            if let Some((name, _)) = server_side.iter().find(|(_, set)| *set) {
                return Err(invalid(format!(
                    "create filters cannot constrain `{name}` (the engine sets it)"
                )));
            }
        }
        let strings = [
            &self.client_id,
            &self.user_id,
            &self.workspace_id,
            &self.project_id,
            &self.cluster_id,
            &self.plan,
            &self.provider,
            &self.region,
            &self.id,
            &self.name,
            &self.host,
            &self.hostname,
            &self.tls_min_version,
        ];
        strings
            .into_iter()
            .flatten()
            .try_for_each(StringMatch::validate)?;
        if let Some(labels) = &self.labels {
            labels.0.iter().try_for_each(|(_, m)| m.validate())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_serialise_in_documented_order() {
        let scopes = TunnelScopes::new()
            .list(TunnelFilter::new().label("env", "dev"))
            .select(["name", "host"])
            .connect(TunnelFilter::new().id("t1"))
            .path(StringMatch::Exact("/ping".into()))
            .create(
                TunnelFilter::new()
                    .protocol("http")
                    .name(StringMatch::regex("^a")),
            );
        let json = serde_json::to_string(&Resources::tunnels(scopes)).unwrap();
        assert_eq!(
            json,
            r#"{"tunnels":{"scopes":{"tunnels":{"create":{"filters":{"name":{"regex":"^a"},"protocol":"http"}},"connect":{"filters":{"id":"t1"},"params":{"path":{"exact":"/ping"}}},"list":{"filters":{"labels":{"env":"dev"}},"select":{"name":true,"host":true}}}}}}"#
        );
        let back = Resources::from_json(&json).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), json);
    }

    #[test]
    fn trees_round_trip() {
        let tree = ResourceTree::any_of([
            Leaf::new()
                .projects(["p"])
                .scopes(TunnelScopes::new().list_any()),
            Leaf::new().workspaces(["w"]),
        ]);
        let json = serde_json::to_string(&Resources::tunnels(tree)).unwrap();
        assert_eq!(
            json,
            r#"{"tunnels":{"OR":[{"projects":["p"],"scopes":{"tunnels":{"list":true}}},{"workspaces":["w"]}]}}"#
        );
        assert!(Resources::from_json(&json).is_ok());
    }

    #[test]
    fn strict_parsing() {
        for bad in [
            r#"{}"#,
            r#"{"tunnels":{}}"#,
            r#"{"tunnels":{"scopes":{"tunnels":{}}}}"#,
            r#"{"tunnels":{"projects":[]}}"#,
            r#"{"tunnels":{"projects":["p"],"workspaces":["w"]}}"#,
            r#"{"tunnels":{"AND":[]}}"#,
            r#"{"tunnels":{"AND":[{"projects":["p"]}],"x":1}}"#,
            r#"{"tunnels":{"scopes":{"tunnels":{"list":true,"delete":true}}}}"#,
            r#"{"tunnels":{"scopes":{"tunnels":{"list":{"filters":{"colour":"red"}}}}}}"#,
            r#"{"tunnels":{"scopes":{"tunnels":{"list":{"filters":{"name":{"exact":"a","regex":"b"}}}}}}}"#,
            r#"{"tunnels":{"scopes":{"tunnels":{"create":{"filters":{"id":"x"}}}}}}"#,
            r#"{"tunnels":{"scopes":{"tunnels":{"list":{"filters":{"protocol":{"oneof":["http"]}}}}}}}"#,
            r#"{"tunnels":{"scopes":{"tunnels":{"connect":{"params":{"host":"x"}}}}}}"#,
            r#"{"tunnels":{"scopes":{"tunnels":{"list":{"select":{"a":true,"a":false}}}}}}"#,
            r#"{"tunnels":{"projects":["p"]},"scopes":{}}"#,
            "[",
        ] {
            let err = Resources::from_json(bad).unwrap_err();
            assert_eq!(err.code(), code::INVALID_RESOURCES, "{bad}");
        }
    }

    #[test]
    fn bounded() {
        let mut deep = String::from(r#"{"projects":["p"]}"#);
        for _ in 0..30 {
            deep = format!(r#"{{"AND":[{deep}]}}"#);
        }
        let err = Resources::from_json(&format!(r#"{{"tunnels":{deep}}}"#)).unwrap_err();
        assert!(err.to_string().contains("deeper"), "{err}");
        let big = format!(
            r#"{{"tunnels":{{"projects":[{}]}}}}"#,
            vec!["\"p\""; 20_000].join(",")
        );
        assert!(Resources::from_json(&big).is_err());
    }

    #[test]
    fn explicit_scopes_and_project_scoping() {
        let mut r = Resources::tunnels(ResourceTree::all_of([
            ResourceTree::from(Leaf::new().projects(["p"])),
            TunnelScopes::new().list_any().into(),
        ]));
        assert!(r.has_explicit_scopes());
        r.tunnels.scope_to_project("q");
        // Targeted elsewhere in the AND: left alone.
        assert!(!serde_json::to_string(&r).unwrap().contains("\"q\""));
        let mut r = Resources::tunnels(TunnelScopes::new().list_any());
        r.tunnels.scope_to_project("q");
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"tunnels":{"projects":["q"],"scopes":{"tunnels":{"list":true}}}}"#
        );
        assert!(
            !Resources::tunnels(ResourceTree::any_of([Leaf::new().projects(["p"])]))
                .has_explicit_scopes()
        );
    }
}
