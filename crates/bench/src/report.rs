//! The result block printed after a scenario, and its JSON line.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context;
use serde_json::{Map, Value, json};

pub struct Report {
    pub scenario: String,
    pub row: String,
    params: Map<String, Value>,
    metrics: Map<String, Value>,
    lines: Vec<String>,
    checks: Vec<(String, bool, String)>,
    notes: Vec<String>,
}

impl Report {
    pub fn new(scenario: &str, row: impl Into<String>) -> Self {
        Self {
            scenario: scenario.to_owned(),
            row: row.into(),
            params: Map::new(),
            metrics: Map::new(),
            lines: Vec::new(),
            checks: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn param(&mut self, k: &str, v: impl Into<Value>) -> &mut Self {
        self.params.insert(k.to_owned(), v.into());
        self
    }

    pub fn metric(&mut self, k: &str, v: impl serde::Serialize) -> &mut Self {
        self.metrics.insert(k.to_owned(), serde_json::to_value(v).unwrap_or(Value::Null));
        self
    }

    /// The CPU of the measurement as metrics (% of one core, rounded; null
    /// when not measured).
    pub fn cpu(&mut self, cpu: &crate::util::CpuUse) -> &mut Self {
        self.metric("client_cpu_pct", cpu.client_pct.map(f64::round))
            .metric("server_cpu_pct", cpu.server_pct.map(f64::round))
            .metric("deployment_cpu_pct", cpu.deployment_pct.map(f64::round))
            .metric("other_cpu_pct", cpu.other_pct().map(f64::round))
    }

    /// A human-readable line of the "measured" section.
    pub fn line(&mut self, s: impl Into<String>) -> &mut Self {
        self.lines.push(s.into());
        self
    }

    /// A PASS/FAIL check against the bar.
    pub fn check(&mut self, name: impl Into<String>, pass: bool, detail: impl Into<String>) -> &mut Self {
        self.checks.push((name.into(), pass, detail.into()));
        self
    }

    pub fn note(&mut self, s: impl Into<String>) -> &mut Self {
        self.notes.push(s.into());
        self
    }

    pub fn pass(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.1)
    }

    pub fn print(&self) {
        let mut out = String::new();
        out.push_str(&format!("\n=== chorus-bench {} — {} ===\n", self.scenario, self.row));
        let params: Vec<String> = self.params.iter().map(|(k, v)| format!("{k}={}", plain(v))).collect();
        out.push_str(&format!("parameters: {}\n", params.join(" ")));
        out.push_str("measured:\n");
        for l in &self.lines {
            out.push_str(&format!("  {l}\n"));
        }
        out.push_str("against the bar:\n");
        for (name, pass, detail) in &self.checks {
            out.push_str(&format!("  [{}] {name}: {detail}\n", if *pass { "PASS" } else { "FAIL" }));
        }
        for n in &self.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        out.push_str(&format!("RESULT: {} ({})\n", if self.pass() { "PASS" } else { "FAIL" }, self.row));
        print!("{out}");
        let _ = std::io::stdout().flush();
    }

    pub fn to_json(&self, command: &str) -> Value {
        let now = time::OffsetDateTime::now_utc();
        let ts = now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        json!({
            "time": ts,
            "scenario": self.scenario,
            "row": self.row,
            "command": command,
            "pass": self.pass(),
            "params": self.params,
            "metrics": self.metrics,
            "checks": self.checks.iter().map(|(n, p, d)| json!({"name": n, "pass": p, "detail": d})).collect::<Vec<_>>(),
            "notes": self.notes,
        })
    }

    pub fn append_json(&self, path: &Path, command: &str) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("opening {}", path.display()))?;
        writeln!(f, "{}", self.to_json(command)).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_needs_every_check() {
        let mut r = Report::new("fanout", "1000x50");
        assert!(!r.pass(), "no checks is not a pass");
        r.check("p99", true, "1 ms");
        assert!(r.pass());
        r.check("lost", false, "3");
        assert!(!r.pass());
        r.param("subscribers", 1000).metric("p99_us", 900u64);
        let j = r.to_json("chorus-bench fanout");
        assert_eq!(j["pass"], false);
        assert_eq!(j["params"]["subscribers"], 1000);
        assert_eq!(j["checks"].as_array().unwrap().len(), 2);
    }
}
