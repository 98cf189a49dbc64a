//! Agents.

use crate::Deps;

#[derive(Clone)]
pub struct Agents {
    #[allow(dead_code)]
    deps: Deps,
}

impl Agents {
    pub fn new(deps: Deps) -> Self {
        Self { deps }
    }
}
