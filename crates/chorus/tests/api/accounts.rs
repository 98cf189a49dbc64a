//! REST: accounts.
