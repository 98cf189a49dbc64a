//! REST: admin.
