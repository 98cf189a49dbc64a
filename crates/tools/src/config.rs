//! Tool configuration: call limits and the MCP servers to connect to.
//!
//! The binary embeds these types in its `[agents]` section; the keys below are
//! documented in `chorus.example.toml`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;

/// Names of the built-in tools.
pub const BUILTIN_TOOLS: [&str; 2] = ["clock", "calculator"];

/// Limits for every call and the MCP servers to connect to.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ToolsConfig {
    /// A call with no answer and no progress notification for this long times out.
    #[serde(with = "humantime_serde")]
    pub tool_call_timeout: Duration,
    /// A call times out after this long whatever its progress.
    #[serde(with = "humantime_serde")]
    pub tool_call_max: Duration,
    /// Results (and error messages) longer than this are cut, with a marker.
    pub tool_result_max_bytes: usize,
    /// Connecting to an MCP server (spawn or first request, handshake, tool list).
    #[serde(with = "humantime_serde")]
    pub mcp_connect_timeout: Duration,
    /// A connected MCP server is pinged this often; a failed ping reconnects.
    #[serde(with = "humantime_serde")]
    pub mcp_ping_interval: Duration,
    /// Reconnect delays double from the first to the second (with jitter).
    #[serde(with = "humantime_serde")]
    pub mcp_reconnect_min: Duration,
    #[serde(with = "humantime_serde")]
    pub mcp_reconnect_max: Duration,
    pub mcp_servers: Vec<McpServerConfig>,
}

impl Default for ToolsConfig {
    fn default() -> Self {
        Self {
            tool_call_timeout: Duration::from_secs(30),
            tool_call_max: Duration::from_secs(120),
            tool_result_max_bytes: 64 * 1024,
            mcp_connect_timeout: Duration::from_secs(10),
            mcp_ping_interval: Duration::from_secs(30),
            mcp_reconnect_min: Duration::from_secs(1),
            mcp_reconnect_max: Duration::from_secs(60),
            mcp_servers: Vec::new(),
        }
    }
}

/// How Chorus reaches an MCP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum McpTransport {
    /// A child process speaking JSON-RPC over stdin/stdout.
    Stdio,
    /// Streamable HTTP at `url`.
    Http,
}

impl McpTransport {
    pub fn as_str(self) -> &'static str {
        match self {
            McpTransport::Stdio => "stdio",
            McpTransport::Http => "http",
        }
    }
}

/// One `[[agents.mcp_servers]]` entry.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpServerConfig {
    /// Prefix of its tools' names (`<name>.<tool>`): letters, digits, `_`, `-`.
    pub name: String,
    pub transport: McpTransport,
    /// The tools of this server agents may use, by the server's names. Tools
    /// not listed are never offered to a model.
    pub tools: Vec<String>,
    /// stdio: the program and its arguments.
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    /// stdio: names of environment variables passed on from Chorus's own
    /// environment; the child gets these and `PATH`, nothing else.
    #[serde(default)]
    pub env: Vec<String>,
    /// stdio: working directory of the child (default: Chorus's).
    #[serde(default)]
    pub cwd: Option<String>,
    /// http: the endpoint, e.g. `http://127.0.0.1:3001/mcp`.
    #[serde(default)]
    pub url: Option<String>,
    /// http: headers sent with every request, as written.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// http: headers whose values are read from environment variables at
    /// start (header name → variable name), for secrets kept out of the file.
    #[serde(default)]
    pub headers_from_env: BTreeMap<String, String>,
    /// Overrides of `tool_call_timeout` and `tool_call_max` for this server.
    #[serde(default, with = "humantime_serde")]
    pub call_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub call_max: Option<Duration>,
}

// Header values may hold credentials: never printed.
impl fmt::Debug for McpServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McpServerConfig")
            .field("name", &self.name)
            .field("transport", &self.transport)
            .field("tools", &self.tools)
            .field("command", &self.command)
            .field("args", &self.args)
            .field("env", &self.env)
            .field("cwd", &self.cwd)
            .field("url", &self.url)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("headers_from_env", &self.headers_from_env)
            .field("call_timeout", &self.call_timeout)
            .field("call_max", &self.call_max)
            .finish()
    }
}

/// A configuration that cannot work, with the key at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

fn err(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError { key: key.into(), message: message.into() }
}

/// Longest server name; tool names must stay short for providers (64 characters).
pub const SERVER_NAME_MAX: usize = 32;
/// Most tools one server may expose to agents.
pub const TOOLS_PER_SERVER_MAX: usize = 128;

fn name_chars_ok(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl ToolsConfig {
    /// Checks everything that can be checked without starting anything.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.tool_call_timeout.is_zero() {
            return Err(err("tool_call_timeout", "must be more than zero"));
        }
        if self.tool_call_max < self.tool_call_timeout {
            return Err(err("tool_call_max", "must be at least tool_call_timeout"));
        }
        if self.tool_result_max_bytes < 256 {
            return Err(err("tool_result_max_bytes", "must be at least 256"));
        }
        if self.mcp_connect_timeout.is_zero() || self.mcp_ping_interval.is_zero() {
            return Err(err("mcp_connect_timeout", "timeouts and intervals must be more than zero"));
        }
        if self.mcp_reconnect_min.is_zero() || self.mcp_reconnect_max < self.mcp_reconnect_min {
            return Err(err("mcp_reconnect_max", "needs 0 < mcp_reconnect_min <= mcp_reconnect_max"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, server) in self.mcp_servers.iter().enumerate() {
            let at = format!("mcp_servers[{i}]");
            server.validate(&at)?;
            if BUILTIN_TOOLS.contains(&server.name.as_str()) || !seen.insert(server.name.to_ascii_lowercase()) {
                return Err(err(format!("{at}.name"), format!("{:?} is used twice", server.name)));
            }
        }
        Ok(())
    }

    /// Every tool name an agent may list: the built-ins, then `<server>.<tool>`
    /// for each tool each server allows.
    pub fn tool_names(&self) -> Vec<String> {
        let mut names: Vec<String> = BUILTIN_TOOLS.iter().map(|s| (*s).to_owned()).collect();
        for server in &self.mcp_servers {
            names.extend(server.tools.iter().map(|t| format!("{}.{t}", server.name)));
        }
        names
    }
}

impl McpServerConfig {
    fn validate(&self, at: &str) -> Result<(), ConfigError> {
        if self.name.is_empty() || self.name.len() > SERVER_NAME_MAX || !name_chars_ok(&self.name) {
            return Err(err(
                format!("{at}.name"),
                format!("{:?} must be 1 to {SERVER_NAME_MAX} letters, digits, '_' or '-'", self.name),
            ));
        }
        if self.tools.is_empty() {
            return Err(err(format!("{at}.tools"), "list the tools agents may use (at least one)"));
        }
        if self.tools.len() > TOOLS_PER_SERVER_MAX {
            return Err(err(format!("{at}.tools"), format!("at most {TOOLS_PER_SERVER_MAX} tools")));
        }
        let mut seen = std::collections::BTreeSet::new();
        for tool in &self.tools {
            if tool.is_empty() || tool.len() > 128 || tool.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(err(format!("{at}.tools"), format!("{tool:?} is not a tool name")));
            }
            if !seen.insert(tool) {
                return Err(err(format!("{at}.tools"), format!("{tool:?} is listed twice")));
            }
        }
        if let (Some(t), Some(m)) = (self.call_timeout, self.call_max)
            && (t.is_zero() || m < t)
        {
            return Err(err(format!("{at}.call_max"), "needs 0 < call_timeout <= call_max"));
        }
        if self.call_timeout.is_some_and(|t| t.is_zero()) || self.call_max.is_some_and(|t| t.is_zero()) {
            return Err(err(format!("{at}.call_timeout"), "must be more than zero"));
        }
        match self.transport {
            McpTransport::Stdio => {
                if self.command.as_deref().is_none_or(str::is_empty) {
                    return Err(err(format!("{at}.command"), "a stdio server needs a command"));
                }
                if self.url.is_some() || !self.headers.is_empty() || !self.headers_from_env.is_empty() {
                    return Err(err(format!("{at}.url"), "url and headers are for transport = \"http\""));
                }
                for var in &self.env {
                    if var.is_empty() || var.contains('=') || var.contains('\0') {
                        return Err(err(format!("{at}.env"), format!("{var:?} is not a variable name")));
                    }
                }
            }
            McpTransport::Http => {
                let url = self.url.as_deref().unwrap_or("");
                let parsed = reqwest::Url::parse(url)
                    .map_err(|e| err(format!("{at}.url"), format!("an http server needs a valid url: {e}")))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(err(format!("{at}.url"), "must be an http:// or https:// URL"));
                }
                if self.command.is_some() || !self.args.is_empty() || !self.env.is_empty() || self.cwd.is_some() {
                    return Err(err(format!("{at}.command"), "command, args, env and cwd are for transport = \"stdio\""));
                }
                for (name, value) in &self.headers {
                    header_pair(name, value).map_err(|m| err(format!("{at}.headers"), m))?;
                }
                for (name, var) in &self.headers_from_env {
                    header_pair(name, "x").map_err(|m| err(format!("{at}.headers_from_env"), m))?;
                    if var.is_empty() || var.contains('=') {
                        return Err(err(format!("{at}.headers_from_env"), format!("{var:?} is not a variable name")));
                    }
                }
            }
        }
        Ok(())
    }

    pub(crate) fn call_timeout(&self, defaults: &ToolsConfig) -> Duration {
        self.call_timeout.unwrap_or(defaults.tool_call_timeout)
    }

    pub(crate) fn call_max(&self, defaults: &ToolsConfig) -> Duration {
        self.call_max.unwrap_or(defaults.tool_call_max).max(self.call_timeout(defaults))
    }
}

/// A header as reqwest takes it; the message never contains the value.
pub(crate) fn header_pair(
    name: &str,
    value: &str,
) -> Result<(reqwest::header::HeaderName, reqwest::header::HeaderValue), String> {
    let n = reqwest::header::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{name:?} is not a header name"))?;
    let reserved = ["accept", "content-type", "mcp-session-id", "last-event-id", "host", "content-length"];
    if reserved.contains(&n.as_str()) {
        return Err(format!("{name:?} is set by the MCP client itself"));
    }
    let mut v = reqwest::header::HeaderValue::from_str(value)
        .map_err(|_| format!("the value of {name:?} is not a valid header value"))?;
    v.set_sensitive(true);
    Ok((n, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> ToolsConfig {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn defaults_and_both_transports_parse() {
        let c = parse(
            r#"
            tool_call_timeout = "5s"
            [[mcp_servers]]
            name = "files"
            transport = "stdio"
            command = "node"
            args = ["server.js", "stdio"]
            env = ["HOME"]
            tools = ["read_file"]
            call_max = "10m"

            [[mcp_servers]]
            name = "search"
            transport = "http"
            url = "http://127.0.0.1:3001/mcp"
            headers = { "X-Team" = "chat" }
            headers_from_env = { Authorization = "SEARCH_AUTH" }
            tools = ["query"]
            "#,
        );
        c.validate().unwrap();
        assert_eq!(c.tool_call_timeout, Duration::from_secs(5));
        assert_eq!(c.tool_call_max, Duration::from_secs(120));
        assert_eq!(c.mcp_servers[0].call_max(&c), Duration::from_secs(600));
        assert_eq!(c.mcp_servers[1].call_timeout(&c), Duration::from_secs(5));
        assert_eq!(c.tool_names(), ["clock", "calculator", "files.read_file", "search.query"]);
        let debug = format!("{:?}", c.mcp_servers[1]);
        assert!(debug.contains("X-Team") && !debug.contains("chat\""), "{debug}");
    }

    /// chorus.example.toml's `[agents]` section: its tool keys, and its
    /// commented `[[agents.mcp_servers]]` examples uncommented, make a valid
    /// configuration whose limits are the defaults.
    #[test]
    fn the_example_config_matches() {
        let example = include_str!("../../../chorus.example.toml");
        let section = &example[example.find("\n[agents]\n").expect("an [agents] section")..];
        let section = &section[..section.find("\n[web]").unwrap_or(section.len())];
        let tool_keys = ["tool_call_timeout", "tool_call_max", "tool_result_max_bytes", "mcp_connect_timeout", "mcp_ping_interval", "mcp_reconnect_min", "mcp_reconnect_max"];
        let mut toml = String::new();
        for line in section.lines() {
            if line.split_once(" = ").is_some_and(|(k, _)| tool_keys.contains(&k)) {
                toml.push_str(line);
                toml.push('\n');
            }
        }
        let servers = &section[section.find("# [[agents.mcp_servers]]").expect("commented MCP server examples")..];
        for line in servers.lines() {
            let Some(line) = line.strip_prefix("# ") else { continue };
            let is_key = line.split_once(" = ").is_some_and(|(k, _)| k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
            if line == "[[agents.mcp_servers]]" {
                toml.push_str("[[mcp_servers]]\n");
            } else if is_key {
                toml.push_str(line);
                toml.push('\n');
            }
        }
        let c = parse(&toml);
        c.validate().unwrap();
        let d = ToolsConfig::default();
        assert_eq!(
            (c.tool_call_timeout, c.tool_call_max, c.tool_result_max_bytes, c.mcp_connect_timeout),
            (d.tool_call_timeout, d.tool_call_max, d.tool_result_max_bytes, d.mcp_connect_timeout)
        );
        assert_eq!(
            (c.mcp_ping_interval, c.mcp_reconnect_min, c.mcp_reconnect_max),
            (d.mcp_ping_interval, d.mcp_reconnect_min, d.mcp_reconnect_max)
        );
        assert_eq!(c.mcp_servers.len(), 2);
        assert!(c.tool_names().iter().all(|n| !n.contains("get-env")));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let r: Result<ToolsConfig, _> = toml::from_str("[[mcp_servers]]\nname='a'\ntransport='stdio'\ncomand='x'\ntools=['t']");
        assert!(r.unwrap_err().to_string().contains("comand"));
    }

    #[test]
    fn invalid_servers_name_the_key() {
        let cases = [
            ("name = 'a.b'\ntransport = 'stdio'\ncommand = 'x'\ntools = ['t']", "mcp_servers[0].name"),
            ("name = 'clock'\ntransport = 'stdio'\ncommand = 'x'\ntools = ['t']", "mcp_servers[0].name"),
            ("name = 'a'\ntransport = 'stdio'\ntools = ['t']", "mcp_servers[0].command"),
            ("name = 'a'\ntransport = 'stdio'\ncommand = 'x'\ntools = []", "mcp_servers[0].tools"),
            ("name = 'a'\ntransport = 'stdio'\ncommand = 'x'\ntools = ['t', 't']", "mcp_servers[0].tools"),
            ("name = 'a'\ntransport = 'stdio'\ncommand = 'x'\nurl = 'http://x'\ntools = ['t']", "mcp_servers[0].url"),
            ("name = 'a'\ntransport = 'http'\ntools = ['t']", "mcp_servers[0].url"),
            ("name = 'a'\ntransport = 'http'\nurl = 'ftp://x/'\ntools = ['t']", "mcp_servers[0].url"),
            ("name = 'a'\ntransport = 'http'\nurl = 'http://x/'\ncommand = 'x'\ntools = ['t']", "mcp_servers[0].command"),
            ("name = 'a'\ntransport = 'http'\nurl = 'http://x/'\nheaders = { Accept = 'x' }\ntools = ['t']", "mcp_servers[0].headers"),
            ("name = 'a'\ntransport = 'http'\nurl = 'http://x/'\nheaders = { 'X-A' = \"a\\nb\" }\ntools = ['t']", "mcp_servers[0].headers"),
            ("name = 'a'\ntransport = 'stdio'\ncommand = 'x'\ntools = ['t']\ncall_timeout = '0s'", "mcp_servers[0].call_timeout"),
            ("name = 'a'\ntransport = 'stdio'\ncommand = 'x'\ntools = ['t']\ncall_timeout = '10s'\ncall_max = '5s'", "mcp_servers[0].call_max"),
        ];
        for (server, key) in cases {
            let c = parse(&format!("[[mcp_servers]]\n{server}"));
            assert_eq!(c.validate().unwrap_err().key, key, "{server}");
        }
        let twice = parse(
            "[[mcp_servers]]\nname='a'\ntransport='stdio'\ncommand='x'\ntools=['t']\n[[mcp_servers]]\nname='A'\ntransport='stdio'\ncommand='x'\ntools=['t']",
        );
        assert_eq!(twice.validate().unwrap_err().key, "mcp_servers[1].name");
        let c = ToolsConfig { tool_call_max: Duration::from_secs(1), ..ToolsConfig::default() };
        assert_eq!(c.validate().unwrap_err().key, "tool_call_max");
    }
}
