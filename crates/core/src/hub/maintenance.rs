//! This node's copy of the maintenance switch, and switching it for the
//! whole cluster. The mode itself lives in [`crate::maintenance`].

use super::Hub;
use crate::broker::{BrokerError, Control};
use crate::maintenance::{MaintenanceMode, MaintenanceRefusal};

impl Hub {
    pub fn maintenance(&self) -> MaintenanceMode {
        self.0.maintenance.mode()
    }

    pub fn in_maintenance(&self) -> bool {
        self.0.maintenance.is_on()
    }

    /// `Err` while maintenance mode is on; `what` names the refused action ("publishing").
    pub fn check_maintenance(&self, what: &str) -> Result<(), MaintenanceRefusal> {
        self.0.maintenance.check(what)
    }

    /// Switches maintenance mode on this node at once, then on every node
    /// through the broker. `Err` means other nodes may not have heard of it.
    pub async fn set_maintenance(&self, mode: MaintenanceMode) -> Result<(), BrokerError> {
        self.apply_maintenance(mode.clone());
        self.0.backplane.broker.control(None, Control::Maintenance(mode)).await.inspect_err(|_| {
            self.0.metrics.broker_errors.inc();
        })
    }

    pub(super) fn apply_maintenance(&self, mode: MaintenanceMode) {
        let log = mode.clone();
        if self.0.maintenance.set(mode) {
            tracing::info!(mode = ?log, "maintenance mode changed");
        }
    }
}
