//! The bounded queue between an endpoint's pump and its worker.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tokio::sync::Notify;

use super::lock;

/// A bounded FIFO that never blocks the producer: pushing onto a full
/// queue drops (and returns) the oldest item.
pub(super) struct Queue<T> {
    items: Mutex<VecDeque<T>>,
    capacity: usize,
    notify: Notify,
    closed: AtomicBool,
}

impl<T> Queue<T> {
    pub(super) fn new(capacity: usize) -> Self {
        Queue {
            items: Mutex::new(VecDeque::with_capacity(capacity.min(64))),
            capacity: capacity.max(1),
            notify: Notify::new(),
            closed: AtomicBool::new(false),
        }
    }

    /// Appends `item`; returns the item dropped to make room, if any.
    pub(super) fn push(&self, item: T) -> Option<T> {
        let dropped = {
            let mut items = lock(&self.items);
            let dropped = if items.len() >= self.capacity {
                items.pop_front()
            } else {
                None
            };
            items.push_back(item);
            dropped
        };
        self.notify.notify_one();
        dropped
    }

    /// No more pushes; [`next`](Self::next) drains what is left, then ends.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    /// The next item, waiting for one; `None` once closed and empty.
    pub(super) async fn next(&self) -> Option<T> {
        loop {
            if let Some(item) = lock(&self.items).pop_front() {
                return Some(item);
            }
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            // `notify_one` stores a permit when nobody waits, so a push
            // between the check above and this await is not lost.
            self.notify.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_drops_the_oldest_when_full() {
        let q = Queue::new(3);
        for i in 0..3 {
            assert_eq!(q.push(i), None);
        }
        assert_eq!(q.push(3), Some(0));
        assert_eq!(q.push(4), Some(1));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        q.close();
        let drained: Vec<i32> = rt.block_on(async {
            let mut v = Vec::new();
            while let Some(i) = q.next().await {
                v.push(i);
            }
            v
        });
        assert_eq!(drained, vec![2, 3, 4]);
    }
}
