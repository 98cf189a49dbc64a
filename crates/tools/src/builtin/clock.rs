//! The `clock` tool: the current date and time, in UTC, a fixed UTC offset, or
//! an IANA time zone (the database is compiled in, so it needs no files).

use std::sync::Arc;

use async_trait::async_trait;
use chorus_clock::Clock;
use jiff::Timestamp;
use jiff::tz::{Offset, TimeZone};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::tool::{Outcome, Tool, ToolResult, ToolSchema};

pub struct ClockTool {
    clock: Arc<dyn Clock>,
    schema: ToolSchema,
}

const DESCRIPTION: &str = "Returns the current date, time and weekday. Without a time zone the answer is in UTC.";

const TIMEZONE_HELP: &str = "An IANA time zone name (e.g. \"Europe/Paris\", \"America/New_York\", \"Asia/Kolkata\"), \
\"UTC\", or a UTC offset (\"+05:30\", \"-08\", \"UTC+2\"). Default: UTC.";

impl ClockTool {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        let schema = json!({
            "type": "object",
            "properties": {
                "timezone": { "type": "string", "maxLength": 64, "description": TIMEZONE_HELP }
            },
            "additionalProperties": false
        });
        let schema = ToolSchema::new(schema).unwrap_or_else(|e| unreachable!("the clock schema is valid: {e}"));
        Self { clock, schema }
    }
}

/// `+05:30`-style, always with minutes.
fn format_offset(offset: Offset) -> String {
    let secs = offset.seconds();
    let sign = if secs < 0 { '-' } else { '+' };
    let abs = secs.unsigned_abs();
    format!("{sign}{:02}:{:02}", abs / 3600, abs % 3600 / 60)
}

/// `+5`, `+05`, `+0530`, `+05:30`, `-3:30`; the sign is required.
fn parse_offset(s: &str) -> Option<Offset> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let (h, m) = match rest.split_once(':') {
        Some((h, m)) => (h, m),
        None if rest.len() == 4 => rest.split_at(2),
        None => (rest, "0"),
    };
    if h.is_empty() || h.len() > 2 || m.is_empty() || m.len() > 2 {
        return None;
    }
    if !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    if h > 14 || m > 59 || (h == 14 && m > 0) {
        return None;
    }
    Offset::from_seconds(sign * (h * 3600 + m * 60)).ok()
}

/// The zone and the name to report it by.
fn resolve(zone: &str) -> Result<(TimeZone, String), String> {
    let zone = zone.trim();
    let upper = zone.to_ascii_uppercase();
    if zone.is_empty() || matches!(upper.as_str(), "UTC" | "Z" | "GMT" | "UTC+0" | "UTC-0") {
        return Ok((TimeZone::UTC, "UTC".into()));
    }
    let bare = upper.strip_prefix("UTC").or_else(|| upper.strip_prefix("GMT")).unwrap_or(&upper).trim();
    if let Some(offset) = parse_offset(bare) {
        return Ok((TimeZone::fixed(offset), format!("UTC{}", format_offset(offset))));
    }
    match TimeZone::get(zone) {
        Ok(tz) => {
            let name = tz.iana_name().unwrap_or(zone).to_owned();
            Ok((tz, name))
        }
        Err(_) => Err(format!("unknown time zone {zone:?}. {TIMEZONE_HELP}")),
    }
}

#[async_trait]
impl Tool for ClockTool {
    fn name(&self) -> &str {
        "clock"
    }

    fn description(&self) -> &str {
        DESCRIPTION
    }

    fn schema(&self) -> &ToolSchema {
        &self.schema
    }

    async fn call(&self, arguments: Map<String, Value>, _cancel: CancellationToken) -> ToolResult {
        let zone = arguments.get("timezone").and_then(Value::as_str).unwrap_or("");
        let (tz, name) = match resolve(zone) {
            Ok(found) => found,
            Err(message) => return ToolResult::error(Outcome::ToolError, message),
        };
        let now_ms = self.clock.now_ms();
        let Ok(now) = Timestamp::from_second(now_ms.div_euclid(1000)) else {
            return ToolResult::error(Outcome::ToolError, "the server's clock is out of range");
        };
        let local = now.to_zoned_datetime(tz);
        let offset = local.offset();
        ToolResult::ok(json!({
            "datetime": now.display_with_offset(offset).to_string(),
            "weekday": local.strftime("%A").to_string(),
            "timezone": name,
            "utc_offset": format_offset(offset),
            "unix_ms": now_ms,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_clock::ManualClock;

    // 2026-01-15T12:34:56.789Z, a Thursday.
    const WINTER_MS: i64 = 1_768_480_496_789;
    // 2026-07-15T12:00:00Z, a Wednesday.
    const SUMMER_MS: i64 = 1_784_116_800_000;

    async fn at(ms: i64, zone: Option<&str>) -> ToolResult {
        let tool = ClockTool::new(Arc::new(ManualClock::starting_at(ms)));
        let mut args = Map::new();
        if let Some(z) = zone {
            args.insert("timezone".into(), json!(z));
        }
        tool.call(args, CancellationToken::new()).await
    }

    #[tokio::test]
    async fn utc_by_default_from_the_injected_clock() {
        let r = at(WINTER_MS, None).await;
        assert_eq!(
            r.content,
            json!({
                "datetime": "2026-01-15T12:34:56+00:00",
                "weekday": "Thursday",
                "timezone": "UTC",
                "utc_offset": "+00:00",
                "unix_ms": WINTER_MS,
            })
        );
        for z in ["UTC", "utc", "Z", "GMT", " "] {
            assert_eq!(at(WINTER_MS, Some(z)).await.content["timezone"], "UTC", "{z:?}");
        }
    }

    #[tokio::test]
    async fn the_clock_moves_only_when_told() {
        let clock = ManualClock::starting_at(WINTER_MS);
        let tool = ClockTool::new(Arc::new(clock.clone()));
        let first = tool.call(Map::new(), CancellationToken::new()).await;
        clock.advance_ms(3_600_000);
        let later = tool.call(Map::new(), CancellationToken::new()).await;
        assert_eq!(first.content["datetime"], "2026-01-15T12:34:56+00:00");
        assert_eq!(later.content["datetime"], "2026-01-15T13:34:56+00:00");
    }

    #[tokio::test]
    async fn offsets() {
        let cases = [
            ("+05:30", "2026-01-15T18:04:56+05:30", "UTC+05:30"),
            ("+0530", "2026-01-15T18:04:56+05:30", "UTC+05:30"),
            ("-08", "2026-01-15T04:34:56-08:00", "UTC-08:00"),
            ("-3:30", "2026-01-15T09:04:56-03:30", "UTC-03:30"),
            ("UTC+2", "2026-01-15T14:34:56+02:00", "UTC+02:00"),
            ("gmt-1", "2026-01-15T11:34:56-01:00", "UTC-01:00"),
            ("+14", "2026-01-16T02:34:56+14:00", "UTC+14:00"),
        ];
        for (zone, datetime, name) in cases {
            let r = at(WINTER_MS, Some(zone)).await;
            assert_eq!(r.outcome, Outcome::Ok, "{zone}: {}", r.text());
            assert_eq!(r.content["datetime"], datetime, "{zone}");
            assert_eq!(r.content["timezone"], name, "{zone}");
        }
    }

    #[tokio::test]
    async fn iana_zones_follow_daylight_saving() {
        let r = at(WINTER_MS, Some("Europe/Paris")).await;
        assert_eq!(r.content["datetime"], "2026-01-15T13:34:56+01:00");
        assert_eq!(r.content["timezone"], "Europe/Paris");
        let r = at(SUMMER_MS, Some("Europe/Paris")).await;
        assert_eq!(r.content["datetime"], "2026-07-15T14:00:00+02:00");
        assert_eq!(r.content["weekday"], "Wednesday");
        let r = at(SUMMER_MS, Some("america/new_york")).await;
        assert_eq!(r.content["datetime"], "2026-07-15T08:00:00-04:00");
        assert_eq!(r.content["timezone"], "America/New_York");
        let r = at(WINTER_MS, Some("Asia/Kolkata")).await;
        assert_eq!(r.content["utc_offset"], "+05:30");
    }

    #[tokio::test]
    async fn unknown_zones_are_tool_errors_with_help() {
        for z in ["Mars/Olympus", "+15", "+05:60", "5", "++1", "+123", "UTC+", "+1:2:3", "Europe/Paris\0"] {
            let r = at(WINTER_MS, Some(z)).await;
            assert_eq!(r.outcome, Outcome::ToolError, "{z:?}: {}", r.text());
            assert!(r.text().contains("IANA time zone name"), "{}", r.text());
        }
    }
}
