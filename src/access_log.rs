//! Access logs: a line per HTTP request or TCP connection, rendered on the worker that finished it
//! and written by a thread of the log's own, so a slow disk or a full pipe never holds a request.
//!
//! - [`AccessLog`]: a listener's compiled format and its [`Sink`]. The data plane renders a line
//!   by answering [`Fields`] (what it knows about the request); time variables are filled here,
//!   from a per-thread cache refreshed once a second.
//! - [`Sink`]: one per destination (stdout, or a file path), shared by every listener that writes
//!   there and kept across reloads ([`Sinks`]). Lines wait in a queue bounded in bytes; when the
//!   writer cannot keep up, new lines are dropped and counted (`ferry_access_log_dropped_total`),
//!   never buffered without bound. Files are opened for append, reopened on SIGUSR1 ([`Sinks::reopen`],
//!   as nginx does for logrotate) and when the path stops naming the open file (rotated by rename).

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use http::HeaderName;
use prometheus::IntCounter;

use crate::config::log::{AccessLog as LogConfig, Escape, LogFormat, LogPiece, LogTarget, LogVar};
use crate::config::{Config, FileError, FileErrors, Protocol};
use crate::metrics::Metrics;

/// What the data plane knows about one request or connection.
pub trait Fields {
    /// Appends the raw (unescaped) value of `v` to `out`; false if it has none (logged as `-`).
    /// Time variables are never asked.
    fn field(&self, v: &LogVar, out: &mut Vec<u8>) -> bool;
}

/// Bytes of lines waiting for the writer, per sink, beyond which new lines are dropped.
pub const MAX_QUEUED_BYTES: usize = 8 << 20;

/// A listener's access log.
pub struct AccessLog {
    pub format: LogFormat,
    protocol: Protocol,
    sink: Arc<Sink>,
    /// The request headers the format reads, captured when a request starts.
    pub request_headers: Box<[HeaderName]>,
    /// The response headers it reads.
    pub response_headers: Box<[HeaderName]>,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AccessLog({:?} → {})", self.format, self.sink.name)
    }
}

impl AccessLog {
    pub fn new(config: &LogConfig, protocol: Protocol, sink: Arc<Sink>) -> AccessLog {
        let request_headers = match &config.format {
            LogFormat::Json => json_request_headers(),
            f => f.request_headers(),
        };
        AccessLog {
            request_headers: request_headers.into(),
            response_headers: config.format.response_headers().into(),
            format: config.format.clone(),
            protocol,
            sink,
        }
    }

    /// Does the format read `v`? (The data plane skips gathering what no one logs.)
    pub fn uses(&self, v: &LogVar) -> bool {
        self.format.uses(v)
    }

    /// Renders one line (into a buffer this thread reuses) and queues it.
    pub fn log(&self, f: &dyn Fields) {
        LINE.with(|cell| {
            let [mut line, mut raw] = cell.take();
            line.clear();
            match &self.format {
                LogFormat::Text { pieces, escape, .. } => render_text(pieces, *escape, f, &mut line, &mut raw),
                LogFormat::Json => render_json(self.protocol, f, &mut line, &mut raw),
            }
            line.push(b'\n');
            self.sink.push(&line);
            if line.capacity() <= 64 * 1024 && raw.capacity() <= 64 * 1024 {
                cell.set([line, raw]);
            }
        });
    }
}

fn render_text(pieces: &[LogPiece], escape: Escape, f: &dyn Fields, line: &mut Vec<u8>, raw: &mut Vec<u8>) {
    for p in pieces {
        match p {
            LogPiece::Lit(s) => line.extend_from_slice(s.as_bytes()),
            LogPiece::Var(v) => {
                raw.clear();
                let found = time_field(v, raw) || f.field(v, raw);
                match (found, escape) {
                    (false, Escape::Json) => {}
                    (false, _) => line.push(b'-'),
                    (true, Escape::Default) => escape_default(raw, line),
                    (true, Escape::Json) => escape_json(raw, line),
                    (true, Escape::None) => line.extend_from_slice(raw),
                }
            }
        }
    }
}

/// JSON field types.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    /// Written by the data plane as digits (integer or decimal): copied as a JSON number.
    Num,
}

const HTTP_JSON: &[(&str, LogVar, Kind)] = &[
    ("time", LogVar::TimeIso8601, Kind::Str),
    ("listener", LogVar::Listener, Kind::Str),
    ("remote_addr", LogVar::RemoteAddr, Kind::Str),
    ("remote_user", LogVar::RemoteUser, Kind::Str),
    ("request_id", LogVar::RequestId, Kind::Str),
    ("method", LogVar::RequestMethod, Kind::Str),
    ("uri", LogVar::RequestUri, Kind::Str),
    ("protocol", LogVar::ServerProtocol, Kind::Str),
    ("host", LogVar::Host, Kind::Str),
    ("status", LogVar::Status, Kind::Num),
    ("body_bytes_sent", LogVar::BodyBytesSent, Kind::Num),
    ("request_time", LogVar::RequestTime, Kind::Num),
    ("route", LogVar::Route, Kind::Str),
    ("backend", LogVar::Backend, Kind::Str),
    ("upstream_addr", LogVar::UpstreamAddr, Kind::Str),
    ("upstream_status", LogVar::UpstreamStatus, Kind::Str),
    ("upstream_connect_time", LogVar::UpstreamConnectTime, Kind::Str),
    ("upstream_header_time", LogVar::UpstreamHeaderTime, Kind::Str),
    ("upstream_response_time", LogVar::UpstreamResponseTime, Kind::Str),
    ("ferry_error", LogVar::FerryError, Kind::Str),
];

/// Request headers in an HTTP json line, under these keys.
const JSON_HEADERS: &[(&str, &str)] =
    &[("referer", "referer"), ("user_agent", "user-agent"), ("x_forwarded_for", "x-forwarded-for")];

fn json_request_headers() -> Vec<HeaderName> {
    JSON_HEADERS.iter().map(|(_, h)| HeaderName::from_static(h)).collect()
}

const TCP_JSON: &[(&str, LogVar, Kind)] = &[
    ("time", LogVar::TimeIso8601, Kind::Str),
    ("listener", LogVar::Listener, Kind::Str),
    ("remote_addr", LogVar::RemoteAddr, Kind::Str),
    ("server_name", LogVar::SslPrereadServerName, Kind::Str),
    ("status", LogVar::Status, Kind::Num),
    ("bytes_received", LogVar::BytesReceived, Kind::Num),
    ("bytes_sent", LogVar::BytesSent, Kind::Num),
    ("session_time", LogVar::SessionTime, Kind::Num),
    ("backend", LogVar::Backend, Kind::Str),
    ("upstream_addr", LogVar::UpstreamAddr, Kind::Str),
    ("upstream_connect_time", LogVar::UpstreamConnectTime, Kind::Str),
    ("ferry_error", LogVar::FerryError, Kind::Str),
];

fn render_json(protocol: Protocol, f: &dyn Fields, line: &mut Vec<u8>, raw: &mut Vec<u8>) {
    let fields = match protocol {
        Protocol::Http => HTTP_JSON,
        Protocol::Tcp => TCP_JSON,
    };
    line.push(b'{');
    let mut put = |key: &str, v: &LogVar, kind: Kind, line: &mut Vec<u8>| {
        if line.len() > 1 {
            line.push(b',');
        }
        line.push(b'"');
        line.extend_from_slice(key.as_bytes());
        line.extend_from_slice(b"\":");
        raw.clear();
        if !(time_field(v, raw) || f.field(v, raw)) {
            line.extend_from_slice(b"null");
            return;
        }
        match kind {
            Kind::Num => line.extend_from_slice(raw),
            Kind::Str => {
                line.push(b'"');
                escape_json(raw, line);
                line.push(b'"');
            }
        }
    };
    for (key, v, kind) in fields {
        put(key, v, *kind, line);
    }
    if protocol == Protocol::Http {
        for (key, h) in JSON_HEADERS {
            put(key, &LogVar::Http(HeaderName::from_static(h)), Kind::Str, line);
        }
    }
    line.push(b'}');
}

/// nginx's default log escaping: `"`, `\`, bytes below 0x20 and from 0x7f as `\xHH`.
pub fn escape_default(raw: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in raw {
        if !(0x20..0x7f).contains(&b) || b == b'"' || b == b'\\' {
            out.extend_from_slice(&[b'\\', b'x', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        } else {
            out.push(b);
        }
    }
}

/// JSON string escaping (nginx `escape=json`); bytes that are not UTF-8 become U+FFFD, so the
/// line stays valid JSON.
pub fn escape_json(raw: &[u8], out: &mut Vec<u8>) {
    let text = String::from_utf8_lossy(raw);
    for c in text.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 => out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes()),
            c => {
                let mut b = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
}

/// `$time_local`, `$time_iso8601`, `$msec`: the time the line is written, as nginx logs them.
fn time_field(v: &LogVar, out: &mut Vec<u8>) -> bool {
    match v {
        LogVar::TimeLocal | LogVar::TimeIso8601 => {
            let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
            TIME.with(|t| {
                let mut t = t.borrow_mut();
                if t.second != now.as_secs() {
                    *t = Clock::at(now.as_secs());
                }
                out.extend_from_slice(if *v == LogVar::TimeLocal { &t.local } else { &t.iso });
            });
            true
        }
        LogVar::Msec => {
            let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
            let _ = write!(out, "{}.{:03}", now.as_secs(), now.subsec_millis());
            true
        }
        _ => false,
    }
}

/// The time variables of templates (`$msec`, `$time_local`, `$time_iso8601`, `$date_gmt`,
/// `$date_local`): now, as nginx writes them.
pub fn now(v: &crate::config::template::Var, out: &mut String) {
    use crate::config::template::Var;
    let mut buf = Vec::new();
    match v {
        Var::Msec => drop(time_field(&LogVar::Msec, &mut buf)),
        Var::TimeLocal => drop(time_field(&LogVar::TimeLocal, &mut buf)),
        Var::TimeIso8601 => drop(time_field(&LogVar::TimeIso8601, &mut buf)),
        Var::DateGmt | Var::DateLocal => {
            static ZONE: OnceLock<jiff::tz::TimeZone> = OnceLock::new();
            let z = match v {
                Var::DateGmt => jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC),
                _ => jiff::Timestamp::now().to_zoned(ZONE.get_or_init(jiff::tz::TimeZone::system).clone()),
            };
            let fmt = if matches!(v, Var::DateGmt) { "%A, %d-%b-%Y %H:%M:%S GMT" } else { "%A, %d-%b-%Y %H:%M:%S %Z" };
            out.push_str(&z.strftime(fmt).to_string());
        }
        _ => {}
    }
    out.push_str(&String::from_utf8_lossy(&buf));
}

/// This second, formatted in the system's time zone (TZ, else /etc/localtime; UTC in most pods).
struct Clock {
    second: u64,
    local: Vec<u8>,
    iso: Vec<u8>,
}

impl Clock {
    fn at(second: u64) -> Clock {
        static ZONE: OnceLock<jiff::tz::TimeZone> = OnceLock::new();
        let zone = ZONE.get_or_init(jiff::tz::TimeZone::system);
        let ts = jiff::Timestamp::from_second(second as i64).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let z = ts.to_zoned(zone.clone());
        Clock {
            second,
            local: z.strftime("%d/%b/%Y:%H:%M:%S %z").to_string().into_bytes(),
            iso: z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string().into_bytes(),
        }
    }
}

thread_local! {
    /// A line and a value being rendered, reused by the thread.
    static LINE: std::cell::Cell<[Vec<u8>; 2]> = const { std::cell::Cell::new([Vec::new(), Vec::new()]) };
    static TIME: std::cell::RefCell<Clock> = const {
        std::cell::RefCell::new(Clock { second: u64::MAX, local: Vec::new(), iso: Vec::new() })
    };
}

/// This machine's name (`$hostname`: the pod name in Kubernetes).
pub fn hostname() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .ok()
            .filter(|s| !s.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "localhost".into())
    })
}

/// Seconds with milliseconds, as nginx writes `$request_time` (`0.003`).
pub fn seconds(d: Duration, out: &mut Vec<u8>) {
    let ms = d.as_millis();
    let _ = write!(out, "{}.{:03}", ms / 1000, ms % 1000);
}

/// One destination of log lines, and the thread that writes them.
///
/// Workers append rendered lines to one shared buffer (a short uncontended lock) and do not wake
/// the writer; the writer takes the whole buffer every [`FLUSH_EVERY`], or sooner when it passes
/// [`WAKE_AT`] bytes, and writes it with one call. A line therefore costs no system call and no
/// context switch of its own (nginx without `buffer=` makes a write(2) per line).
pub struct Sink {
    name: String,
    shared: Arc<Shared>,
    dropped: IntCounter,
}

/// How long a line may wait before it is written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Buffered bytes at which the writer is woken early.
const WAKE_AT: usize = 256 * 1024;

struct Shared {
    state: Mutex<State>,
    /// Wakes the writer (early flush, flush request, reopen, close).
    wake: std::sync::Condvar,
    /// Wakes those waiting for a flush.
    flushed: std::sync::Condvar,
}

#[derive(Default)]
struct State {
    buf: Vec<u8>,
    lines: u64,
    /// Bytes taken by the writer and not yet written (they count against the bound too).
    writing: usize,
    /// Flush requests made, and the last one the writer has completed.
    asked: u64,
    done: u64,
    reopen: bool,
    closed: bool,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sink({})", self.name)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sink {
    /// Opens `target` (a file is created if missing, appended to) and starts its writer.
    pub fn open(target: &LogTarget, metrics: &Metrics, discard_stdout: bool) -> std::io::Result<Arc<Sink>> {
        let (name, out) = match target {
            LogTarget::Stdout if discard_stdout => ("stdout".to_string(), Out::Discard),
            LogTarget::Stdout => ("stdout".to_string(), Out::Stdout),
            LogTarget::File(p) => (p.display().to_string(), Out::File(OpenFile::open(p)?)),
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: std::sync::Condvar::new(),
            flushed: std::sync::Condvar::new(),
        });
        let writer = Writer {
            out,
            shared: shared.clone(),
            lines: metrics.access_log_lines.with_label_values(&[&name]),
            errors: metrics.access_log_errors.with_label_values(&[&name]),
        };
        std::thread::Builder::new().name("ferry-access-log".into()).spawn(move || writer.run())?;
        Ok(Arc::new(Sink { dropped: metrics.access_log_dropped.with_label_values(&[&name]), name, shared }))
    }

    /// Appends a line (ending in `\n`), or drops and counts it when the queue is full.
    pub fn push(&self, line: &[u8]) {
        let mut st = lock(&self.shared.state);
        if st.buf.len() + st.writing + line.len() > MAX_QUEUED_BYTES {
            drop(st);
            self.dropped.inc();
            return;
        }
        st.buf.extend_from_slice(line);
        st.lines += 1;
        if st.buf.len() >= WAKE_AT && st.buf.len() - line.len() < WAKE_AT {
            self.shared.wake.notify_one();
        }
    }

    /// Waits (up to `within`) until every line pushed so far is written.
    pub fn flush(&self, within: Duration) -> bool {
        let mut st = lock(&self.shared.state);
        st.asked += 1;
        let want = st.asked;
        self.shared.wake.notify_one();
        let deadline = Instant::now() + within;
        while st.done < want {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            st = self.shared.flushed.wait_timeout(st, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        true
    }

    fn reopen(&self) {
        lock(&self.shared.state).reopen = true;
        self.shared.wake.notify_one();
    }

    /// Bytes waiting now (what the bound is checked against).
    pub fn queued_bytes(&self) -> usize {
        let st = lock(&self.shared.state);
        st.buf.len() + st.writing
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Sink {
    /// The writer writes what is left and exits.
    fn drop(&mut self) {
        lock(&self.shared.state).closed = true;
        self.shared.wake.notify_one();
    }
}

enum Out {
    Stdout,
    Discard,
    File(OpenFile),
}

struct OpenFile {
    path: PathBuf,
    file: File,
    /// (device, inode) of the open file, to notice the path naming another one.
    id: (u64, u64),
    checked: Instant,
}

impl OpenFile {
    fn open(path: &Path) -> std::io::Result<OpenFile> {
        use std::os::unix::fs::MetadataExt;
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        let m = file.metadata()?;
        Ok(OpenFile { path: path.to_path_buf(), file, id: (m.dev(), m.ino()), checked: Instant::now() })
    }

    /// Was the file renamed or removed (logrotate without copytruncate)? Looked at once a second.
    fn moved(&mut self) -> bool {
        use std::os::unix::fs::MetadataExt;
        if self.checked.elapsed() < Duration::from_secs(1) {
            return false;
        }
        self.checked = Instant::now();
        match std::fs::metadata(&self.path) {
            Ok(m) => (m.dev(), m.ino()) != self.id,
            Err(_) => true,
        }
    }
}

struct Writer {
    out: Out,
    shared: Arc<Shared>,
    lines: IntCounter,
    errors: IntCounter,
}

impl Writer {
    fn run(mut self) {
        let mut batch = Vec::new();
        loop {
            let (lines, asked, reopen, closed) = {
                let mut st = lock(&self.shared.state);
                if st.buf.len() < WAKE_AT && st.asked == st.done && !st.reopen && !st.closed {
                    st = self.shared.wake.wait_timeout(st, FLUSH_EVERY).unwrap_or_else(|p| p.into_inner()).0;
                }
                std::mem::swap(&mut batch, &mut st.buf);
                st.writing = batch.len();
                let lines = std::mem::take(&mut st.lines);
                (lines, st.asked, std::mem::take(&mut st.reopen), st.closed)
            };
            self.write_out(&batch);
            batch.clear();
            if batch.capacity() > 4 * WAKE_AT {
                batch = Vec::new();
            }
            self.lines.inc_by(lines);
            if reopen {
                self.reopen();
            } else {
                self.check_moved();
            }
            let mut st = lock(&self.shared.state);
            st.writing = 0;
            st.done = st.done.max(asked);
            self.shared.flushed.notify_all();
            if closed && st.buf.is_empty() {
                return;
            }
        }
    }

    fn write_out(&mut self, buf: &[u8]) {
        if buf.is_empty() {
            return;
        }
        let r = match &mut self.out {
            Out::Stdout => std::io::stdout().lock().write_all(buf),
            Out::Discard => Ok(()),
            Out::File(f) => f.file.write_all(buf),
        };
        if let Err(e) = r {
            if self.errors.get() % 1000 == 0 {
                tracing::warn!(error = %e, "cannot write the access log; lines are lost until it recovers");
            }
            self.errors.inc();
        }
    }

    fn check_moved(&mut self) {
        if let Out::File(f) = &mut self.out {
            if f.moved() {
                self.reopen();
            }
        }
    }

    fn reopen(&mut self) {
        if let Out::File(f) = &mut self.out {
            match OpenFile::open(&f.path) {
                Ok(fresh) => *f = fresh,
                Err(e) => {
                    self.errors.inc();
                    tracing::warn!(file = %f.path.display(), error = %e, "cannot reopen the access log; writing to the old file");
                }
            }
        }
    }
}

/// Sinks opened for a config not yet applied.
pub struct StagedSinks(HashMap<LogTarget, Arc<Sink>>);

/// The sinks of the live config, by destination: kept across reloads, so a reload neither
/// reopens files nor loses queued lines.
#[derive(Default)]
pub struct Sinks {
    map: Mutex<HashMap<LogTarget, Arc<Sink>>>,
    /// `stdout` lines are counted but not written (in-process tests, which share the test runner's
    /// stdout).
    pub discard_stdout: std::sync::atomic::AtomicBool,
}

impl Sinks {
    /// Opens what `config`'s access logs need (existing sinks are kept). A file that cannot be
    /// opened is an error naming it. Nothing live changes until [`commit`](Self::commit).
    pub fn stage(&self, config: &Config, metrics: &Metrics) -> Result<StagedSinks, FileErrors> {
        let discard = self.discard_stdout.load(Relaxed);
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = HashMap::new();
        let mut errors = Vec::new();
        for t in config.listeners.iter().filter_map(|l| l.access_log.as_ref()).map(|a| &a.to) {
            if next.contains_key(t) {
                continue;
            }
            match map.get(t).cloned().map(Ok).unwrap_or_else(|| Sink::open(t, metrics, discard)) {
                Ok(s) => {
                    next.insert(t.clone(), s);
                }
                Err(e) => errors.push(match t {
                    LogTarget::File(p) => FileError::new(p, "access log", &e),
                    LogTarget::Stdout => FileError::new(Path::new("<stdout>"), "access log", &e),
                }),
            }
        }
        if !errors.is_empty() {
            return Err(FileErrors(errors));
        }
        Ok(StagedSinks(next))
    }

    /// Makes the staged set the live one; sinks no longer named close (their writers finish what
    /// is queued and exit).
    pub fn commit(&self, staged: StagedSinks) {
        *self.map.lock().unwrap_or_else(|p| p.into_inner()) = staged.0;
    }

    /// The sink for `target`, if loaded.
    pub fn get(&self, target: &LogTarget) -> Option<Arc<Sink>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).get(target).cloned()
    }

    /// SIGUSR1: every file sink reopens its path.
    pub fn reopen(&self) {
        for s in self.map.lock().unwrap_or_else(|p| p.into_inner()).values() {
            s.reopen();
        }
    }

    /// Sets `ferry_access_log_queued_bytes` from the live sinks.
    pub fn update_gauges(&self, metrics: &Metrics) {
        for s in self.map.lock().unwrap_or_else(|p| p.into_inner()).values() {
            metrics.access_log_queued.with_label_values(&[&s.name]).set(s.queued_bytes() as i64);
        }
    }

    /// Each destination's lines written and dropped, and bytes queued (for the status page).
    pub fn summary(&self, metrics: &Metrics) -> Vec<serde_json::Value> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = map
            .values()
            .map(|s| {
                serde_json::json!({
                    "log": s.name,
                    "lines": metrics.access_log_lines.with_label_values(&[&s.name]).get(),
                    "dropped": metrics.access_log_dropped.with_label_values(&[&s.name]).get(),
                    "queued_bytes": s.queued_bytes(),
                })
            })
            .collect();
        v.sort_by(|a, b| a["log"].as_str().cmp(&b["log"].as_str()));
        v
    }

    /// Waits until every sink has written what it was given.
    pub fn flush(&self, within: Duration) {
        let sinks: Vec<_> = self.map.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        for s in sinks {
            s.flush(within);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_escaping_is_nginx_s() {
        let mut out = Vec::new();
        escape_default(b"a\"b\\c\x01\x7f\xc3\xa9 ok", &mut out);
        assert_eq!(out, br#"a\x22b\x5Cc\x01\x7F\xC3\xA9 ok"#);
        let mut out = Vec::new();
        escape_json(b"a\"b\\c\n\x01\xc3\xa9", &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "a\\\"b\\\\c\\n\\u0001é");
    }

    #[test]
    fn times_are_nginx_shaped() {
        let c = Clock::at(1_795_000_000);
        let local = String::from_utf8(c.local).unwrap();
        let iso = String::from_utf8(c.iso).unwrap();
        // 24/Nov/2026:08:26:40 +0000 under TZ=UTC; shape checked for any zone.
        let re = regex::Regex::new(r"^\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}$").unwrap();
        assert!(re.is_match(&local), "{local}");
        let re = regex::Regex::new(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$").unwrap();
        assert!(re.is_match(&iso), "{iso}");
        let mut s = Vec::new();
        seconds(Duration::from_micros(1_234_567), &mut s);
        assert_eq!(s, b"1.234");
    }
}
