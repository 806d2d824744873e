//! Access control in the SDK: application credentials, scoped app tokens,
//! and reading tokens.
//!
//! rstream's model is least privilege: a backend holds **application
//! credentials** ([`AppCredentials`]: a client id and a P-521 private key)
//! and mints **short-lived, scoped tokens** ([`AppCredentials::mint`]) for
//! agents, browsers and devices. The [`Resources`] of a token say which
//! tunnels it may create, connect to and list; engines enforce them. The
//! tokens are ES512 JWTs whose header and claims are byte for byte what the
//! JavaScript SDK mints for the same inputs.
//!
//! ```
//! use std::time::Duration;
//! use rstream::auth::{AppCredentials, Resources, TokenRequest, TunnelFilter, TunnelScopes};
//!
//! # fn main() -> Result<(), rstream::Error> {
//! # let creds = AppCredentials::generate("my-app")?;
//! // let creds = AppCredentials::from_env()?.expect("RSTREAM_CLIENT_ID/SECRET");
//! // A browser may list (and only list) tunnels labelled env=dev, and see
//! // only their names and hosts.
//! let token = creds.mint(
//!     &TokenRequest::new()
//!         .expires_in(Duration::from_secs(60))
//!         .resources(Resources::tunnels(
//!             TunnelScopes::new()
//!                 .list(TunnelFilter::new().label("env", "dev"))
//!                 .select(["id", "status", "client_id", "name", "host"]),
//!         )),
//! )?;
//! # let _ = token;
//! # Ok(()) }
//! ```
//!
//! [`Token::decode`] reads a token's claims for diagnostics; it verifies
//! nothing. See `docs/ACCESS_CONTROL.md`.

mod credentials;
mod resources;
mod token;

pub use credentials::{
    AppCredentials, AppPublicKey, TokenRequest, CLIENT_ID_ENV, CLIENT_SECRET_ENV,
};
pub use resources::{
    ConnectScope, CreateScope, Filter, Labels, Leaf, ListScope, ParamsFilter, ResourceTree,
    Resources, Scope, Scopes, Select, StringMatch, TunnelFilter, TunnelScopes, MAX_RESOURCES_BYTES,
    MAX_RESOURCES_DEPTH,
};
pub use token::{Claims, Header, Metadata, Token, MAX_TOKEN_BYTES};

pub(crate) use token::payload_json;
