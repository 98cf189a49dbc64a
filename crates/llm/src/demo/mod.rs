//! The offline demo model: the default when no model is configured, so a
//! fresh server has a working agent. Deterministic (the answer follows from
//! the request alone), it streams at a set pace, shows some thinking, calls
//! the built-in `clock` and `calculator` tools when asked the time or a sum,
//! calls any offered tool a message names (`call <tool>`, arguments from the
//! first JSON object of the message), answers from their results, and
//! summarizes when asked to.

mod faults;
mod plan;

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::StreamExt;

use crate::ProviderError;
use crate::event::{EventStream, StreamEvent, Usage};
use crate::provider::Provider;
use crate::request::ChatRequest;
use crate::tokens::TokenCounter;

pub use faults::DemoFaults;
use faults::Fault;

pub struct DemoProvider {
    tokens: TokenCounter,
    /// Wait between two streamed tokens; zero streams at once.
    pace: Duration,
    faults: DemoFaults,
}

impl DemoProvider {
    pub fn new(tokens: TokenCounter, pace: Duration, faults: DemoFaults) -> Self {
        DemoProvider {
            tokens,
            pace,
            faults,
        }
    }
}

impl Provider for DemoProvider {
    fn stream(&self, request: ChatRequest) -> EventStream {
        let fault = match self.faults {
            DemoFaults::Obeyed => request.last_user_text().and_then(faults::parse),
            DemoFaults::Ignored => None,
        };
        let plan = plan::plan(&request, fault.as_ref());
        let mut steps = VecDeque::new();
        let mut output_tokens = 0usize;
        let reasoning = self.tokens.pieces(&plan.reasoning);
        let reasoning_tokens = reasoning.len() as u64;
        for piece in reasoning {
            output_tokens += 1;
            steps.push_back(StreamEvent::ReasoningDelta { text: piece });
        }
        for piece in self.tokens.pieces(&plan.text) {
            output_tokens += 1;
            steps.push_back(StreamEvent::TextDelta { text: piece });
        }
        for call in &plan.calls {
            steps.push_back(StreamEvent::ToolCallStarted {
                id: call.id.clone(),
                name: call.name.clone(),
            });
            for piece in self.tokens.pieces(&call.arguments.to_string()) {
                output_tokens += 1;
                steps.push_back(StreamEvent::ToolCallArgumentsDelta {
                    id: call.id.clone(),
                    delta: piece,
                });
            }
        }
        for call in plan.calls {
            steps.push_back(StreamEvent::ToolCallCompleted { call });
        }
        let usage = Usage {
            input_tokens: self.tokens.request(&request) as u64,
            output_tokens: output_tokens as u64,
            reasoning_tokens: Some(reasoning_tokens),
            estimated: false,
        };
        steps.push_back(StreamEvent::Usage { usage });
        steps.push_back(StreamEvent::Finished {
            reason: plan.finish,
        });
        let state = Playback {
            steps,
            pace: self.pace,
            sent_content: 0,
            fault,
            started: false,
        };
        futures_util::stream::unfold(state, |mut state| async move {
            let item = state.next().await?;
            Some((item, state))
        })
        .boxed()
    }
}

struct Playback {
    steps: VecDeque<StreamEvent>,
    pace: Duration,
    sent_content: usize,
    fault: Option<Fault>,
    started: bool,
}

impl Playback {
    async fn next(&mut self) -> Option<Result<StreamEvent, ProviderError>> {
        match &self.fault {
            Some(Fault::Fail(error)) => {
                let error = error.clone();
                self.fault = None;
                self.steps.clear();
                return Some(Err(error));
            }
            Some(Fault::Panic) => panic!("demo provider: injected panic"),
            Some(Fault::StallAfter(n)) if self.sent_content >= *n => {
                std::future::pending::<()>().await
            }
            Some(Fault::ErrorAfter(n)) if self.sent_content >= *n => {
                self.fault = None;
                self.steps.clear();
                return Some(Err(ProviderError::Injected("error after streaming".into())));
            }
            _ => {}
        }
        let event = self.steps.pop_front()?;
        if event.is_content() {
            if self.started && !self.pace.is_zero() {
                tokio::time::sleep(self.pace).await;
            }
            self.started = true;
            self.sent_content += 1;
        }
        Some(Ok(event))
    }
}
