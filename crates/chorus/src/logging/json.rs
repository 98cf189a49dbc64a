//! JSON log lines, one object per event:
//!
//! ```text
//! {"timestamp":"2026-11-22T15:32:27.238272Z","level":"INFO","message":"request",
//!  "status":101,"route":"/ws","target":"chorus_server::request_id",
//!  "span":{"request_id":"4157de0924dd0261","method":"GET","path":"/ws","name":"http"}}
//! ```
//!
//! The event's fields come first, then the fields of the span it happened in.
//! Written directly into one reused buffer: a span's fields are encoded once,
//! when they are recorded, not parsed and re-encoded for every event.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::io::Write as _;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// Lines longer than this are written, but their buffer is not kept.
const KEEP_BUFFER_BYTES: usize = 16 * 1024;

thread_local! {
    static LINE: RefCell<String> = RefCell::new(String::with_capacity(512));
}

/// The layer; `W` receives each finished line.
pub struct JsonLines<W> {
    writer: W,
}

impl<W> JsonLines<W> {
    pub fn new(writer: W) -> Self {
        Self { writer }
    }
}

/// A span's fields, already encoded: `"k":v,"k2":v2`. One string, trimmed
/// to size: a connection's span lives as long as the connection.
#[derive(Default)]
struct SpanFields(String);

impl SpanFields {
    /// Appends `name` (replacing an earlier value) and lets `value` write its JSON.
    fn set(&mut self, name: &'static str, value: impl FnOnce(&mut String)) {
        self.remove(name);
        if !self.0.is_empty() {
            self.0.push(',');
        }
        push_str(&mut self.0, name);
        self.0.push(':');
        value(&mut self.0);
    }

    fn remove(&mut self, name: &str) {
        let mut at = 0;
        while at < self.0.len() {
            let end = entry_end(&self.0, at);
            // `"name":` (field names are identifiers: nothing to escape).
            let key = self.0.get(at..at + name.len() + 3);
            if key.is_some_and(|k| k.starts_with('"') && k.ends_with("\":") && &k[1..=name.len()] == name) {
                let (from, to) = if end < self.0.len() { (at, end + 1) } else { (at.saturating_sub(1), end) };
                self.0.replace_range(from..to, "");
                return;
            }
            at = end + 1;
        }
    }
}

/// Where the entry starting at `at` ends (the index of its `,`, or the end).
/// Commas inside string values do not count.
fn entry_end(json: &str, at: usize) -> usize {
    let mut in_string = false;
    let mut escaped = false;
    for (i, b) in json.bytes().enumerate().skip(at) {
        match b {
            _ if escaped => escaped = false,
            b'\\' if in_string => escaped = true,
            b'"' => in_string = !in_string,
            b',' if !in_string => return i,
            _ => {}
        }
    }
    json.len()
}

impl Visit for SpanFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.set(field.name(), |out| push_str(out, value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.set(field.name(), |out| {
            let _ = write!(out, "{value}");
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.set(field.name(), |out| {
            let _ = write!(out, "{value}");
        });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.set(field.name(), |out| push_f64(out, value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.set(field.name(), |out| out.push_str(if value { "true" } else { "false" }));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.set(field.name(), |out| push_debug(out, value));
    }
}

/// Writes an event's fields straight into the line.
struct EventFields<'a> {
    line: &'a mut String,
}

impl EventFields<'_> {
    fn key(&mut self, field: &Field) -> bool {
        let name = field.name();
        // Fields of `log` records that NormalizeEvent already put into the metadata.
        if name.starts_with("log.") {
            return false;
        }
        self.line.push(',');
        push_str(self.line, name);
        self.line.push(':');
        true
    }
}

impl Visit for EventFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.key(field) {
            push_str(self.line, value);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.key(field) {
            let _ = write!(self.line, "{value}");
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.key(field) {
            let _ = write!(self.line, "{value}");
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.key(field) {
            push_f64(self.line, value);
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.key(field) {
            self.line.push_str(if value { "true" } else { "false" });
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.key(field) {
            push_debug(self.line, value);
        }
    }
}

impl<S, W> Layer<S> for JsonLines<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = SpanFields::default();
        attrs.record(&mut fields);
        fields.0.shrink_to_fit();
        span.extensions_mut().insert(fields);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        if let Some(fields) = ext.get_mut::<SpanFields>() {
            values.record(fields);
            fields.0.shrink_to_fit();
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let write = |line: &mut String| {
            format_event(line, event, &ctx);
            let _ = self.writer.make_writer().write_all(line.as_bytes());
        };
        // A Debug impl that logs would find the buffer taken: it gets its own.
        let reused = LINE.with(|buf| match buf.try_borrow_mut() {
            Ok(mut line) => {
                line.clear();
                write(&mut line);
                if line.capacity() > KEEP_BUFFER_BYTES {
                    *line = String::with_capacity(512);
                }
                true
            }
            Err(_) => false,
        });
        if !reused {
            write(&mut String::with_capacity(512));
        }
    }
}

fn format_event<S>(line: &mut String, event: &Event<'_>, ctx: &Context<'_, S>)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let normalized = event.normalized_metadata();
    let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
    line.push_str("{\"timestamp\":\"");
    chorus_protocol::timestamp::write_us(line, now_us());
    line.push_str("\",\"level\":\"");
    line.push_str(meta.level().as_str());
    line.push('"');
    event.record(&mut EventFields { line });
    line.push_str(",\"target\":");
    push_str(line, meta.target());
    if let Some(span) = ctx.event_span(event) {
        line.push_str(",\"span\":{");
        if let Some(fields) = span.extensions().get::<SpanFields>().filter(|f| !f.0.is_empty()) {
            line.push_str(&fields.0);
            line.push(',');
        }
        line.push_str("\"name\":");
        push_str(line, span.name());
        line.push('}');
    }
    line.push_str("}\n");
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Appends `s` as a JSON string.
fn push_str(out: &mut String, s: &str) {
    out.push('"');
    push_escaped(out, s);
    out.push('"');
}

fn push_escaped(out: &mut String, s: &str) {
    let mut plain = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[plain..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        plain = i + 1;
    }
    out.push_str(&s[plain..]);
}

/// Appends a Debug (or, through `%`, Display) value as a JSON string,
/// escaping as it is formatted.
fn push_debug(out: &mut String, value: &dyn fmt::Debug) {
    struct Escaping<'a>(&'a mut String);
    impl fmt::Write for Escaping<'_> {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            push_escaped(self.0, s);
            Ok(())
        }
    }
    out.push('"');
    let _ = write!(Escaping(out), "{value:?}");
    out.push('"');
}

/// JSON has no NaN or infinity: those are written as strings.
fn push_f64(out: &mut String, value: f64) {
    if value.is_finite() {
        let _ = write!(out, "{value}");
    } else {
        let _ = write!(out, "\"{value}\"");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::Value;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Lines;
        fn make_writer(&'a self) -> Lines {
            self.clone()
        }
    }

    fn capture(f: impl FnOnce()) -> Vec<Value> {
        let lines = Lines::default();
        let subscriber = tracing_subscriber::registry().with(JsonLines::new(lines.clone()));
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
    }

    #[test]
    fn an_event_carries_its_fields_and_its_span() {
        let out = capture(|| {
            let span = tracing::info_span!("ws", request_id = "r1", conn = tracing::field::Empty, user = tracing::field::Empty);
            span.record("conn", 7u64);
            span.record("user", tracing::field::display("alice"));
            span.record("conn", 8u64);
            span.in_scope(|| tracing::info!(status = 101, latency_ms = 0.25, ok = true, route = "/ws", "request"));
            tracing::warn!(error = %"bad", "outside");
        });
        assert_eq!(out.len(), 2);
        let e = &out[0];
        assert_eq!(e["level"], "INFO");
        assert_eq!(e["message"], "request");
        assert_eq!(e["status"], 101);
        assert_eq!(e["latency_ms"], 0.25);
        assert_eq!(e["ok"], true);
        assert_eq!(e["route"], "/ws");
        assert!(e["target"].as_str().unwrap().starts_with("chorus"));
        assert_eq!(e["span"]["name"], "ws");
        assert_eq!(e["span"]["request_id"], "r1");
        assert_eq!(e["span"]["conn"], 8, "a field recorded twice keeps its last value");
        assert_eq!(e["span"]["user"], "alice");
        let ts = e["timestamp"].as_str().unwrap();
        assert_eq!(ts.len(), "2026-11-22T15:32:27.238272Z".len(), "{ts}");
        assert!(chorus_protocol::timestamp::parse_ms(ts).is_some(), "{ts}");
        assert_eq!(out[1]["level"], "WARN");
        assert_eq!(out[1]["error"], "bad");
        assert!(out[1].get("span").is_none());
    }

    #[test]
    fn a_span_field_recorded_again_replaces_its_value_wherever_it_is() {
        let mut f = SpanFields::default();
        f.set("a", |o| push_str(o, "x,\"a\":1"));
        f.set("b", |o| o.push('2'));
        f.set("c", |o| push_str(o, "\\"));
        f.set("a", |o| o.push('3'));
        assert_eq!(f.0, r#""b":2,"c":"\\","a":3"#);
        f.set("a", |o| o.push('4'));
        f.set("c", |o| o.push('5'));
        f.set("b", |o| o.push('6'));
        let v: Value = serde_json::from_str(&format!("{{{}}}", f.0)).unwrap();
        assert_eq!(v, serde_json::json!({"a": 4, "c": 5, "b": 6}));
        assert_eq!(f.0, r#""a":4,"c":5,"b":6"#);
    }

    #[test]
    fn strings_are_escaped_and_odd_numbers_stay_valid_json() {
        let nasty = "quote \" backslash \\ newline \n tab \t bell \u{7} é ✓";
        let out = capture(|| tracing::info!(text = nasty, debug = ?nasty, nan = f64::NAN, big = u64::MAX, neg = -3i64, "m"));
        assert_eq!(out[0]["text"], nasty);
        assert_eq!(out[0]["debug"], format!("{nasty:?}"));
        assert_eq!(out[0]["nan"], "NaN");
        assert_eq!(out[0]["big"], u64::MAX);
        assert_eq!(out[0]["neg"], -3);
    }
}
