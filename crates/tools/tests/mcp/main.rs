//! MCP against `@modelcontextprotocol/server-everything` (installed by
//! scripts/test.sh into `.test-tools/`), over stdio and streamable HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a failure should stop the test where it happens.

mod calls;
mod common;
mod lifecycle;
