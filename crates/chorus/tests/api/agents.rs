//! REST: agents.
