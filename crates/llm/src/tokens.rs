//! Token counting with tiktoken's `o200k_base` encoding: exact for recent
//! OpenAI models, an estimate for the others (whose own usage numbers win).

use std::sync::Arc;

use tiktoken_rs::CoreBPE;

use crate::request::{ChatRequest, Message, ToolDefinition};

/// Tokens a chat format adds around each message (role markers, separators).
const PER_MESSAGE_OVERHEAD: usize = 4;
/// Tokens that prime the model's reply.
const REPLY_PRIMING: usize = 3;

/// A loaded encoder. Loading takes about a second in debug builds, so the
/// composition root makes one and clones it (clones share the encoder).
#[derive(Clone)]
pub struct TokenCounter {
    encoder: Arc<CoreBPE>,
}

impl std::fmt::Debug for TokenCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenCounter(o200k_base)")
    }
}

/// The encoder tables are compiled in; failing to load them is a build defect.
#[derive(Debug, thiserror::Error)]
#[error("could not load the tiktoken encoder: {0}")]
pub struct TokenizerError(String);

impl TokenCounter {
    pub fn new() -> Result<Self, TokenizerError> {
        let encoder = tiktoken_rs::o200k_base().map_err(|e| TokenizerError(e.to_string()))?;
        Ok(TokenCounter {
            encoder: Arc::new(encoder),
        })
    }

    /// Tokens in a piece of text.
    pub fn text(&self, text: &str) -> usize {
        self.encoder.encode_ordinary(text).len()
    }

    /// Tokens one message takes in a prompt, its framing included.
    pub fn message(&self, message: &Message) -> usize {
        let content = match message {
            Message::User { name, text } => {
                self.text(&Message::user_text_with_name(name.as_deref(), text))
            }
            Message::Assistant { text, tool_calls } => {
                self.text(text)
                    + tool_calls
                        .iter()
                        .map(|c| {
                            self.text(&c.name)
                                + self.text(&c.arguments.to_string())
                                + PER_MESSAGE_OVERHEAD
                        })
                        .sum::<usize>()
            }
            Message::ToolResult(result) => self.text(&result.content) + self.text(&result.call_id),
        };
        content + PER_MESSAGE_OVERHEAD
    }

    /// Tokens the tool definitions take (counted as their JSON).
    pub fn tools(&self, tools: &[ToolDefinition]) -> usize {
        tools
            .iter()
            .map(|t| {
                self.text(&t.name)
                    + self.text(&t.description)
                    + self.text(&t.input_schema.to_string())
                    + PER_MESSAGE_OVERHEAD
            })
            .sum()
    }

    /// Tokens the whole request takes as input.
    pub fn request(&self, request: &ChatRequest) -> usize {
        let system = request
            .system
            .as_deref()
            .map_or(0, |s| self.text(s) + PER_MESSAGE_OVERHEAD);
        system
            + request
                .messages
                .iter()
                .map(|m| self.message(m))
                .sum::<usize>()
            + self.tools(&request.tools)
            + REPLY_PRIMING
    }

    /// The text cut into tokens, in order (the demo provider streams them).
    pub(crate) fn pieces(&self, text: &str) -> Vec<String> {
        match self
            .encoder
            .split_by_token_ordinary_iter(text)
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(pieces) => pieces,
            // A split inside a multi-byte character: stream by words instead.
            Err(_) => text.split_inclusive(' ').map(str::to_owned).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_grow_with_content_and_pieces_rebuild_the_text() {
        let counter = TokenCounter::new().unwrap();
        assert_eq!(counter.text(""), 0);
        let short = counter.text("hello world");
        assert!(short >= 2);
        assert!(counter.text("hello world, and a much longer sentence after it") > short);
        let text = "Déjà vu: 12*(3+4) = 84 — ok.";
        assert_eq!(counter.pieces(text).concat(), text);
        let request = ChatRequest {
            model: "m".into(),
            system: Some("be brief".into()),
            messages: vec![Message::user("hi")],
            tools: vec![],
            max_output_tokens: 10,
        };
        let with_name = ChatRequest {
            messages: vec![Message::user_named("Alice", "hi")],
            ..request.clone()
        };
        assert!(counter.request(&with_name) > counter.request(&request));
    }
}
