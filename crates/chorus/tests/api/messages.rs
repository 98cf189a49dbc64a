//! REST: messages.
