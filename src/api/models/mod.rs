//! Typed Engine API objects (ENGINE_API.md §5 and §7): [`ClientRecord`],
//! [`TunnelRecord`], [`Event`] and the `state.initial` snapshot.
//!
//! Every object is snake_case JSON. Unknown fields are kept in `extra`
//! (and written back when serialised), so a newer engine never breaks an
//! older SDK; a `null` where a list or map is expected reads as empty.
//!
//! Split by concern: the records ([`ClientRecord`], [`TunnelRecord`]) in
//! `records`, the watch events in `event`; the shared leaf types
//! ([`Status`], [`Health`]) stay here.

mod event;
mod records;

use std::fmt;

use serde::de::{DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

pub use event::{Event, EventObject, EventType, InitialState};
pub use records::{ClientRecord, TunnelRecord};

/// A client's or a tunnel's status: `online` or `offline`. Any other value
/// an engine sends is kept as [`Status::Other`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Status {
    /// `online`.
    Online,
    /// `offline` (the last state of a deleted object).
    Offline,
    /// Any other value, as sent.
    Other(String),
}

impl Status {
    /// The wire value.
    pub fn as_str(&self) -> &str {
        match self {
            Status::Online => "online",
            Status::Offline => "offline",
            Status::Other(s) => s,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl From<&str> for Status {
    fn from(s: &str) -> Self {
        match s {
            "online" => Status::Online,
            "offline" => Status::Offline,
            other => Status::Other(other.to_owned()),
        }
    }
}

impl From<Status> for String {
    fn from(s: Status) -> String {
        s.as_str().to_owned()
    }
}

impl Serialize for Status {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Status {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(Status::from(s.as_str()))
    }
}

/// `null` (or a missing field) reads as the default value.
pub(super) fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + DeserializeOwned,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The answer of a health probe (`/api/health/live`, `/api/health/ready`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Health {
    /// `live`, `ready` or `unavailable`.
    pub status: String,
}

impl Health {
    /// Whether the probe passed (`live` or `ready`).
    pub fn is_ok(&self) -> bool {
        matches!(self.status.as_str(), "live" | "ready")
    }
}
