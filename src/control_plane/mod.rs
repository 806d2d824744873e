//! The rstream control plane (the hosted API behind `api_url`).
//!
//! Every request the SDK makes to the hosted API, as opposed to the
//! engine, lives here, over one HTTP stack (the crate's HTTPS connector:
//! ALPN `h2` or `http/1.1`, the configured proxy, `https://` except for
//! loopback hosts, no redirects, bounded bodies, a deadline per call):
//!
//! - [`ControlPlane`]: `whoami`, [`projects`](ControlPlane::projects)
//!   (list, get, resolve by endpoint to the typed [`Project`], managed TURN
//!   credentials) and [`tokens`](ControlPlane::tokens) (`POST /api/tokens`
//!   with the [`rstream::auth`](crate::auth) resources builders),
//!   authenticated by a bearer token or by application credentials (a
//!   fresh app token per call).
//! - Managed resolution ([`RESOLVE_TIMEOUT`], [`MAX_RESOLVE_BODY`]): a
//!   client configured with a project endpoint resolves it to its engine
//!   through the same route and the same [`Project`] model.
//! - The engine's TURN route, `POST /api/turn-server/credentials`, is
//!   [`EngineApi::turn_credentials`](crate::api::EngineApi::turn_credentials)
//!   (`client.api().turn_credentials(ttl)`): it goes to the engine, with
//!   the Engine API's credentials, and shares the answer checks
//!   ([`TurnCredentials`]) with the managed TURN route.
//!
//! [`config`](crate::config) only produces the inputs (API URL, project
//! endpoint, region, token, control-plane headers, trust anchors, proxy)
//! and does no network I/O. See `docs/CONTROL_PLANE.md`.

mod client;
mod http;
mod models;
mod resolve;
mod turn;

pub use client::{
    ControlPlane, ControlPlaneBuilder, CreateToken, ListProjects, Projects, Tokens,
    DEFAULT_MAX_BODY, DEFAULT_TIMEOUT,
};
pub use models::{
    Project, ProjectList, RegionalEndpoint, TurnCredentials, Whoami, MAX_TURN_BODY,
    MAX_TURN_CREDENTIAL, MAX_TURN_TTL, MAX_TURN_URLS, MAX_TURN_USERNAME,
};
pub(crate) use resolve::resolve_engine;
pub use resolve::{MAX_RESOLVE_BODY, RESOLVE_TIMEOUT};
pub use turn::TURN_TIMEOUT;
