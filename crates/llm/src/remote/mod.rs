//! Gemini, OpenAI-compatible and Anthropic models through the `genai` crate:
//! it builds each provider's request and parses its stream; this module maps
//! our request to it, its events to ours and its errors to [`ProviderError`].

mod classify;
mod translate;

use std::sync::Arc;

use futures_util::StreamExt;
use genai::adapter::AdapterKind;
use genai::chat::{
    ChatMessage, ChatOptions, ChatRequest as GenaiRequest, ContentPart, MessageContent,
    ReasoningEffort, Tool, ToolCall as GenaiToolCall, ToolResponse,
};
use genai::resolver::{AuthData, Endpoint};
use genai::{Client, ModelIden, ServiceTarget};

use crate::ProviderError;
use crate::config::ProviderKind;
use crate::event::EventStream;
use crate::provider::Provider;
use crate::request::{ChatRequest, Message};
use crate::secret::ApiKey;
use crate::tokens::TokenCounter;

pub(crate) use classify::Redactor;

/// One provider endpoint reached over HTTP.
pub struct RemoteProvider {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    kind: ProviderKind,
    auth: Auth,
    reasoning: Option<ReasoningEffort>,
    tokens: TokenCounter,
    redactor: Redactor,
}

enum Auth {
    /// Through the provider config: the key is sent the provider's way.
    Key,
    /// No credential at all: the request goes to this URL with no auth header.
    Anonymous { url: String },
}

/// Why a remote provider cannot be set up.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RemoteSetupError {
    #[error("the demo model is not a remote provider")]
    NotRemote,
    #[error("an API key is required (set api_key_env)")]
    MissingApiKey,
    #[error("unknown reasoning_effort {0:?}")]
    UnknownReasoningEffort(String),
    #[error("could not build the provider client: {0}")]
    Client(String),
}

/// How to reach a remote model.
pub struct RemoteSettings {
    pub kind: ProviderKind,
    /// Ends with `/`; `None` is the provider's public endpoint.
    pub base_url: Option<String>,
    pub api_key: Option<ApiKey>,
    pub reasoning_effort: Option<String>,
}

impl RemoteProvider {
    /// `http` is the process's shared client (our TLS stack, pooled connections).
    pub fn new(
        http: reqwest::Client,
        settings: RemoteSettings,
        tokens: TokenCounter,
    ) -> Result<Self, RemoteSetupError> {
        let adapter = adapter_kind(settings.kind)?;
        let base_url = settings.base_url.map(|url| {
            if url.ends_with('/') {
                url
            } else {
                format!("{url}/")
            }
        });
        let reasoning = match settings.reasoning_effort.as_deref() {
            None => None,
            Some(word) => Some(
                ReasoningEffort::from_keyword(word)
                    .ok_or_else(|| RemoteSetupError::UnknownReasoningEffort(word.to_owned()))?,
            ),
        };
        let redactor = Redactor::new(settings.api_key.as_ref());
        let mut builder = Client::builder()
            .with_reqwest(http)
            .with_adapter_kind(adapter);
        let auth = match (settings.api_key, base_url) {
            (Some(key), base) => {
                let auth = AuthData::from_single(key.expose().to_owned());
                builder = match base {
                    Some(base) => {
                        builder.append_provider_config(adapter, (Endpoint::from_owned(base), auth))
                    }
                    None => builder.append_provider_config(adapter, auth),
                };
                Auth::Key
            }
            (None, Some(base)) if adapter == AdapterKind::OpenAI => {
                let url = format!("{base}chat/completions");
                builder = builder.append_provider_config(adapter, Endpoint::from_owned(base));
                Auth::Anonymous { url }
            }
            (None, _) => return Err(RemoteSetupError::MissingApiKey),
        };
        let client = builder
            .build()
            .map_err(|e| RemoteSetupError::Client(e.to_string()))?;
        Ok(RemoteProvider {
            inner: Arc::new(Inner {
                client,
                kind: settings.kind,
                auth,
                reasoning,
                tokens,
                redactor,
            }),
        })
    }
}

fn adapter_kind(kind: ProviderKind) -> Result<AdapterKind, RemoteSetupError> {
    match kind {
        ProviderKind::Openai | ProviderKind::Ollama => Ok(AdapterKind::OpenAI),
        ProviderKind::Gemini => Ok(AdapterKind::Gemini),
        ProviderKind::Anthropic => Ok(AdapterKind::Anthropic),
        ProviderKind::Demo => Err(RemoteSetupError::NotRemote),
    }
}

impl Provider for RemoteProvider {
    fn stream(&self, request: ChatRequest) -> EventStream {
        let inner = Arc::clone(&self.inner);
        let opening = async move {
            let adapter =
                adapter_kind(inner.kind).map_err(|e| ProviderError::Config(e.to_string()))?;
            let model = ModelIden::new(adapter, request.model.as_str());
            // Every wire frame, even one that yields no event (a role-only
            // chunk, a usage chunk), counts as activity for the idle timeout.
            let frames = Arc::new(tokio::sync::Notify::new());
            let frame_signal = Arc::clone(&frames);
            let mut options = ChatOptions::default()
                .with_raw_frame_fn(move |_, _| frame_signal.notify_one())
                .with_capture_usage(true)
                .with_capture_tool_calls(true)
                .with_max_tokens(request.max_output_tokens);
            if let Some(effort) = &inner.reasoning {
                options = options.with_reasoning_effort(effort.clone());
            }
            let genai_request = to_genai(&request);
            let result = match &inner.auth {
                Auth::Key => {
                    inner
                        .client
                        .exec_chat_stream(model, genai_request, Some(&options))
                        .await
                }
                Auth::Anonymous { url } => {
                    let target = ServiceTarget {
                        endpoint: Endpoint::from_owned(url.clone()),
                        auth: AuthData::RequestOverride {
                            url: url.clone(),
                            headers: Default::default(),
                        },
                        model,
                    };
                    inner
                        .client
                        .exec_chat_stream(target, genai_request, Some(&options))
                        .await
                }
            };
            let response = result.map_err(|e| classify::error(&e, &inner.redactor))?;
            Ok(translate::Translation::new(
                response.stream,
                frames,
                request,
                inner.tokens.clone(),
                inner.redactor.clone(),
            ))
        };
        Box::pin(
            futures_util::stream::once(opening)
                .map(|opened| match opened {
                    Ok(translation) => translation.into_stream(),
                    Err(error) => futures_util::stream::once(async move { Err(error) }).boxed(),
                })
                .flatten(),
        )
    }
}

/// Our request in genai's terms.
fn to_genai(request: &ChatRequest) -> GenaiRequest {
    let messages = request.messages.iter().map(to_genai_message).collect();
    let mut out = GenaiRequest::new(messages);
    out.system = request.system.clone();
    if !request.tools.is_empty() {
        out = out.with_tools(request.tools.iter().map(|tool| {
            Tool::new(tool.name.clone())
                .with_description(tool.description.clone())
                .with_schema(tool.input_schema.clone())
        }));
    }
    out
}

fn to_genai_message(message: &Message) -> ChatMessage {
    match message {
        Message::User { name, text } => {
            ChatMessage::user(Message::user_text_with_name(name.as_deref(), text))
        }
        Message::Assistant { text, tool_calls } if tool_calls.is_empty() => {
            ChatMessage::assistant(text.clone())
        }
        Message::Assistant { text, tool_calls } => {
            let mut parts = Vec::with_capacity(tool_calls.len() + 1);
            if !text.is_empty() {
                parts.push(ContentPart::Text(text.clone()));
            }
            parts.extend(tool_calls.iter().map(|call| {
                ContentPart::ToolCall(GenaiToolCall {
                    call_id: call.id.clone(),
                    fn_name: call.name.clone(),
                    fn_arguments: call.arguments.clone(),
                    thought_signatures: None,
                })
            }));
            ChatMessage::assistant(MessageContent::from_parts(parts))
        }
        Message::ToolResult(result) => {
            // Not every provider has an error flag for tool results; the text says it.
            let content = if result.is_error {
                format!("error: {}", result.content)
            } else {
                result.content.clone()
            };
            ChatMessage::tool(
                ToolResponse::new(result.call_id.clone(), content)
                    .with_fn_name(result.name.clone()),
            )
        }
    }
}
