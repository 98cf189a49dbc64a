//! MCP against `@modelcontextprotocol/server-everything` (installed by
//! scripts/test.sh into `.test-tools/`), over stdio and streamable HTTP.

mod calls;
mod common;
mod lifecycle;
