//! An MCP `CallToolResult` as the content a model reads.

use rmcp::model::{CallToolResult, ContentBlock, ResourceContents};
use serde_json::Value;

use crate::tool::{Outcome, ToolResult};

/// Text blocks as they are, joined by newlines; other blocks as a short
/// bracketed note (a model cannot use base64 images here). With no content
/// blocks, the structured content stands in.
pub(crate) fn to_tool_result(result: CallToolResult) -> ToolResult {
    let mut parts: Vec<String> = Vec::with_capacity(result.content.len());
    for block in result.content {
        parts.push(match block {
            ContentBlock::Text(t) => t.text,
            ContentBlock::Image(i) => format!("[{} image, {} bytes, not shown]", i.mime_type, base64_len(&i.data)),
            ContentBlock::Audio(a) => format!("[{} audio, {} bytes, not shown]", a.mime_type, base64_len(&a.data)),
            ContentBlock::Resource(r) => match r.resource {
                ResourceContents::TextResourceContents { uri, text, .. } => format!("[resource {uri}]\n{text}"),
                ResourceContents::BlobResourceContents { uri, mime_type, blob, .. } => format!(
                    "[resource {uri}, {}, {} bytes, not shown]",
                    mime_type.as_deref().unwrap_or("binary"),
                    base64_len(&blob)
                ),
                _ => "[resource, not shown]".to_owned(),
            },
            ContentBlock::ResourceLink(link) => format!("[resource link {} ({})]", link.uri, link.name),
            _ => "[content of an unsupported type, not shown]".to_owned(),
        });
    }
    let content = if !parts.is_empty() {
        Value::String(parts.join("\n"))
    } else {
        result.structured_content.unwrap_or_else(|| Value::String(String::new()))
    };
    let outcome = if result.is_error == Some(true) { Outcome::ToolError } else { Outcome::Ok };
    ToolResult { outcome, content, truncated: false }
}

fn base64_len(data: &str) -> usize {
    data.len() / 4 * 3
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> CallToolResult {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn blocks_become_text() {
        let r = to_tool_result(parse(json!({
            "content": [
                {"type": "text", "text": "hello"},
                {"type": "image", "data": "AAAA", "mimeType": "image/png"},
                {"type": "resource", "resource": {"uri": "file:///a.txt", "text": "inside"}},
                {"type": "resource_link", "uri": "file:///b", "name": "b"}
            ]
        })));
        assert_eq!(r.outcome, Outcome::Ok);
        assert_eq!(
            r.content,
            json!("hello\n[image/png image, 3 bytes, not shown]\n[resource file:///a.txt]\ninside\n[resource link file:///b (b)]")
        );
    }

    #[test]
    fn structured_content_and_errors() {
        let r = to_tool_result(parse(json!({"content": [], "structuredContent": {"sum": 3}})));
        assert_eq!(r.content, json!({"sum": 3}));
        let r = to_tool_result(parse(json!({"content": [{"type": "text", "text": "no such file"}], "isError": true})));
        assert_eq!(r, ToolResult::error(Outcome::ToolError, "no such file"));
    }
}
