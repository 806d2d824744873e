//! Every task the engine spawns for a connection is tracked here, so
//! stopping the engine aborts them all (and closes their sockets).

use std::future::Future;
use std::sync::Mutex;

use tokio::task::JoinSet;

/// A set of engine tasks; finished ones are reaped on each spawn.
pub(crate) struct Tasks {
    set: Mutex<Option<JoinSet<()>>>,
}

impl Tasks {
    pub(crate) fn new() -> Self {
        Tasks {
            set: Mutex::new(Some(JoinSet::new())),
        }
    }

    /// Spawns `fut` as an engine task. After [`close`](Self::close) the
    /// future is dropped instead (the engine is stopping).
    pub(crate) fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let mut guard = self.set.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(set) = guard.as_mut() {
            while set.try_join_next().is_some() {}
            set.spawn(fut);
        }
    }

    /// Aborts every task and refuses new ones; returns the set so the
    /// caller can wait for the aborted tasks to be dropped.
    pub(crate) fn close(&self) -> Option<JoinSet<()>> {
        let mut guard = self.set.lock().unwrap_or_else(|e| e.into_inner());
        let mut set = guard.take()?;
        set.abort_all();
        Some(set)
    }
}

/// Aborts a task when dropped (a connection's helper task dies with it).
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
