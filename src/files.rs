//! Files ferry serves itself: a route's `static` directory and the `error_pages` of listeners and
//! routes.
//!
//! Serving is tower-http's `ServeDir` (MIME type from the extension, `ETag`/`Last-Modified` and the
//! RFC 9110 preconditions → 304/412, `Range` → 206/416, HEAD, precompressed `.br`/`.gz`/`.zst`
//! siblings, the redirect of a directory to its `/` form), over a file backend of ferry's own,
//! [`Contained`], which resolves every path it is given and refuses one that leaves the directory
//! (a symlink pointing out), reads a file up to 1 MiB whole in the same blocking hop as its `open`
//! and remembers what it learned for a second.
//! Around it, [`Site::serve`] does what nginx's `alias`, `index` and `try_files … FALLBACK` do and
//! sets `Cache-Control` (`expires`).
//!
//! [`Files`] reads, when a config is applied, what the table will need: each static directory,
//! resolved (it must exist), and each error page (held in memory).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::future::Either;

use bytes::Bytes;
use http::header::{
    ACCEPT, ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_LENGTH, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH,
    IF_UNMODIFIED_SINCE, LOCATION, RANGE,
};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri};
use tokio::io::{AsyncRead, AsyncSeek, ReadBuf};
use tower_http::services::fs::{DefaultServeDirFallback, ServeDir, ServeFileSystemResponseBody};

use crate::config::{Config, FileError, FileErrors, StaticSite};

/// A file at most this large is read whole when first asked for (one blocking hop for resolve,
/// open, stat and read) and kept in memory while fresh (see [`Contained`]): front-end bundles,
/// however hot, cost no system call. A larger one streams in reads of [`CHUNK`].
const SMALL_FILE: u64 = 1024 * 1024;

/// The read size of a file that streams.
const CHUNK: usize = 64 * 1024;

/// How much of a streamed file one blocking read fetches ahead (four chunks per hop to the
/// blocking pool instead of one).
const READ_AHEAD: u64 = 256 * 1024;

/// The largest error page ferry holds in memory.
const MAX_PAGE: u64 = 1024 * 1024;

/// A `static` route's files.
#[derive(Debug)]
pub struct Site {
    /// The directory, resolved.
    pub dir: PathBuf,
    serve: ServeDir<DefaultServeDirFallback, Contained>,
    /// `alias`: the route's path prefix, which the directory replaces.
    alias: Option<Box<str>>,
    index: Box<[Box<str>]>,
    fallback: Option<Box<str>>,
    cache: Option<HeaderValue>,
    html_cache: Option<HeaderValue>,
    /// `missing: next`: see [`Site::has_file`].
    missing_next: bool,
    /// `static.file`: the one file (as `/NAME` under `dir`) the route's requests get — under a
    /// prefix, only the prefix itself (nginx appends the rest of the path to an alias as text).
    file: Option<(Box<str>, Option<Box<str>>)>,
}

/// A file's answer body: streamed by ServeDir, or (a whole file kept in memory) the bytes
/// themselves, sent as one frame without a copy.
pub enum FileBody {
    Stream(ServeFileSystemResponseBody),
    Memory(Bytes),
}

tokio::task_local! {
    /// The bytes of the in-memory file [`Contained`] handed ServeDir during one [`Site::one`], so a
    /// full answer of it can send them as they are instead of copying them through a read buffer.
    static HANDED: std::cell::RefCell<Option<Bytes>>;
}

fn hand(b: &Bytes) {
    let _ = HANDED.try_with(|h| *h.borrow_mut() = Some(b.clone()));
}

/// What serving a request gave.
pub enum Served {
    /// A file (200/206), or what the request's headers asked for instead (304, 412, 416), or a
    /// redirect to a directory's `/` form, or 405 for a method other than GET and HEAD.
    Answer(Response<FileBody>),
    /// `/prefix` of an `alias` route: 301 to `/prefix/` (as nginx does for a directory).
    Redirect(HeaderValue),
    /// Nothing there (or a path ferry refuses to look up, or a file outside the directory).
    NotFound,
    /// The file exists but could not be read.
    Failed(io::Error),
}

impl Site {
    /// `dir`: the directory, resolved (see [`Files::load`]); `prefix`: the route's path prefix.
    pub fn new(s: &StaticSite, dir: PathBuf, prefix: Option<&str>) -> Site {
        let alias: Option<Box<str>> = match (s.alias, prefix) {
            (true, Some(p)) if p != "/" => Some(p.into()),
            _ => None,
        };
        let mut serve = ServeDir::with_backend(&dir, Contained::new(&dir))
            .append_index_html_on_directories(true)
            .redirect_to_trailing_slash(true)
            .with_buf_chunk_size(CHUNK);
        if let Some(p) = &alias {
            serve = serve.redirect_path_prefix(p.to_string());
        }
        if s.precompressed {
            serve = serve.precompressed_br().precompressed_gzip().precompressed_zstd();
        }
        Site {
            dir,
            serve,
            alias,
            index: s.index.iter().map(|i| i.as_str().into()).collect(),
            fallback: s.fallback.as_deref().map(Into::into),
            cache: s.cache.clone(),
            html_cache: s.html_cache.clone(),
            file: s.file.as_ref().map(|f| (format!("/{f}").into(), prefix.map(Into::into))),
            missing_next: s.missing_next,
        }
    }

    /// `static.missing: next`: a path with no file goes on to the routes after this one.
    pub fn missing_next(&self) -> bool {
        self.missing_next
    }

    /// Is there a file for `path` (its path in normal form), or a directory with one of the
    /// `index` files when it ends in `/`? (nginx try_files' `$uri` and `$uri/`.)
    pub async fn has_file(&self, path: &str) -> bool {
        let rel = match &self.alias {
            None => path,
            Some(prefix) => match path.strip_prefix(&**prefix) {
                Some(rest) if rest.starts_with('/') => rest,
                _ => return false,
            },
        };
        // The path in normal form keeps some escapes: decoded here, as ServeDir decodes them; an
        // escaped separator or NUL never names a file.
        let refused = ["\\", "%2f", "%2F", "%5c", "%5C", "%00", "/../", "/./"];
        if refused.iter().any(|r| rel.contains(r)) || rel.ends_with("/..") {
            return false;
        }
        let Ok(rel) = percent_encoding::percent_decode_str(rel).decode_utf8() else { return false };
        let rel = rel.as_ref();
        let full = self.dir.join(rel.trim_start_matches('/'));
        if rel.ends_with('/') {
            for name in self.index.iter() {
                if tokio::fs::metadata(full.join(&**name)).await.is_ok_and(|m| m.is_file()) {
                    return true;
                }
            }
            return false;
        }
        tokio::fs::metadata(&full).await.is_ok_and(|m| m.is_file())
    }

    /// Serves `req` (its path already in normal form, `proxy::path`).
    ///
    /// A path ending in `/` is answered by the first `index` file there. When nothing is found and
    /// the route has a `fallback`, a navigation (a GET or HEAD whose last path segment has no
    /// extension, or that accepts `text/html`) gets the fallback file with 200, as nginx's
    /// `try_files $uri $uri/ /index.html`; a missing asset (`/assets/app.3f2a.js` fetched by a
    /// script) gets 404, not the HTML page in its place.
    pub async fn serve<B>(&self, req: &Request<B>) -> Served {
        let path = req.uri().path();
        let method_ok = matches!(*req.method(), Method::GET | Method::HEAD | Method::POST);
        let rel = match (&self.file, &self.alias) {
            (Some((_, Some(at))), _) if path != &**at => return Served::NotFound,
            (Some((f, _)), _) => f,
            (None, None) => path,
            // nginx refuses the method (405) before it redirects a directory to its `/` form.
            (None, Some(prefix)) => match path.strip_prefix(&**prefix) {
                Some("") if method_ok => return redirect_to_slash(req.uri()),
                Some("") => "/",
                Some(rest) if rest.starts_with('/') => rest,
                _ => return Served::NotFound,
            },
        };
        // Escapes that still stand for a separator or NUL never name a file of a built site.
        let refused = ["\\", "%5c", "%5C", "%2f", "%2F", "%00"];
        if refused.iter().any(|r| rel.contains(r)) {
            return Served::NotFound;
        }
        match *req.method() {
            Method::GET | Method::HEAD => self.lookup(req, rel).await,
            // nginx: POST to a file that is there is refused (405), to one that is not, 404.
            Method::POST => {
                let mut head = Request::new(());
                *head.method_mut() = Method::HEAD;
                *head.uri_mut() = req.uri().clone();
                match self.lookup(&head, rel).await {
                    Served::NotFound => Served::NotFound,
                    // A directory: its redirect to the `/` form comes before the method check.
                    Served::Answer(r) if r.status().is_redirection() => Served::Answer(r),
                    r @ Served::Redirect(_) => r,
                    _ => self.one(req, rel).await,
                }
            }
            // ServeDir answers 405 with `Allow: GET,HEAD`.
            _ => self.one(req, rel).await,
        }
    }

    /// A GET or HEAD: the file, the index of a directory, or the fallback.
    async fn lookup<B>(&self, req: &Request<B>, rel: &str) -> Served {
        let found = match rel.ends_with('/') {
            true => self.index(req, rel).await,
            false => self.one(req, rel).await,
        };
        match (found, &self.fallback) {
            (Served::NotFound, Some(f)) if navigation(req) => self.one(req, f).await,
            (found, _) => found,
        }
    }

    async fn index<B>(&self, req: &Request<B>, dir: &str) -> Served {
        for name in self.index.iter() {
            match self.one(req, &format!("{dir}{name}")).await {
                Served::NotFound => continue,
                found => return found,
            }
        }
        Served::NotFound
    }

    /// One path under the directory, with the request's conditional, range and encoding headers.
    async fn one<B>(&self, req: &Request<B>, rel: &str) -> Served {
        // The query rides along for the redirect of a directory to its `/` form.
        let uri = match req.uri().query() {
            None => Uri::try_from(rel),
            Some(q) => Uri::try_from(format!("{rel}?{q}")),
        };
        let Ok(uri) = uri else {
            return Served::NotFound;
        };
        let mut one = Request::new(());
        *one.method_mut() = req.method().clone();
        *one.uri_mut() = uri;
        for name in [IF_MATCH, IF_NONE_MATCH, IF_MODIFIED_SINCE, IF_UNMODIFIED_SINCE, RANGE, ACCEPT_ENCODING] {
            if let Some(v) = req.headers().get(&name) {
                one.headers_mut().insert(name, v.clone());
            }
        }
        let head = *req.method() == Method::HEAD;
        let served = HANDED.scope(Default::default(), async {
            let r = self.serve.clone().try_call(one).await;
            (r, HANDED.with(|h| h.take()))
        });
        match served.await {
            (Ok(resp), _) if resp.status() == StatusCode::NOT_FOUND => Served::NotFound,
            // A directory without its `/`: nginx's 301, not ServeDir's 307.
            (Ok(resp), _) if resp.status() == StatusCode::TEMPORARY_REDIRECT => {
                resp.headers().get(LOCATION).cloned().map_or(Served::NotFound, Served::Redirect)
            }
            (Ok(resp), handed) => {
                // A whole file from memory (the length says it is the one handed over): its bytes.
                let whole = resp.status() == StatusCode::OK && !head;
                let len = resp
                    .headers()
                    .get(CONTENT_LENGTH)
                    .and_then(|v| usize::try_from(crate::http1::content_length(v.as_bytes())?).ok());
                let mut resp = match handed {
                    Some(b) if whole && len == Some(b.len()) => resp.map(|_| FileBody::Memory(b)),
                    _ => resp.map(FileBody::Stream),
                };
                let html = rel.ends_with(".html") || rel.ends_with(".htm");
                let cache = if html { &self.html_cache } else { &self.cache };
                let cacheable =
                    matches!(resp.status(), StatusCode::OK | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED);
                if let (Some(c), true) = (cache, cacheable) {
                    resp.headers_mut().insert(CACHE_CONTROL, c.clone());
                }
                Served::Answer(resp)
            }
            (Err(e), _) if not_found(&e) => Served::NotFound,
            (Err(e), _) => Served::Failed(e),
        }
    }
}

/// `/prefix` of an `alias` route → `/prefix/`, with the query.
fn redirect_to_slash(uri: &Uri) -> Served {
    let to = match uri.query() {
        Some(q) => format!("{}/?{q}", uri.path()),
        None => format!("{}/", uri.path()),
    };
    HeaderValue::try_from(to).map_or(Served::NotFound, Served::Redirect)
}

fn navigation<B>(req: &Request<B>) -> bool {
    let last = req.uri().path().rsplit('/').next().unwrap_or("");
    let accepts_html = req.headers().get(ACCEPT).is_some_and(|a| a.as_bytes().windows(9).any(|w| w == b"text/html"));
    matches!(*req.method(), Method::GET | Method::HEAD) && (!last.contains('.') || accepts_html)
}

fn not_found(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied | io::ErrorKind::InvalidInput)
        || e.raw_os_error() == Some(20) // ENOTDIR: a path through a file
}

/// The file backend of a `static` route: every path is resolved (symlinks followed) and must stay
/// under `root` (itself resolved), or it is reported as not found. File I/O runs on tokio's
/// blocking pool, never on the proxy workers.
///
/// What it learns about a path is kept for [`FRESH`] (nginx's `open_file_cache` with
/// `open_file_cache_valid 1s` and `open_file_cache_errors on`): the metadata, a small file's bytes
/// (up to [`SMALL_FILE`]) and a missing path's error. So a hot small file (the index, hashed
/// assets, the precompressed siblings a browser asks for and that do not exist) is served with no
/// blocking hop and no system call, and a cold one with one hop (resolve, open, stat and read
/// together); a file changed on disk is seen at the latest `FRESH` later. The table is bounded
/// ([`MAX_ENTRIES`], [`MAX_BYTES`]: when full it starts over) and starts empty with each config.
#[derive(Debug, Clone)]
pub struct Contained {
    root: Arc<Path>,
    known: Arc<Mutex<Known>>,
}

/// How long what was learned about a path is trusted.
pub const FRESH: Duration = Duration::from_secs(1);
const MAX_ENTRIES: usize = 4096;
const MAX_BYTES: usize = 32 << 20;

#[derive(Debug, Default)]
struct Known {
    paths: HashMap<PathBuf, (Instant, Lookup)>,
    bytes: usize,
}

/// What a path turned out to be.
#[derive(Debug, Clone)]
enum Lookup {
    /// A file or directory; a small regular file's bytes too.
    Found(std::fs::Metadata, Option<Bytes>),
    /// Not there, not readable, or outside the directory: the error, to give again.
    Failed(io::ErrorKind, Option<i32>),
}

impl Lookup {
    fn error(kind: io::ErrorKind, code: Option<i32>) -> io::Error {
        match code {
            Some(c) => io::Error::from_raw_os_error(c),
            None => io::Error::from(kind),
        }
    }
}

fn outside() -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, "the path leaves the static directory")
}

impl Contained {
    fn new(root: &Path) -> Contained {
        Contained { root: root.into(), known: Arc::default() }
    }

    fn resolve(&self, path: &Path) -> io::Result<PathBuf> {
        let real = std::fs::canonicalize(path)?;
        match real.starts_with(&self.root) {
            true => Ok(real),
            false => Err(outside()),
        }
    }

    /// Resolves, opens and stats `path`, reading it whole if it is a small regular file.
    fn inspect(&self, path: &Path) -> (Lookup, Option<std::fs::File>) {
        let opened = self.resolve(path).and_then(|real| {
            let mut f = std::fs::File::open(real)?;
            let meta = f.metadata()?;
            if meta.is_file() && meta.len() <= SMALL_FILE {
                let mut buf = Vec::with_capacity(meta.len() as usize);
                f.read_to_end(&mut buf)?;
                return Ok((Lookup::Found(meta, Some(Bytes::from(buf))), None));
            }
            Ok((Lookup::Found(meta, None), Some(f)))
        });
        opened.unwrap_or_else(|e| (Lookup::Failed(e.kind(), e.raw_os_error()), None))
    }

    fn recall(&self, path: &Path) -> Option<Lookup> {
        let known = lock(&self.known);
        let (at, l) = known.paths.get(path)?;
        (at.elapsed() < FRESH).then(|| l.clone())
    }

    fn learn(&self, path: PathBuf, l: &Lookup) {
        let size = match l {
            Lookup::Found(_, Some(b)) => b.len(),
            _ => 0,
        };
        let mut known = lock(&self.known);
        if known.paths.len() >= MAX_ENTRIES || known.bytes + size > MAX_BYTES {
            *known = Known::default();
        }
        if let Some((_, Lookup::Found(_, Some(old)))) = known.paths.insert(path, (Instant::now(), l.clone())) {
            known.bytes -= old.len();
        }
        known.bytes += size;
    }
}

type Blocking<T> = Pin<Box<dyn Future<Output = io::Result<T>> + Send>>;
type Answer<T> = Either<std::future::Ready<io::Result<T>>, Blocking<T>>;

fn blocking<T: Send + 'static>(f: impl FnOnce() -> io::Result<T> + Send + 'static) -> Answer<T> {
    Either::Right(Box::pin(async move { tokio::task::spawn_blocking(f).await.map_err(io::Error::other)? }))
}

fn ready<T>(r: io::Result<T>) -> Answer<T> {
    Either::Left(std::future::ready(r))
}

impl tower_http::services::fs::Backend for Contained {
    type File = Opened;
    type Metadata = std::fs::Metadata;
    type OpenFuture = Answer<Opened>;
    type MetadataFuture = Answer<std::fs::Metadata>;

    fn open(&self, path: PathBuf) -> Self::OpenFuture {
        match self.recall(&path) {
            Some(Lookup::Found(meta, Some(b))) => {
                hand(&b);
                return ready(Ok(Opened { data: Data::Small(io::Cursor::new(b)), meta }));
            }
            Some(Lookup::Failed(kind, code)) => return ready(Err(Lookup::error(kind, code))),
            _ => {}
        }
        let this = self.clone();
        let read = blocking(move || {
            let (l, file) = this.inspect(&path);
            this.learn(path, &l);
            match (l, file) {
                (Lookup::Found(meta, Some(b)), _) => Ok(Opened { data: Data::Small(io::Cursor::new(b)), meta }),
                (Lookup::Found(meta, None), Some(f)) => Ok(Opened { data: Data::Large(Streamed::new(f)), meta }),
                (Lookup::Found(..), None) => unreachable!("a file not read whole is returned open"),
                (Lookup::Failed(kind, code), _) => Err(Lookup::error(kind, code)),
            }
        });
        // Awaited in the request's task, where `HANDED` is in scope.
        Either::Right(Box::pin(async move {
            let opened = read.await?;
            if let Data::Small(c) = &opened.data {
                hand(c.get_ref());
            }
            Ok(opened)
        }))
    }

    fn metadata(&self, path: PathBuf) -> Self::MetadataFuture {
        match self.recall(&path) {
            Some(Lookup::Found(meta, _)) => return ready(Ok(meta)),
            Some(Lookup::Failed(kind, code)) => return ready(Err(Lookup::error(kind, code))),
            None => {}
        }
        // Learned in full (a small file's bytes too): the open that usually follows finds it here.
        let this = self.clone();
        blocking(move || {
            let (l, _) = this.inspect(&path);
            this.learn(path, &l);
            match l {
                Lookup::Found(meta, _) => Ok(meta),
                Lookup::Failed(kind, code) => Err(Lookup::error(kind, code)),
            }
        })
    }
}

/// An opened file: small ones already in memory.
pub struct Opened {
    data: Data,
    meta: std::fs::Metadata,
}

enum Data {
    Small(io::Cursor<Bytes>),
    Large(Streamed),
}

/// A file read [`READ_AHEAD`] bytes at a time on the blocking pool (never more than one read in
/// flight, nothing read until asked for), handed out in whatever pieces the reader wants.
struct Streamed {
    /// `None` while a read has it.
    file: Option<std::fs::File>,
    /// The file offset of the first byte after `ahead`.
    offset: u64,
    ahead: Bytes,
    reading: Option<tokio::task::JoinHandle<(std::fs::File, io::Result<Vec<u8>>)>>,
}

impl Streamed {
    fn new(file: std::fs::File) -> Streamed {
        Streamed { file: Some(file), offset: 0, ahead: Bytes::new(), reading: None }
    }

    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        use std::io::{Seek, SeekFrom};
        loop {
            if !self.ahead.is_empty() {
                let n = buf.remaining().min(self.ahead.len());
                buf.put_slice(&self.ahead.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if let Some(h) = &mut self.reading {
                let (file, read) = std::task::ready!(Pin::new(h).poll(cx)).map_err(io::Error::other)?;
                self.reading = None;
                self.file = Some(file);
                let data = read?;
                if data.is_empty() {
                    return Poll::Ready(Ok(())); // the end
                }
                self.offset += data.len() as u64;
                self.ahead = Bytes::from(data);
                continue;
            }
            let mut file = self.file.take().expect("no read in flight");
            let at = self.offset;
            self.reading = Some(tokio::task::spawn_blocking(move || {
                let mut data = Vec::with_capacity(READ_AHEAD as usize);
                let read =
                    file.seek(SeekFrom::Start(at)).and_then(|_| (&mut file).take(READ_AHEAD).read_to_end(&mut data));
                (file, read.map(|_| data))
            }));
        }
    }

    /// Only before reading (ServeDir seeks once, to a range's start): moves the next read.
    fn start_seek(&mut self, to: io::SeekFrom, len: u64) -> io::Result<()> {
        let here = self.offset - self.ahead.len() as u64;
        let target = match to {
            io::SeekFrom::Start(n) => Some(n),
            io::SeekFrom::End(d) => len.checked_add_signed(d),
            io::SeekFrom::Current(d) => here.checked_add_signed(d),
        };
        let Some(target) = target.filter(|_| self.reading.is_none()) else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "seek while reading, or before the start"));
        };
        self.offset = target;
        self.ahead = Bytes::new();
        Ok(())
    }
}

impl AsyncRead for Opened {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match &mut self.data {
            Data::Small(c) => Pin::new(c).poll_read(cx, buf),
            Data::Large(f) => f.poll_read(cx, buf),
        }
    }
}

impl AsyncSeek for Opened {
    fn start_seek(mut self: Pin<&mut Self>, position: io::SeekFrom) -> io::Result<()> {
        let this = &mut *self;
        match &mut this.data {
            Data::Small(c) => Pin::new(c).start_seek(position),
            Data::Large(f) => f.start_seek(position, this.meta.len()),
        }
    }

    fn poll_complete(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        match &mut self.data {
            Data::Small(c) => Pin::new(c).poll_complete(cx),
            Data::Large(f) => Poll::Ready(Ok(f.offset - f.ahead.len() as u64)),
        }
    }
}

impl tower_http::services::fs::File for Opened {
    type Metadata = std::fs::Metadata;
    type MetadataFuture<'a> = std::future::Ready<io::Result<std::fs::Metadata>>;

    fn metadata(&self) -> Self::MetadataFuture<'_> {
        std::future::ready(Ok(self.meta.clone()))
    }
}

/// Error pages by status, ready to send.
#[derive(Debug, Default)]
pub struct Pages(Box<[(StatusCode, Bytes)]>);

impl Pages {
    pub fn new(pages: Vec<(StatusCode, Bytes)>) -> Pages {
        Pages(pages.into_boxed_slice())
    }

    pub fn statuses(&self) -> Vec<u16> {
        self.0.iter().map(|(s, _)| s.as_u16()).collect()
    }

    pub fn get(&self, status: StatusCode) -> Option<&Bytes> {
        self.0.iter().find(|(s, _)| *s == status).map(|(_, b)| b)
    }
}

/// Directories and pages read for a config not yet applied.
#[derive(Debug)]
pub struct StagedFiles {
    dirs: HashMap<PathBuf, PathBuf>,
    pages: HashMap<PathBuf, Bytes>,
}

/// The static directories (resolved) and error pages (read) a config names; loaded when the
/// config is applied, so a table build does no I/O.
#[derive(Debug, Default)]
pub struct Files {
    dirs: Mutex<HashMap<PathBuf, PathBuf>>,
    pages: Mutex<HashMap<PathBuf, Bytes>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Files {
    /// Resolves every static directory (it must be one) and reads every error page `config`
    /// names, reporting every problem. Nothing live changes until [`commit`](Self::commit).
    pub fn stage(&self, config: &Config) -> Result<StagedFiles, FileErrors> {
        let mut errors = Vec::new();
        let mut dirs = HashMap::new();
        let mut pages = HashMap::new();
        let mut seen = HashSet::new();
        for l in &config.listeners {
            let routes = l.routes.iter();
            for p in l.error_pages.iter().chain(routes.clone().flat_map(|r| &r.error_pages)).map(|(_, p)| p) {
                if seen.insert(p) {
                    match read_page(p) {
                        Ok(b) => drop(pages.insert(p.clone(), b)),
                        Err(e) => errors.push(e),
                    }
                }
            }
            for s in routes.filter_map(|r| r.files.as_ref()) {
                match std::fs::canonicalize(&s.dir) {
                    Ok(real) if real.is_dir() => drop(dirs.insert(s.dir.clone(), real)),
                    Ok(_) => errors.push(FileError::new(&s.dir, "static directory", &"not a directory")),
                    Err(e) => errors.push(FileError::new(&s.dir, "static directory", &e)),
                }
            }
        }
        if !errors.is_empty() {
            return Err(FileErrors(errors));
        }
        Ok(StagedFiles { dirs, pages })
    }

    /// Puts what [`stage`](Self::stage) read in place; what the config no longer names is forgotten.
    pub fn commit(&self, staged: StagedFiles) {
        *lock(&self.dirs) = staged.dirs;
        *lock(&self.pages) = staged.pages;
    }

    /// [`stage`](Self::stage) then [`commit`](Self::commit).
    pub fn load(&self, config: &Config) -> Result<(), FileErrors> {
        self.stage(config).map(|s| self.commit(s))
    }

    /// A route's files (the directory as resolved by [`load`](Self::load)).
    pub fn site(&self, s: &StaticSite, prefix: Option<&str>) -> Site {
        let dir = lock(&self.dirs).get(&s.dir).cloned().unwrap_or_else(|| s.dir.clone());
        Site::new(s, dir, prefix)
    }

    /// A listener's pages with a route's over them (status by status); `None` when there are none.
    pub fn pages(&self, listener: &[(StatusCode, PathBuf)], route: &[(StatusCode, PathBuf)]) -> Option<Pages> {
        let loaded = lock(&self.pages);
        let mut out: Vec<(StatusCode, Bytes)> = Vec::new();
        for (status, path) in route.iter().chain(listener) {
            if out.iter().any(|(s, _)| s == status) {
                continue;
            }
            if let Some(b) = loaded.get(path) {
                out.push((*status, b.clone()));
            }
        }
        (!out.is_empty()).then(|| Pages::new(out))
    }
}

fn read_page(p: &Path) -> Result<Bytes, FileError> {
    let what = "error page";
    let meta = std::fs::metadata(p).map_err(|e| FileError::new(p, what, &e))?;
    if !meta.is_file() {
        return Err(FileError::new(p, what, &"not a file"));
    }
    if meta.len() > MAX_PAGE {
        return Err(FileError::new(p, what, &format!("larger than {MAX_PAGE} bytes")));
    }
    std::fs::read(p).map(Bytes::from).map_err(|e| FileError::new(p, what, &e))
}
