//! Chorus's agent tools.
//!
//! - [`Tool`]: the seam every tool implements (name, description, argument
//!   schema, cancellable call returning a [`ToolResult`]).
//! - [`ToolRegistry`]: built from [`ToolsConfig`] at start: the built-ins
//!   (`clock`, `calculator`), tools the caller adds, and MCP servers over stdio
//!   or streamable HTTP, kept connected by a supervisor task each.
//! - [`Toolset`]: what one agent may call in one run; it validates arguments,
//!   bounds results, counts metrics and turns every failure into an error
//!   result the model reads.

pub mod builtin;
pub mod config;
mod mcp;
pub mod metrics;
mod registry;
mod tool;
mod toolset;

pub use config::{ConfigError, McpServerConfig, McpTransport, ToolsConfig};
pub use mcp::{McpServerStatus, McpState};
pub use metrics::ToolMetrics;
pub use registry::{ToolDeps, ToolRegistry, UnknownTool};
pub use tool::{Outcome, SchemaError, Tool, ToolResult, ToolSchema};
pub use toolset::{MODEL_NAME_MAX, ToolSpec, Toolset};
