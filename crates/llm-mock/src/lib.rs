//! Mock LLM provider servers for tests and benchmarks. One axum server on a
//! loopback port answers on each provider's real streaming API — OpenAI chat
//! completions, Gemini `streamGenerateContent`, Anthropic messages — with
//! replies scripted per request ([`Script`]): text, reasoning, parallel tool
//! calls, usage, and faults (pacing, stalls, early close, HTTP errors with
//! `Retry-After`, malformed chunks, in-stream errors, slow headers). It
//! records every request and counts clients that hang up mid-stream.

mod script;
mod server;
pub mod wire;

pub use script::{Finish, MockUsage, Part, Reply, Script, Turn};
pub use server::{MockOptions, MockServer, RecordedRequest, Recording};
pub use wire::Wire;
