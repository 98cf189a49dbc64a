//! The scenarios, one module per group.

pub mod ceiling;
pub mod churn;
pub mod eviction;
pub mod fanout;
pub mod idle;
pub mod logins;
pub mod messages;
pub mod runs;
pub mod soak;
pub mod streams;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::conn::StreamState;

/// Waits until every receiver satisfies `done`, or `limit` passes. Returns
/// the time waited.
pub async fn drain_until_complete(states: &[Arc<Mutex<StreamState>>], done: impl Fn(&StreamState) -> bool, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if states.iter().all(|s| done(&s.lock())) || start.elapsed() >= limit {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Close codes as a JSON-friendly map.
pub fn fmt_map(m: &BTreeMap<u16, u64>) -> BTreeMap<String, u64> {
    m.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}
