//! Interop with the official Python SDK (`rstreamlabs-rstream`): runtime
//! protocol, Engine API, configuration resolution and webhook signatures.
//! The Python side is the scripts next to this file (`tests/interop/*.py`),
//! run with the interpreter named by `RSTREAM_PYTHON`; see
//! `support::python`. One test binary, one module per topic.

#[path = "../support/mod.rs"]
mod support;

mod auth_python;
mod config_python;
mod engine_api_python;
mod interop_python;
mod webhook_interop;
