//! Model configuration: parsing, validation, the demo default, keys, cost.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a failure should stop the test where it happens.

mod common;

use chorus_llm::{
    FaultInjection, ModelConfig, ModelConfigError, Models, ModelsContext, Prices, ProviderKind,
    Resilience, SecretMap, Usage,
};
use chorus_llm_mock::{MockServer, Script, Wire};
use common::*;
use serde::Deserialize;

fn try_build(configs: &[ModelConfig]) -> Result<Models, ModelConfigError> {
    Models::build(
        configs,
        &ModelsContext {
            http: http(),
            tokens: tokens(),
            resilience: Resilience::default(),
            faults: FaultInjection::Refused,
            secrets: &secrets(),
        },
    )
}

fn openai(name: &str) -> ModelConfig {
    ModelConfig {
        name: name.into(),
        provider: ProviderKind::Openai,
        model: "gpt-test".into(),
        api_key_env: Some("MOCK_API_KEY".into()),
        context_window: 16_000,
        max_output_tokens: 1000,
        ..ModelConfig::demo()
    }
}

#[derive(Deserialize)]
struct Agents {
    models: Vec<ModelConfig>,
    #[serde(default)]
    resilience: Resilience,
}

#[test]
fn parses_the_toml_the_server_embeds() {
    let agents: Agents = toml::from_str(
        r#"
        [resilience]
        first_byte_timeout = "20s"
        idle_timeout = "45s"

        [[models]]
        name = "gpt"
        provider = "openai"
        model = "gpt-4o-mini"
        api_key_env = "OPENAI_API_KEY"
        context_window = 128000
        max_output_tokens = 2048
        input_price_per_million = 0.15
        output_price_per_million = 0.6
        fallback = "local"

        [[models]]
        name = "local"
        provider = "openai"
        model = "qwen2.5"
        base_url = "http://127.0.0.1:8000/v1/"

        [[models]]
        name = "claude"
        provider = "anthropic"
        model = "claude-sonnet-4-5"
        api_key_env = "ANTHROPIC_API_KEY"
        reasoning_effort = "low"

        [[models]]
        name = "demo"
        provider = "demo"
        tokens_per_second = 50
        "#,
    )
    .unwrap();
    assert_eq!(
        agents.resilience.first_byte_timeout,
        std::time::Duration::from_secs(20)
    );
    assert_eq!(agents.resilience.max_retries, 3);
    assert_eq!(agents.models.len(), 4);
    assert_eq!(agents.models[0].fallback.as_deref(), Some("local"));
    assert_eq!(
        agents.models[0].prices(),
        Prices {
            input_per_million: 0.15,
            output_per_million: 0.6
        }
    );
    assert_eq!(agents.models[1].api_key_env, None);
    assert_eq!(agents.models[2].provider, ProviderKind::Anthropic);
    assert_eq!(agents.models[3].provider, ProviderKind::Demo);
    assert!(!agents.models[3].faults);

    let unknown = toml::from_str::<Agents>(
        "[[models]]\nname = \"x\"\nprovider = \"demo\"\napi_key = \"sk-in-the-file\"\n",
    );
    assert!(
        unknown.is_err(),
        "an unknown key (like a key in the file) is refused"
    );
    let bad_provider =
        toml::from_str::<Agents>("[[models]]\nname = \"x\"\nprovider = \"skynet\"\n");
    assert!(bad_provider.is_err());
}

#[test]
fn no_models_means_the_demo_model() {
    let models = try_build(&[]).unwrap();
    assert_eq!(models.names(), ["demo"]);
    assert_eq!(models.default_model().provider_kind(), ProviderKind::Demo);
    assert_eq!(models.default_model().prices(), Prices::default());
}

#[test]
fn configuration_mistakes_are_refused_with_the_model_named() {
    let err = |configs: &[ModelConfig]| try_build(configs).err().expect("refused");
    assert_eq!(
        err(&[openai("a"), openai("a")]),
        ModelConfigError::DuplicateName("a".into())
    );
    assert_eq!(
        err(&[ModelConfig {
            fallback: Some("b".into()),
            ..openai("a")
        }]),
        ModelConfigError::UnknownFallback {
            model: "a".into(),
            fallback: "b".into()
        }
    );
    assert_eq!(
        err(&[ModelConfig {
            fallback: Some("a".into()),
            ..openai("a")
        }]),
        ModelConfigError::FallbackToSelf("a".into())
    );
    assert_eq!(
        err(&[ModelConfig {
            model: String::new(),
            ..openai("a")
        }]),
        ModelConfigError::MissingModelId("a".into())
    );
    assert_eq!(
        err(&[ModelConfig {
            api_key_env: Some("NOT_SET_ANYWHERE".into()),
            ..openai("a")
        }]),
        ModelConfigError::MissingApiKey {
            model: "a".into(),
            env: "NOT_SET_ANYWHERE".into()
        }
    );
    let invalid_field = |configs: &[ModelConfig]| match err(configs) {
        ModelConfigError::Invalid { field, .. } => field,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        invalid_field(&[ModelConfig {
            max_output_tokens: 16_000,
            ..openai("a")
        }]),
        "max_output_tokens"
    );
    assert_eq!(
        invalid_field(&[ModelConfig {
            input_price_per_million: -1.0,
            ..openai("a")
        }]),
        "input_price_per_million"
    );
    assert_eq!(
        invalid_field(&[ModelConfig {
            base_url: Some("ftp://x".into()),
            ..openai("a")
        }]),
        "base_url"
    );
    assert_eq!(
        invalid_field(&[ModelConfig {
            api_key_env: None,
            ..openai("a")
        }]),
        "api_key_env"
    );
    assert_eq!(
        invalid_field(&[ModelConfig {
            provider: ProviderKind::Gemini,
            api_key_env: None,
            ..openai("a")
        }]),
        "api_key_env"
    );
    assert_eq!(
        invalid_field(&[ModelConfig {
            reasoning_effort: Some("enormous".into()),
            ..openai("a")
        }]),
        "reasoning_effort"
    );
    assert_eq!(
        err(&[ModelConfig {
            name: " ".into(),
            ..openai("a")
        }]),
        ModelConfigError::BadName
    );
    // The error names the variable, never a key.
    let message = err(&[ModelConfig {
        api_key_env: Some("NOT_SET_ANYWHERE".into()),
        ..openai("a")
    }])
    .to_string();
    assert!(message.contains("NOT_SET_ANYWHERE"));
}

#[test]
fn names_follow_the_configuration_order_and_fallbacks_resolve() {
    let models = try_build(&[
        ModelConfig {
            fallback: Some("b".into()),
            ..openai("a")
        },
        openai("b"),
        ModelConfig {
            provider: ProviderKind::Ollama,
            api_key_env: None,
            model: "llama3".into(),
            ..openai("c")
        },
    ])
    .unwrap();
    assert_eq!(models.names(), ["a", "b", "c"]);
    assert_eq!(models.get("a").unwrap().fallback(), Some("b"));
    assert_eq!(models.get("b").unwrap().fallback(), None);
    assert_eq!(models.default_model().name(), "a");
    assert!(models.get("zzz").is_none());
    let request = models.get("c").unwrap().request();
    assert_eq!(
        (request.model.as_str(), request.max_output_tokens),
        ("llama3", 1000)
    );
}

#[test]
fn prompt_budget_leaves_room_for_output_tools_and_a_margin() {
    let models = try_build(&[openai("a")]).unwrap();
    let model = models.get("a").unwrap();
    // 16,000 window - 1,000 output - 1,600 margin.
    assert_eq!(model.prompt_budget(&tokens(), &[]), 13_400);
    let tools = [calculator(), clock()];
    let with_tools = model.prompt_budget(&tokens(), &tools);
    assert_eq!(with_tools, 13_400 - tokens().tools(&tools));
    assert!(with_tools < 13_400);
}

#[test]
fn cost_follows_the_prices() {
    let models = try_build(&[ModelConfig {
        input_price_per_million: 1.0,
        output_price_per_million: 4.0,
        ..openai("a")
    }])
    .unwrap();
    let usage = Usage {
        input_tokens: 2_000_000,
        output_tokens: 1_000_000,
        reasoning_tokens: None,
        estimated: false,
    };
    assert_eq!(models.cost("a", &usage), Some(6.0));
    assert_eq!(models.cost("nope", &usage), None);

    let prices = Prices {
        input_per_million: 2.0,
        output_per_million: 8.0,
    };
    let usage = Usage {
        input_tokens: 1000,
        output_tokens: 500,
        reasoning_tokens: Some(100),
        estimated: false,
    };
    assert!((prices.cost(&usage) - 0.006).abs() < 1e-12);
    let total = usage
        + Usage {
            input_tokens: 10,
            output_tokens: 5,
            reasoning_tokens: None,
            estimated: true,
        };
    assert_eq!(
        (
            total.input_tokens,
            total.output_tokens,
            total.reasoning_tokens,
            total.estimated
        ),
        (1010, 505, Some(100), true)
    );
}

#[tokio::test]
async fn a_local_server_without_a_key_gets_no_authorization_header() {
    let mock = MockServer::start().await.unwrap();
    mock.push(Script::text("local answer"));
    let config = ModelConfig {
        base_url: Some(mock.base_url(Wire::OpenAi)),
        api_key_env: None,
        ..openai("local")
    };
    let models = Models::build(
        &[config],
        &ModelsContext {
            http: http(),
            tokens: tokens(),
            resilience: Resilience::default(),
            faults: FaultInjection::Refused,
            secrets: &SecretMap::default(),
        },
    )
    .unwrap();
    let outcome = collect(
        models
            .default_model()
            .stream(request(&models, "local", "hi")),
    )
    .await;
    outcome.expect_ok();
    assert_eq!(outcome.text(), "local answer");
    let sent = &mock.requests()[0];
    assert_eq!(sent.path, "/v1/chat/completions");
    assert!(sent.headers.get("authorization").is_none());
    assert_eq!(sent.body["model"], "gpt-test");
}

/// A server that ignores the request for usage: a tiktoken estimate, marked as such.
async fn usage_is_estimated_when_the_server_reports_none(wire: Wire) {
    let mock = MockServer::start().await.unwrap();
    let models = models_on(&mock, wire);
    mock.push(Script::turn(
        chorus_llm_mock::Turn::new()
            .text("four words of text")
            .without_usage(),
    ));
    let request = request(&models, "primary", "hi");
    let outcome = collect(models.get("primary").unwrap().stream(request.clone())).await;
    outcome.expect_ok();
    let usage = outcome.usage().unwrap();
    assert!(usage.estimated, "{usage:?}");
    assert_eq!(usage.input_tokens, tokens().request(&request) as u64);
    assert_eq!(
        usage.output_tokens,
        tokens().text("four words of text") as u64
    );
}

#[tokio::test]
async fn usage_is_estimated_without_openai_usage() {
    usage_is_estimated_when_the_server_reports_none(Wire::OpenAi).await
}

#[tokio::test]
async fn usage_is_estimated_without_gemini_usage() {
    usage_is_estimated_when_the_server_reports_none(Wire::Gemini).await
}

#[tokio::test]
async fn usage_is_estimated_without_anthropic_usage() {
    usage_is_estimated_when_the_server_reports_none(Wire::Anthropic).await
}
