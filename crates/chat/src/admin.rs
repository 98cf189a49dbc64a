//! Administration: connected sessions, disconnects, cleanup, maintenance.

use crate::{Accounts, Deps, Messages};

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
}
