//! The configured models, built into providers once at start.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{
    FaultInjection, ModelConfig, ModelConfigError, Prices, ProviderKind, Resilience,
};
use crate::demo::{DemoFaults, DemoProvider};
use crate::event::{EventStream, Usage};
use crate::provider::Provider;
use crate::remote::{RemoteProvider, RemoteSettings, RemoteSetupError};
use crate::request::{ChatRequest, ToolDefinition};
use crate::resilience::{self, Target};
use crate::secret::SecretSource;
use crate::tokens::TokenCounter;

/// What building providers needs from the composition root.
pub struct ModelsContext<'a> {
    /// The process's HTTP client (one TLS stack, pooled connections).
    pub http: reqwest::Client,
    pub tokens: TokenCounter,
    pub resilience: Resilience,
    pub faults: FaultInjection,
    /// Where `api_key_env` variables are read.
    pub secrets: &'a dyn SecretSource,
}

/// Every model agents may use, by configured name.
#[derive(Clone)]
pub struct Models {
    models: Vec<Model>,
    by_name: HashMap<String, usize>,
}

/// One configured model with its provider, ready to stream.
#[derive(Clone)]
pub struct Model {
    config: Arc<ModelConfig>,
    provider: Arc<dyn Provider>,
    /// The fallback's provider and limits, resolved at build time.
    fallback: Option<Target>,
    resilience: Resilience,
}

impl Models {
    /// Validates the configuration and builds a provider per model. No
    /// configured model means the offline demo model alone, named `demo`.
    pub fn build(
        configs: &[ModelConfig],
        context: &ModelsContext<'_>,
    ) -> Result<Models, ModelConfigError> {
        let demo = [ModelConfig::demo()];
        let configs = if configs.is_empty() {
            &demo[..]
        } else {
            configs
        };
        validate(configs, context.faults)?;
        let mut providers = Vec::with_capacity(configs.len());
        for config in configs {
            providers.push((config.clone(), build_provider(config, context)?));
        }
        Ok(Models::with_providers(
            providers,
            context.resilience.clone(),
        ))
    }

    /// Models over providers made elsewhere (e.g. a test's scripted provider).
    /// Fallback names that match no entry are ignored.
    pub fn with_providers(
        entries: Vec<(ModelConfig, Arc<dyn Provider>)>,
        resilience: Resilience,
    ) -> Models {
        let by_name: HashMap<String, usize> = entries
            .iter()
            .enumerate()
            .map(|(index, (config, _))| (config.name.clone(), index))
            .collect();
        let models = entries
            .iter()
            .map(|(config, provider)| {
                let fallback = config
                    .fallback
                    .as_ref()
                    .and_then(|name| by_name.get(name))
                    .map(|&index| {
                        let (fallback, provider) = &entries[index];
                        target(fallback, provider)
                    });
                Model {
                    config: Arc::new(config.clone()),
                    provider: Arc::clone(provider),
                    fallback,
                    resilience: resilience.clone(),
                }
            })
            .collect();
        Models { models, by_name }
    }

    pub fn get(&self, name: &str) -> Option<&Model> {
        self.by_name.get(name).map(|&index| &self.models[index])
    }

    /// The configured names, in configuration order (`allowed_models`).
    pub fn names(&self) -> Vec<String> {
        self.models.iter().map(|m| m.config.name.clone()).collect()
    }

    /// The first configured model: the one an agent without a model gets.
    pub fn default_model(&self) -> &Model {
        // `build` and `with_providers` callers always have at least one.
        &self.models[0]
    }

    /// What `usage` cost on the named model (e.g. the fallback a stream
    /// switched to); `None` for an unknown name.
    pub fn cost(&self, model: &str, usage: &Usage) -> Option<f64> {
        self.get(model).map(|m| m.prices().cost(usage))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Model> {
        self.models.iter()
    }

    pub fn len(&self) -> usize {
        self.models.len()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }
}

fn target(config: &ModelConfig, provider: &Arc<dyn Provider>) -> Target {
    Target {
        name: config.name.clone(),
        model_id: config.model.clone(),
        max_output_tokens: config.max_output_tokens,
        provider: Arc::clone(provider),
    }
}

impl Model {
    /// The configured name agents use.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn provider_kind(&self) -> ProviderKind {
        self.config.provider
    }

    /// The provider's model id.
    pub fn model_id(&self) -> &str {
        &self.config.model
    }

    pub fn context_window(&self) -> u32 {
        self.config.context_window
    }

    pub fn max_output_tokens(&self) -> u32 {
        self.config.max_output_tokens
    }

    pub fn prices(&self) -> Prices {
        self.config.prices()
    }

    pub fn fallback(&self) -> Option<&str> {
        self.fallback.as_ref().map(|t| t.name.as_str())
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Tokens left for the system prompt and the history: the context window
    /// minus the output budget, the tool schemas and a 10 % margin (token
    /// counts are estimates for most providers).
    pub fn prompt_budget(&self, tokens: &TokenCounter, tools: &[ToolDefinition]) -> usize {
        let window = self.config.context_window as usize;
        window
            .saturating_sub(self.config.max_output_tokens as usize)
            .saturating_sub(tokens.tools(tools))
            .saturating_sub(window / 10)
    }

    /// An empty request for this model: the caller adds system, messages and tools.
    pub fn request(&self) -> ChatRequest {
        ChatRequest {
            model: self.config.model.clone(),
            system: None,
            messages: Vec::new(),
            tools: Vec::new(),
            max_output_tokens: self.config.max_output_tokens,
        }
    }

    /// Streams an answer with timeouts, retries and the fallback switch.
    pub fn stream(&self, request: ChatRequest) -> EventStream {
        let mut targets = vec![target(&self.config, &self.provider)];
        targets.extend(self.fallback.clone());
        resilience::stream(request, targets, self.resilience.clone())
    }
}

fn validate(configs: &[ModelConfig], faults: FaultInjection) -> Result<(), ModelConfigError> {
    let mut seen = std::collections::HashSet::new();
    for config in configs {
        let name = &config.name;
        if name.trim().is_empty() || name.chars().count() > 100 {
            return Err(ModelConfigError::BadName);
        }
        if !seen.insert(name.clone()) {
            return Err(ModelConfigError::DuplicateName(name.clone()));
        }
        let invalid = |field: &'static str, problem: &str| ModelConfigError::Invalid {
            model: name.clone(),
            field,
            problem: problem.to_owned(),
        };
        if config.provider != ProviderKind::Demo && config.model.trim().is_empty() {
            return Err(ModelConfigError::MissingModelId(name.clone()));
        }
        let keyless = config.api_key_env.is_none();
        match config.provider {
            ProviderKind::Gemini | ProviderKind::Anthropic if keyless => {
                return Err(invalid(
                    "api_key_env",
                    "is required for gemini and anthropic",
                ));
            }
            ProviderKind::Openai if keyless && config.base_url.is_none() => {
                return Err(invalid(
                    "api_key_env",
                    "is required unless base_url names a local server",
                ));
            }
            _ => {}
        }
        if config.context_window == 0 {
            return Err(invalid("context_window", "must be positive"));
        }
        if config.max_output_tokens == 0 || config.max_output_tokens >= config.context_window {
            return Err(invalid(
                "max_output_tokens",
                "must be positive and below context_window",
            ));
        }
        for (field, price) in [
            ("input_price_per_million", config.input_price_per_million),
            ("output_price_per_million", config.output_price_per_million),
        ] {
            if !price.is_finite() || price < 0.0 {
                return Err(invalid(field, "must be a non-negative number"));
            }
        }
        if config.provider == ProviderKind::Demo
            && (!config.tokens_per_second.is_finite() || config.tokens_per_second < 0.0)
        {
            return Err(invalid("tokens_per_second", "must be 0 (unpaced) or more"));
        }
        if config.faults
            && (config.provider != ProviderKind::Demo || faults != FaultInjection::Allowed)
        {
            return Err(ModelConfigError::FaultsNotAllowed(name.clone()));
        }
        if let Some(url) = &config.base_url
            && reqwest::Url::parse(url)
                .map(|u| !matches!(u.scheme(), "http" | "https"))
                .unwrap_or(true)
        {
            return Err(invalid("base_url", "must be an http or https URL"));
        }
        match &config.fallback {
            Some(fallback) if fallback == name => {
                return Err(ModelConfigError::FallbackToSelf(name.clone()));
            }
            Some(fallback) if !configs.iter().any(|c| &c.name == fallback) => {
                return Err(ModelConfigError::UnknownFallback {
                    model: name.clone(),
                    fallback: fallback.clone(),
                });
            }
            _ => {}
        }
    }
    Ok(())
}

fn build_provider(
    config: &ModelConfig,
    context: &ModelsContext<'_>,
) -> Result<Arc<dyn Provider>, ModelConfigError> {
    if config.provider == ProviderKind::Demo {
        let pace = if config.tokens_per_second > 0.0 {
            Duration::from_secs_f64(1.0 / config.tokens_per_second)
        } else {
            Duration::ZERO
        };
        let faults = if config.faults {
            DemoFaults::Obeyed
        } else {
            DemoFaults::Ignored
        };
        return Ok(Arc::new(DemoProvider::new(
            context.tokens.clone(),
            pace,
            faults,
        )));
    }
    let api_key = match &config.api_key_env {
        Some(env) => {
            Some(
                context
                    .secrets
                    .get(env)
                    .ok_or_else(|| ModelConfigError::MissingApiKey {
                        model: config.name.clone(),
                        env: env.clone(),
                    })?,
            )
        }
        None => None,
    };
    let base_url = match (config.provider, &config.base_url) {
        (_, Some(url)) => Some(url.clone()),
        // Ollama's OpenAI-compatible endpoint on this machine.
        (ProviderKind::Ollama, None) => Some("http://127.0.0.1:11434/v1/".to_owned()),
        (_, None) => None,
    };
    let settings = RemoteSettings {
        kind: config.provider,
        base_url,
        api_key,
        reasoning_effort: config.reasoning_effort.clone(),
    };
    let provider = RemoteProvider::new(context.http.clone(), settings, context.tokens.clone())
        .map_err(|error| {
            let field = match error {
                RemoteSetupError::UnknownReasoningEffort(_) => "reasoning_effort",
                RemoteSetupError::MissingApiKey => "api_key_env",
                RemoteSetupError::NotRemote | RemoteSetupError::Client(_) => "provider",
            };
            ModelConfigError::Invalid {
                model: config.name.clone(),
                field,
                problem: error.to_string(),
            }
        })?;
    Ok(Arc::new(provider))
}
