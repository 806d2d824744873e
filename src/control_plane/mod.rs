//! The rstream control plane (the hosted API behind `api_url`).
//!
//! This module is the home of the crate's control-plane API client: every
//! request the SDK makes to the hosted API, as opposed to the engine, lives
//! here. Today that is one call, managed resolution ([`RESOLVE_TIMEOUT`],
//! [`MAX_RESOLVE_BODY`]): a project endpoint (and optional region) becomes
//! the address of the engine to connect to. The control-plane API client
//! that follows (projects, tokens, …) goes next to it.
//!
//! [`config`](crate::config) only produces the inputs (API URL, project
//! endpoint, region, token, control-plane headers, trust anchors, proxy)
//! and does no network I/O; this module performs the calls, over the same
//! HTTPS client stack as the Engine API and the local engine's webhooks.

mod resolve;

pub(crate) use resolve::resolve_engine;
pub use resolve::{MAX_RESOLVE_BODY, RESOLVE_TIMEOUT};
