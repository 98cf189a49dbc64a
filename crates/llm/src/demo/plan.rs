//! What the demo model answers: a pure function of the request.

use serde_json::{Value, json};

use super::faults::Fault;
use crate::event::FinishReason;
use crate::request::{ChatRequest, Message, ToolCall, ToolResult};

pub(super) struct Plan {
    pub reasoning: String,
    pub text: String,
    pub calls: Vec<ToolCall>,
    pub finish: FinishReason,
}

/// Words of each line kept in a summary.
const SUMMARY_WORDS_PER_LINE: usize = 8;
/// Lines a summary covers at most (the newest are kept).
const SUMMARY_MAX_LINES: usize = 40;
/// Words of the user's message echoed back.
const ECHO_WORDS: usize = 24;

pub(super) fn plan(request: &ChatRequest, fault: Option<&Fault>) -> Plan {
    let last_user = request.last_user_text().unwrap_or("");
    if matches!(fault, Some(Fault::ToolLoop))
        && let Some(call) = loop_call(request)
    {
        return calling("I will call the tool again, as told.", call);
    }
    let results = results_since_last_user(request);
    if !results.is_empty() {
        return answer_from_results(request, &results);
    }
    if let Some((tool, arguments)) = named_call(request, last_user) {
        let call = new_call(request, &tool, arguments);
        return calling(&format!("I am asked to call the {tool} tool; I will."), call);
    }
    if asks_for_summary(request) {
        return summary(request);
    }
    if offers(request, "calculator")
        && let Some(expression) = arithmetic(last_user)
    {
        let call = new_call(request, "calculator", json!({ "expression": expression }));
        return calling(
            &format!("This is arithmetic: {expression}. I will use the calculator tool."),
            call,
        );
    }
    if offers(request, "clock") && asks_for_time(last_user) {
        let arguments = match timezone(last_user) {
            Some(zone) => json!({ "timezone": zone }),
            None => json!({}),
        };
        return calling(
            "The user asks for the time. I will call the clock tool.",
            new_call(request, "clock", arguments),
        );
    }
    echo(request, last_user)
}

fn calling(reasoning: &str, call: ToolCall) -> Plan {
    Plan {
        reasoning: reasoning.to_owned(),
        text: String::new(),
        calls: vec![call],
        finish: FinishReason::ToolCalls,
    }
}

fn stop(reasoning: String, text: String) -> Plan {
    Plan {
        reasoning,
        text,
        calls: Vec::new(),
        finish: FinishReason::Stop,
    }
}

fn offers(request: &ChatRequest, tool: &str) -> bool {
    request.tools.iter().any(|t| t.name == tool)
}

/// A call id unique within the conversation.
fn new_call(request: &ChatRequest, name: &str, arguments: Value) -> ToolCall {
    let earlier: usize = request
        .messages
        .iter()
        .map(|m| match m {
            Message::Assistant { tool_calls, .. } => tool_calls.len(),
            _ => 0,
        })
        .sum();
    ToolCall {
        id: format!("demo-call-{}", earlier + 1),
        name: name.to_owned(),
        arguments,
    }
}

/// For `[fault:tool-loop]`: the last call again, else a first clock or calculator call.
fn loop_call(request: &ChatRequest) -> Option<ToolCall> {
    let last = request.messages.iter().rev().find_map(|m| match m {
        Message::Assistant { tool_calls, .. } => tool_calls.last(),
        _ => None,
    });
    if let Some(last) = last {
        return Some(new_call(request, &last.name, last.arguments.clone()));
    }
    let tool = request.tools.first()?;
    Some(new_call(request, &tool.name, json!({})))
}

fn results_since_last_user(request: &ChatRequest) -> Vec<&ToolResult> {
    let mut results: Vec<&ToolResult> = request
        .messages
        .iter()
        .rev()
        .take_while(|m| !matches!(m, Message::User { .. }))
        .filter_map(|m| match m {
            Message::ToolResult(result) => Some(result),
            _ => None,
        })
        .collect();
    results.reverse();
    results
}

fn answer_from_results(request: &ChatRequest, results: &[&ToolResult]) -> Plan {
    let call_arguments = |id: &str| {
        request.messages.iter().find_map(|m| match m {
            Message::Assistant { tool_calls, .. } => {
                tool_calls.iter().find(|c| c.id == id).map(|c| &c.arguments)
            }
            _ => None,
        })
    };
    let sentences: Vec<String> = results
        .iter()
        .map(|result| {
            let content = result.content.trim();
            if result.is_error {
                return format!("The {} tool failed: {content}.", result.name);
            }
            match result.name.as_str() {
                "clock" => format!("It is {content}."),
                "calculator" => {
                    let expression = call_arguments(&result.call_id)
                        .and_then(|a| a.get("expression"))
                        .and_then(Value::as_str)
                        .unwrap_or("the result");
                    // The number alone, and the expression as code: Markdown
                    // would read `6*7*8` as emphasis.
                    let result = serde_json::from_str::<Value>(content)
                        .ok()
                        .and_then(|v| v.get("result").map(Value::to_string))
                        .unwrap_or_else(|| content.to_owned());
                    format!("`{expression}` = {result}.")
                }
                other => format!("{other} says: {content}."),
            }
        })
        .collect();
    stop(
        "The tool answered; I will reply with its result.".into(),
        sentences.join(" "),
    )
}

/// "call <tool>" or "use <tool>" naming an offered tool (any tool: the
/// client's own included), with the first JSON object of the text as its
/// arguments (`{}` without one). Lets tests ask for any call by name.
fn named_call(request: &ChatRequest, text: &str) -> Option<(String, Value)> {
    let lower = text.to_lowercase();
    let tool = request
        .tools
        .iter()
        .filter(|t| {
            let name = t.name.to_lowercase();
            ["call ", "use "].iter().any(|verb| {
                lower.match_indices(&format!("{verb}{name}")).any(|(i, m)| {
                    let before = lower[..i].chars().next_back();
                    let after = lower[i + m.len()..].chars().next();
                    before.is_none_or(|c| !c.is_alphanumeric())
                        && after.is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '-'))
                })
            })
        })
        .max_by_key(|t| t.name.len())?;
    let arguments = text
        .find('{')
        .and_then(|start| {
            let mut stream =
                serde_json::Deserializer::from_str(&text[start..]).into_iter::<Value>();
            stream.next().and_then(Result::ok)
        })
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    Some((tool.name.clone(), arguments))
}

fn asks_for_summary(request: &ChatRequest) -> bool {
    let asks = |text: &str| {
        let text = text.to_lowercase();
        text.contains("summarize") || text.contains("summarise") || text.contains("summary of")
    };
    request.system.as_deref().is_some_and(asks) || request.last_user_text().is_some_and(asks)
}

/// A deterministic summary: each earlier line, cut to its first words.
fn summary(request: &ChatRequest) -> Plan {
    let mut lines: Vec<String> = Vec::new();
    for message in &request.messages {
        let (name, text) = match message {
            Message::User { name, text } => (name.clone(), text.as_str()),
            Message::Assistant { text, .. } => (Some("assistant".to_owned()), text.as_str()),
            Message::ToolResult(_) => continue,
        };
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let lower = line.to_lowercase();
            if lower.contains("summarize") || lower.contains("summarise") {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            let mut short = words[..words.len().min(SUMMARY_WORDS_PER_LINE)].join(" ");
            if words.len() > SUMMARY_WORDS_PER_LINE {
                short.push('…');
            }
            lines.push(match &name {
                Some(name) => format!("{name}: {short}"),
                None => short,
            });
        }
    }
    let total = lines.len();
    let kept = &lines[total.saturating_sub(SUMMARY_MAX_LINES)..];
    let text = if kept.is_empty() {
        "Summary: nothing was said yet.".to_owned()
    } else {
        format!("Summary of {total} lines: {}.", kept.join("; "))
    };
    stop(
        format!("I am asked to summarize {total} lines; I will shorten each."),
        text,
    )
}

fn asks_for_time(text: &str) -> bool {
    let text = text.to_lowercase();
    [
        "what time",
        "the time",
        "time is it",
        "current time",
        "time now",
        "what day",
        "the date",
        "what date",
        "today's date",
    ]
    .iter()
    .any(|hint| text.contains(hint))
}

/// An IANA zone (`Europe/Paris`) or `UTC` named in the text.
fn timezone(text: &str) -> Option<String> {
    text.split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| {
                !(c.is_alphanumeric() || c == '/' || c == '_' || c == '+' || c == '-')
            })
        })
        .find(|w| {
            let zone = w.split_once('/').is_some_and(|(a, b)| {
                a.chars().next().is_some_and(char::is_alphabetic)
                    && b.chars().next().is_some_and(char::is_alphabetic)
            });
            zone || w.eq_ignore_ascii_case("utc")
        })
        .map(str::to_owned)
}

/// The longest run of digits, operators, spaces and brackets holding at
/// least one digit and one operator between operands, e.g. `12*(3+4)`.
pub(super) fn arithmetic(text: &str) -> Option<String> {
    let allowed = |c: char| c.is_ascii_digit() || " .+-*/()^%".contains(c);
    let mut best: Option<&str> = None;
    for run in text.split(|c: char| !allowed(c)) {
        let run = run
            .trim()
            .trim_end_matches(['+', '-', '*', '/', '^', '%', '.'])
            .trim();
        let has_digit = run.chars().any(|c| c.is_ascii_digit());
        let operator = run
            .char_indices()
            .any(|(i, c)| "+-*/^%".contains(c) && i > 0);
        let balanced = run.matches('(').count() == run.matches(')').count();
        if has_digit && operator && balanced && best.is_none_or(|b| run.len() > b.len()) {
            best = Some(run);
        }
    }
    best.map(str::to_owned)
}

fn echo(request: &ChatRequest, last_user: &str) -> Plan {
    let name = request.messages.iter().rev().find_map(|m| match m {
        Message::User { name, .. } => Some(name.clone()),
        _ => None,
    });
    let words: Vec<&str> = last_user.split_whitespace().collect();
    if words.is_empty() {
        return stop(
            "There is no message to answer.".into(),
            "I have nothing to answer yet.".into(),
        );
    }
    let mut quoted = words[..words.len().min(ECHO_WORDS)].join(" ");
    if words.len() > ECHO_WORDS {
        quoted.push('…');
    }
    let greeting = match name.flatten() {
        Some(name) => format!("Hello {name}! "),
        None => "Hello! ".to_owned(),
    };
    let text = format!(
        "{greeting}You wrote {} words: \"{quoted}\". I am the offline demo model: ask me the time, some \
         arithmetic such as 12*(3+4), or for a summary. Configure a real model in [[agents.models]] for real answers.",
        words.len()
    );
    stop(
        format!(
            "The message has {} words and asks for nothing I can compute; I will echo it.",
            words.len()
        ),
        text,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_arithmetic_in_prose() {
        assert_eq!(arithmetic("what is 12*(3+4)?").as_deref(), Some("12*(3+4)"));
        assert_eq!(arithmetic("and 2 + 2").as_deref(), Some("2 + 2"));
        assert_eq!(
            arithmetic("compute (1.5 - 0.5) / 2 please").as_deref(),
            Some("(1.5 - 0.5) / 2")
        );
        assert_eq!(arithmetic("I have 3 apples"), None);
        assert_eq!(arithmetic("well-known"), None);
        assert_eq!(arithmetic("-5"), None);
    }

    #[test]
    fn calls_a_tool_named_in_the_text() {
        let tool = |name: &str| crate::request::ToolDefinition {
            name: name.into(),
            description: String::new(),
            input_schema: json!({"type": "object"}),
        };
        let request = |text: &str| ChatRequest {
            model: "demo".into(),
            system: None,
            messages: vec![Message::user(text)],
            tools: vec![tool("clock"), tool("change_background")],
            max_output_tokens: 100,
        };
        let plan = plan(
            &request(r#"Please call change_background with {"color": "blue"} now"#),
            None,
        );
        assert_eq!(plan.calls.len(), 1);
        assert_eq!(plan.calls[0].name, "change_background");
        assert_eq!(plan.calls[0].arguments, json!({"color": "blue"}));
        assert_eq!(plan.finish, FinishReason::ToolCalls);
        let plan = super::plan(&request("use clock"), None);
        assert_eq!(
            (plan.calls[0].name.as_str(), &plan.calls[0].arguments),
            ("clock", &json!({}))
        );
        assert!(super::plan(&request("recall change_backgrounds"), None)
            .calls
            .is_empty());
        assert!(super::plan(&request("call paint"), None).calls.is_empty());
    }

    #[test]
    fn finds_time_zones() {
        assert_eq!(
            timezone("what time is it in Europe/Paris?").as_deref(),
            Some("Europe/Paris")
        );
        assert_eq!(timezone("time in UTC please").as_deref(), Some("UTC"));
        assert_eq!(timezone("what time is it"), None);
        assert_eq!(timezone("is 3/4 a time"), None);
    }
}
