//! REST: channels.
