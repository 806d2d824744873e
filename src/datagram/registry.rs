//! The open channels of one control channel, by stream id, so that an
//! engine's `DatagramChannelClose{stream_id}` closes the right one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use super::channel::Shared;

/// Channels accepted on a control channel's datagram tunnels. Each entry
/// lives as long as its channel's driver task (which removes it), so the
/// map holds at most the channels open now.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    channels: Mutex<HashMap<Arc<str>, Weak<Shared>>>,
}

impl Registry {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Weak<Shared>>> {
        // Map operations only under the lock: nothing is left half-done.
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn insert(&self, stream_id: Arc<str>, channel: &Arc<Shared>) {
        self.map().insert(stream_id, Arc::downgrade(channel));
    }

    /// Removes `stream_id` if it still names `channel`.
    pub(super) fn remove(&self, stream_id: &str, channel: &Arc<Shared>) {
        let mut map = self.map();
        if map
            .get(stream_id)
            .is_some_and(|w| w.as_ptr() == Arc::as_ptr(channel))
        {
            map.remove(stream_id);
        }
    }

    /// The engine closed `stream_id` (`DatagramChannelClose`): closes the
    /// channel quietly. Unknown ids are ignored.
    pub(crate) fn close(&self, stream_id: &str, error: Option<crate::proto::Error>) {
        let channel = self.map().remove(stream_id).and_then(|w| w.upgrade());
        match channel {
            Some(channel) => {
                tracing::debug!(stream_id, ?error, "datagram channel closed by the engine");
                channel.closed_by_engine();
            }
            None => tracing::debug!(stream_id, "DatagramChannelClose for an unknown channel"),
        }
    }
}
