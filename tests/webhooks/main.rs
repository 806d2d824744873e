//! Webhooks: signing and verification (`rstream::webhook`) and the local
//! engine's delivery. One test binary, one module per topic.

#[path = "../support/mod.rs"]
mod support;

mod webhook;
mod webhook_delivery;
