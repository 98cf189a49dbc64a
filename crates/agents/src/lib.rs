//! Chorus's agent runtime: hosted agents answer in channels through LLM
//! providers and tools, and every member's connection sees each run live,
//! recoverably, with exactly one ending.
//!
//! Bird's-eye view:
//! - The chat domain decides who answers a message and commits the runs
//!   (`queued`) with the message; the [`Intake`] tells the runtime, which
//!   also finds them in the store (at start, and on rescans).
//! - [`Runtime`] queues runs ([`queue`]: per person, round-robin, under the
//!   node's caps, one run per agent and channel), runs them ([`run_loop`])
//!   and watches them (silence watchdog, shutdown).
//! - [`RunLedger`] is the run state machine: every producer's events get
//!   their `seq` there and every ending is a compare-and-set there, so each
//!   run has exactly one terminal event and nothing after it.
//!
//! It knows the store, the chat domain, the hub, `chorus-llm` and
//! `chorus-tools`; not HTTP, not the wire format beyond the event catalog.

mod client;
mod coalesce;
pub mod config;
pub mod events;
mod external;
mod health;
mod intake;
pub mod ledger;
mod memory;
pub mod metrics;
pub mod queue;
mod routing;
mod run_loop;
mod runtime;
mod service;
pub mod views;
pub mod watch;

pub use client::{ClientPrompt, ClientRun, ClientRunOutcome, ClientRunRequest};
pub use config::{AgentsConfig, AgentsConfigError};
pub use events::{Ending, RunEvent, UsageView};
pub use external::{EXTERNAL_PROVIDER, PushError, PushReport, PushedEvent, PushedKind};
pub use health::{AgentsHealth, McpHealth, ModelHealth};
pub use intake::{INTAKE_CAPACITY, Intake, IntakeReceiver};
pub use ledger::{AnswerPlan, EndOutcome, LedgerError, LiveRun, Origin, RunLedger, Stop, Streamed};
pub use memory::persona;
pub use metrics::AgentMetrics;
pub use runtime::{Runtime, RuntimeParts};
pub use service::{RUNS_PAGE_MAX, RunListFilter};
pub use views::{RunErrorView, RunUsageView, RunView};
pub use watch::{ClientTurns, RunFeed, WatchedEvent};
