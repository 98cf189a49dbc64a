//! Small shared pieces: the loopback target, source addresses, clocks and
//! `/proc` readings.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use tokio::net::{TcpSocket, TcpStream};

/// Microseconds since the Unix epoch. Publisher and receivers read the same
/// machine clock, so a receipt time minus a send time is a delivery latency.
pub fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The server under test. Only loopback addresses are accepted: this tool is
/// for a server on the same machine and must never load anything else.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// The `Host` header value.
    pub host: String,
}

impl Target {
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let rest = url.strip_prefix("http://").context("--url must start with http:// (plain HTTP to loopback)")?;
        let authority = rest.split('/').next().unwrap_or("");
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, p.parse::<u16>().context("--url port")?),
            _ => (authority, 80),
        };
        let ip: IpAddr = match host {
            "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
            h => h.trim_start_matches('[').trim_end_matches(']').parse().with_context(|| format!("--url host `{h}` is not an IP address"))?,
        };
        if !ip.is_loopback() {
            bail!("--url must point at a loopback address (127.0.0.0/8 or ::1), not {ip}");
        }
        Ok(Self { addr: SocketAddr::new(ip, port), host: authority.to_owned() })
    }
}

/// Source addresses 127.0.0.1 … 127.0.0.n used in turn, so that tens of
/// thousands of short connections do not run out of ephemeral ports (each
/// source address has its own ~28,000 ports towards the server).
#[derive(Debug)]
pub struct SourceAddrs {
    addrs: Vec<IpAddr>,
    next: AtomicUsize,
}

impl SourceAddrs {
    /// `count` addresses starting at 127.0.0.(1 + offset); IPv6 targets use ::1 only.
    pub fn new(target: &Target, count: u8, offset: u8) -> Self {
        let addrs = match target.addr.ip() {
            IpAddr::V4(_) => (0..count.max(1)).map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + offset.wrapping_add(i) % 250))).collect(),
            IpAddr::V6(_) => vec![IpAddr::V6(Ipv6Addr::LOCALHOST)],
        };
        Self { addrs, next: AtomicUsize::new(0) }
    }

    pub fn pick(&self) -> IpAddr {
        self.addrs[self.next.fetch_add(1, Ordering::Relaxed) % self.addrs.len()]
    }
}

/// A TCP connection from `src` (port chosen at connect time) with Nagle off.
pub async fn connect_tcp(target: &Target, src: IpAddr) -> io::Result<TcpStream> {
    let socket = match target.addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if src.is_ipv4() {
        // Let connect() choose the port per destination, so ports are not
        // reserved at bind time (which would cap us at one range in total).
        let one: libc::c_int = 1;
        // SAFETY: a valid socket fd and a pointer to a live c_int of the given size.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                std::ptr::from_ref(&one).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        socket.bind(SocketAddr::new(src, 0))?;
    }
    let stream = socket.connect(target.addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Resident set size of a process in KiB (`VmRSS` in `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// User + system CPU time of a process (`None` = this process), in clock ticks.
pub fn cpu_ticks(pid: Option<u32>) -> Option<u64> {
    let path = pid.map_or_else(|| "/proc/self/stat".to_owned(), |p| format!("/proc/{p}/stat"));
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// User + system CPU ticks of a process and all its descendants alive now
/// (e.g. PostgreSQL's postmaster and its backends), from `/proc/*/stat`.
pub fn tree_ticks(root: u32) -> Option<u64> {
    let mut procs: Vec<(u32, u32, u64)> = Vec::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some(close) = stat.rfind(')') else { continue };
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        // After the name: state ppid ... utime(14) stime(15), 1-based from pid.
        let (Some(ppid), Some(u), Some(s)) = (fields.get(1), fields.get(11), fields.get(12)) else { continue };
        let (Ok(ppid), Ok(u), Ok(s)) = (ppid.parse::<u32>(), u.parse::<u64>(), s.parse::<u64>()) else { continue };
        procs.push((pid, ppid, u + s));
    }
    if !procs.iter().any(|p| p.0 == root) {
        return None;
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(procs.iter().filter(|p| p.1 == parent && p.0 != root).map(|p| p.0));
        i += 1;
    }
    Some(procs.iter().filter(|p| tree.contains(&p.0)).map(|p| p.2).sum())
}

pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|t| *t > 0).unwrap_or(100)
}

/// CPU use of this process and of the server over a window, in percent of one core.
pub struct CpuMeter {
    start: std::time::Instant,
    me: Option<u64>,
    server_pid: Option<u32>,
    server: Option<u64>,
    /// The rest of the deployment: each PID with its ticks at the start.
    deployment: Vec<(u32, Option<u64>)>,
    machine: Option<(u64, u64)>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct CpuUse {
    pub client_pct: Option<f64>,
    pub server_pct: Option<f64>,
    /// The rest of the deployment (other nodes, Redis, PostgreSQL), when given.
    pub deployment_pct: Option<f64>,
    /// Busy time of the whole machine (all processes, interrupts), % of one core.
    pub machine_pct: Option<f64>,
    pub seconds: f64,
}

impl CpuUse {
    /// Machine time used by neither client nor server (other work on the box,
    /// and kernel time not charged to either), % of one core.
    pub fn other_pct(&self) -> Option<f64> {
        Some((self.machine_pct? - self.client_pct? - self.server_pct? - self.deployment_pct.unwrap_or(0.0)).max(0.0))
    }

    pub fn line(&self) -> String {
        let f = |v: Option<f64>| v.map_or("?".to_owned(), |p| format!("{p:.0}%"));
        format!(
            "CPU over {:.1} s (% of one core, {} cores): client {} · server {}{} · rest of the machine {}",
            self.seconds,
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            f(self.client_pct),
            f(self.server_pct),
            self.deployment_pct.map_or_else(String::new, |p| format!(" · other nodes and services {p:.0}%")),
            f(self.other_pct())
        )
    }
}

/// Busy and total jiffies of all CPUs (`/proc/stat`).
pub fn machine_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    let total: u64 = v.iter().take(8).sum();
    Some((total - idle, total))
}

impl CpuMeter {
    pub fn start(server_pid: Option<u32>) -> Self {
        Self {
            start: std::time::Instant::now(),
            me: cpu_ticks(None),
            server_pid,
            server: server_pid.and_then(|p| cpu_ticks(Some(p))),
            deployment: Vec::new(),
            machine: machine_jiffies(),
        }
    }

    /// Also measures these processes and their children (PostgreSQL's
    /// backends), as the rest of the deployment.
    pub fn with_deployment(mut self, pids: &[u32]) -> Self {
        self.deployment = pids.iter().map(|p| (*p, tree_ticks(*p))).collect();
        self
    }

    pub fn stop(&self) -> CpuUse {
        self.stop_with_extra_client_ticks(0)
    }

    /// As `stop`, adding CPU ticks that child processes reported for the window.
    pub fn stop_with_extra_client_ticks(&self, extra: u64) -> CpuUse {
        let secs = self.start.elapsed().as_secs_f64().max(1e-6);
        let hz = ticks_per_second() as f64;
        let pct = |a: Option<u64>, b: Option<u64>, extra: u64| match (a, b) {
            (Some(a), Some(b)) => Some((b.saturating_sub(a) + extra) as f64 / hz / secs * 100.0),
            _ => None,
        };
        let machine = match (self.machine, machine_jiffies()) {
            (Some((b0, _)), Some((b1, _))) => Some(b1.saturating_sub(b0) as f64 / hz / secs * 100.0),
            _ => None,
        };
        let deployment = (!self.deployment.is_empty()).then(|| {
            self.deployment.iter().filter_map(|(p, t0)| pct(*t0, tree_ticks(*p), 0)).sum::<f64>()
        });
        CpuUse {
            client_pct: pct(self.me, cpu_ticks(None), extra),
            server_pct: pct(self.server, self.server_pid.and_then(|p| cpu_ticks(Some(p))), 0),
            deployment_pct: deployment,
            machine_pct: machine,
            seconds: secs,
        }
    }
}

/// Machine-wide count of connections dropped because a listen queue was
/// full (`TcpExt: ListenOverflows` in `/proc/net/netstat`). A dropped
/// handshake costs the client a SYN retransmission (1 s).
pub fn listen_overflows() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let names = lines.next()?;
    let values = lines.next()?;
    let i = names.split_whitespace().position(|n| n == "ListenOverflows")?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// Parses `i/n` (shard i of n, 0-based).
pub fn parse_shard(s: &str) -> Result<(u32, u32), String> {
    let (i, n) = s.split_once('/').ok_or("expected i/n")?;
    let i: u32 = i.parse().map_err(|_| "i is not a number")?;
    let n: u32 = n.parse().map_err(|_| "n is not a number")?;
    if n == 0 || i >= n {
        return Err("need 0 <= i < n".into());
    }
    Ok((i, n))
}

/// Parses `10s`, `500ms`, `5m`, `1h` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let v: f64 = num.parse().map_err(|_| format!("bad duration `{s}`"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(format!("bad duration unit in `{s}` (ms, s, m, h)")),
    };
    if !(secs.is_finite() && secs >= 0.0) {
        return Err(format!("bad duration `{s}`"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A cheap pseudo-random generator (xorshift64*) for WebSocket keys and
/// masks; nothing here needs cryptographic randomness.
#[derive(Debug, Clone)]
pub struct FastRng(u64);

impl FastRng {
    pub fn new() -> Self {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let seed = now_us() ^ ((SEQ.fetch_add(1, Ordering::Relaxed) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)) ^ u64::from(std::process::id()) << 32;
        Self(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

impl Default for FastRng {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets() {
        assert_eq!(Target::parse("http://127.0.0.1:8080").unwrap().addr.port(), 8080);
        assert!(Target::parse("http://localhost:9000/").unwrap().addr.ip().is_loopback());
        assert!(Target::parse("http://127.3.2.1:1").is_ok());
        assert!(Target::parse("http://[::1]:8080").unwrap().addr.is_ipv6());
        assert!(Target::parse("http://10.0.0.1:8080").is_err());
        assert!(Target::parse("http://192.168.1.2:8080").is_err());
        assert!(Target::parse("https://127.0.0.1:8080").is_err());
        assert!(Target::parse("http://example.com:80").is_err());
    }

    #[test]
    fn durations_and_shards() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("x").is_err());
        assert_eq!(parse_shard("1/3").unwrap(), (1, 3));
        assert!(parse_shard("3/3").is_err());
    }

    #[test]
    fn source_addresses_rotate() {
        let t = Target::parse("http://127.0.0.1:1").unwrap();
        let s = SourceAddrs::new(&t, 3, 0);
        let picked: Vec<_> = (0..4).map(|_| s.pick().to_string()).collect();
        assert_eq!(picked, ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.1"]);
    }

    #[test]
    fn proc_readings() {
        assert!(rss_kib(std::process::id()).unwrap() > 0);
        assert!(cpu_ticks(None).is_some());
        assert!(tree_ticks(std::process::id()).is_some());
        assert!(listen_overflows().is_some());
        let (busy, total) = machine_jiffies().unwrap();
        assert!(busy <= total && total > 0);
    }
}
