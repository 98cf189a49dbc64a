//! The `calculator` tool: evaluates one arithmetic expression.

use async_trait::async_trait;
use serde_json::{Map, Number, Value, json};
use tokio_util::sync::CancellationToken;

use super::arithmetic::{self, MAX_CHARS};
use crate::tool::{Outcome, Tool, ToolResult, ToolSchema};

pub struct Calculator {
    schema: ToolSchema,
}

const DESCRIPTION: &str = "Evaluates an arithmetic expression exactly as written and returns the number. \
Supports + - * / (also \u{00d7} \u{00f7}), % (remainder: 10 % 3 = 1), ^ or ** (power, right-associative, \
binding tighter than a leading minus: -2^2 = -4), parentheses, unary minus, decimals and 1e3 notation. \
No variables or functions. Results are rounded to 12 significant digits.";

impl Calculator {
    pub fn new() -> Self {
        let schema = json!({
            "type": "object",
            "properties": {
                "expression": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_CHARS,
                    "description": "The expression, e.g. \"12*(3+4)\" or \"2^10 % 7\"."
                }
            },
            "required": ["expression"],
            "additionalProperties": false
        });
        Self { schema: ToolSchema::new(schema).unwrap_or_else(|e| unreachable!("the calculator schema is valid: {e}")) }
    }
}

impl Default for Calculator {
    fn default() -> Self {
        Self::new()
    }
}

/// Integers as JSON integers while exact in `f64`; anything else to 12
/// significant digits, so `0.1 + 0.2` answers `0.3`.
pub(crate) fn to_json_number(v: f64) -> Value {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if v.fract() == 0.0 && v.abs() < EXACT {
        return Value::Number(Number::from(v as i64));
    }
    let rounded: f64 = format!("{v:.11e}").parse().unwrap_or(v);
    Number::from_f64(rounded).map_or(Value::Null, Value::Number)
}

#[async_trait]
impl Tool for Calculator {
    fn name(&self) -> &str {
        "calculator"
    }

    fn description(&self) -> &str {
        DESCRIPTION
    }

    fn schema(&self) -> &ToolSchema {
        &self.schema
    }

    async fn call(&self, arguments: Map<String, Value>, _cancel: CancellationToken) -> ToolResult {
        let Some(expression) = arguments.get("expression").and_then(Value::as_str) else {
            return ToolResult::error(Outcome::InvalidArguments, "\"expression\" must be a string");
        };
        match arithmetic::evaluate(expression) {
            Ok(v) => ToolResult::ok(json!({ "expression": expression, "result": to_json_number(v) })),
            Err(e) => ToolResult::error(Outcome::ToolError, e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn call(expr: &str) -> ToolResult {
        let args = json!({ "expression": expr });
        Calculator::new().call(args.as_object().unwrap().clone(), CancellationToken::new()).await
    }

    #[tokio::test]
    async fn answers_and_errors() {
        let r = call("12*(3+4)").await;
        assert_eq!(r, ToolResult::ok(json!({"expression": "12*(3+4)", "result": 84})));
        assert_eq!(r.text(), r#"{"expression":"12*(3+4)","result":84}"#);
        assert_eq!(call("0.1 + 0.2").await.content["result"], json!(0.3));
        assert_eq!(call("1 / 3").await.content["result"], json!(0.333333333333));
        assert_eq!(call("2 ^ 64").await.content["result"], json!(1.84467440737e19));
        assert_eq!(call("-2.5 * 2").await.content["result"], json!(-5));
        let e = call("1/0").await;
        assert_eq!(e, ToolResult::error(Outcome::ToolError, "division by zero"));
        assert_eq!(call("10^999").await.text(), "the result is too large");
    }

    #[test]
    fn numbers_are_compact() {
        assert_eq!(to_json_number(3.0), json!(3));
        assert_eq!(to_json_number(-0.5), json!(-0.5));
        assert_eq!(to_json_number(1e300), json!(1e300));
        assert_eq!(to_json_number(2.0f64.powi(53)), json!(9.00719925474e15));
    }
}
