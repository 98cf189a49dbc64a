//! The one seam every model engine sits behind.

use crate::event::EventStream;
use crate::request::ChatRequest;

/// A model engine: Gemini, an OpenAI-compatible server, Anthropic, the demo.
///
/// `stream` starts nothing by itself: the request is sent when the stream is
/// first polled, and dropping the stream drops the request (the connection
/// closes). Errors, including connection errors and HTTP statuses, arrive as
/// the stream's items; after an `Err` the stream ends. Implementations do not
/// retry or time out: [`crate::Model::stream`] wraps any provider in
/// timeouts, retries and the fallback switch.
pub trait Provider: Send + Sync + 'static {
    fn stream(&self, request: ChatRequest) -> EventStream;
}
