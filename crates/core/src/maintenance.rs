//! Maintenance mode: one switch for the cluster that refuses everything
//! creating content (messages, channels, agents, publications).
//!
//! Below both the broker (which carries a change to every node as a
//! `Control`) and the hub (which holds this node's copy), so neither has to
//! import the other.

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::RwLock;

/// Maintenance mode as every node sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum MaintenanceMode {
    #[default]
    Off,
    On {
        /// What the administrator wants users to read, if anything.
        message: Option<String>,
        /// Unix milliseconds.
        since_ms: i64,
    },
}

/// Content creation refused because of maintenance mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the server is in maintenance mode: {} is refused until it ends", self.subject())]
pub struct MaintenanceRefusal {
    /// What was refused, e.g. "publishing".
    pub what: String,
    /// The administrator's message.
    pub notice: Option<String>,
}

impl MaintenanceRefusal {
    /// The refused action with the administrator's message, for error texts.
    pub fn subject(&self) -> String {
        match &self.notice {
            Some(n) => format!("{} ({n})", self.what),
            None => self.what.clone(),
        }
    }
}

/// This node's copy of the switch. Checked on every publish, so the usual
/// answer ("off") is one atomic load.
#[derive(Debug, Default)]
pub struct MaintenanceSwitch {
    mode: RwLock<MaintenanceMode>,
    /// Mirrors `mode` for the cheap check.
    on: AtomicBool,
}

impl MaintenanceSwitch {
    pub fn mode(&self) -> MaintenanceMode {
        self.mode.read().clone()
    }

    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Acquire)
    }

    /// `Err` while the switch is on; `what` names the refused action ("publishing").
    pub fn check(&self, what: &str) -> Result<(), MaintenanceRefusal> {
        if !self.is_on() {
            return Ok(());
        }
        let notice = match &*self.mode.read() {
            MaintenanceMode::On { message, .. } => message.clone(),
            // Switched off between the two reads.
            MaintenanceMode::Off => return Ok(()),
        };
        Err(MaintenanceRefusal { what: what.to_owned(), notice })
    }

    /// Sets the mode; true if it changed.
    pub fn set(&self, mode: MaintenanceMode) -> bool {
        let mut current = self.mode.write();
        self.on.store(matches!(mode, MaintenanceMode::On { .. }), Ordering::Release);
        let changed = *current != mode;
        *current = mode;
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_while_on_with_the_notice() {
        let switch = MaintenanceSwitch::default();
        assert!(switch.check("publishing").is_ok());
        assert!(switch.set(MaintenanceMode::On { message: Some("back at 10".into()), since_ms: 1 }));
        let refusal = switch.check("publishing").unwrap_err();
        assert_eq!(refusal.subject(), "publishing (back at 10)");
        assert_eq!(refusal.to_string(), "the server is in maintenance mode: publishing (back at 10) is refused until it ends");
        assert!(!switch.set(MaintenanceMode::On { message: Some("back at 10".into()), since_ms: 1 }), "same mode: no change");
        assert!(switch.set(MaintenanceMode::Off));
        assert!(switch.check("publishing").is_ok());
    }
}
