//! Webhooks (placeholder, being written).
