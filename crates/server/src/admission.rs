//! The check every transport (WebSocket, SSE) makes before it does any work
//! for a new connection: the hub's admission (shutdown, the node's
//! connection limit, its connect rate), answered as an HTTP error.

use chorus_core::Hub;
use chorus_core::hub::ConnectRefusal;
use chorus_protocol::ErrorCode;

use crate::error::ApiError;

/// Seconds a client refused for the node's connection limit should wait.
const NODE_FULL_RETRY_SECS: u64 = 5;

/// `Ok` if a new connection may start; takes one token of the connect rate.
pub(crate) fn admit(hub: &Hub) -> Result<(), ApiError> {
    hub.admit_connect().map_err(|refusal| match refusal {
        ConnectRefusal::ShuttingDown => ApiError::new(ErrorCode::Unavailable, refusal.to_string()).retry_after(1),
        ConnectRefusal::NodeFull => ApiError::new(ErrorCode::Unavailable, refusal.to_string()).retry_after(NODE_FULL_RETRY_SECS),
        ConnectRefusal::Rate(limited) => limited.into(),
    })
}
