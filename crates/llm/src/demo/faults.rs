//! Fault directives for tests: `[fault:…]` in the last user message makes
//! the demo model fail on purpose. Obeyed only when the model is configured
//! with `faults = true`, which the server refuses unless fault injection is
//! allowed.

use std::time::Duration;

use crate::ProviderError;

/// Whether this demo model obeys fault directives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoFaults {
    Ignored,
    Obeyed,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Fault {
    /// `[fault:429]`, `[fault:500]`, `[fault:503]`, `[fault:529]`: fail at once.
    Fail(ProviderError),
    /// `[fault:stall]` (= `stall-after:0`), `[fault:stall-after:N]`: go
    /// silent after N content events.
    StallAfter(usize),
    /// `[fault:error-after:N]`: fail after N content events.
    ErrorAfter(usize),
    /// `[fault:tool-loop]`: call the same tool with the same arguments every round.
    ToolLoop,
    /// `[fault:panic]`: panic inside the stream.
    Panic,
}

pub(crate) fn parse(text: &str) -> Option<Fault> {
    let start = text.find("[fault:")?;
    let rest = &text[start + "[fault:".len()..];
    let directive = &rest[..rest.find(']')?];
    let (name, argument) = match directive.split_once(':') {
        Some((name, argument)) => (name, argument.parse::<usize>().ok()),
        None => (directive, None),
    };
    let server = |status: u16| ProviderError::Server {
        status,
        retry_after: None,
        message: "injected server error".into(),
    };
    Some(match name {
        "429" => Fault::Fail(ProviderError::RateLimited {
            retry_after: Some(Duration::from_secs(1)),
        }),
        "500" => Fault::Fail(server(500)),
        "503" => Fault::Fail(server(503)),
        "529" => Fault::Fail(server(529)),
        "stall" => Fault::StallAfter(0),
        "stall-after" => Fault::StallAfter(argument?),
        "error-after" => Fault::ErrorAfter(argument?),
        "tool-loop" => Fault::ToolLoop,
        "panic" => Fault::Panic,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_parse_and_unknown_ones_are_ignored() {
        assert_eq!(
            parse("hi [fault:stall-after:3] there"),
            Some(Fault::StallAfter(3))
        );
        assert_eq!(parse("[fault:stall]"), Some(Fault::StallAfter(0)));
        assert_eq!(parse("[fault:tool-loop]"), Some(Fault::ToolLoop));
        assert!(matches!(
            parse("[fault:429]"),
            Some(Fault::Fail(ProviderError::RateLimited { .. }))
        ));
        assert_eq!(parse("[fault:nonsense]"), None);
        assert_eq!(parse("[fault:stall-after:x]"), None);
        assert_eq!(parse("no directive"), None);
    }
}
