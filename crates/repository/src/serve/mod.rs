//! `vrepo serve`: a small HTTP/1.1 file server for repository trees.
//!
//! It serves what dnf, apt, `vrepo mirror` and `wget --mirror` need from a plain tree of files:
//! GET and HEAD, one byte range (`Range: bytes=…`, for resumed downloads), `Last-Modified` and
//! `If-Modified-Since`, a content type by file extension, persistent connections, and simple
//! directory listings. It is not a general web server: for a large site, serve the same tree
//! with nginx (see docs/commands.md).
//!
//! # Safety of the served tree
//!
//! Every request path is decoded, split into components and refused if a component is `..`,
//! hidden (starts with `.`, which keeps `.vrepo/` state and half-published staging directories
//! private) or contains a NUL. The remaining path is opened relative to the directory handle of
//! the root with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`, so the kernel refuses any
//! symlink that would lead out of the tree, whoever planted it and whenever.
//!
//! # Concurrency
//!
//! One thread accepts; a fixed pool of workers serves connections from a bounded queue. When
//! the queue is full, the acceptor answers `503` at once instead of piling up connections.
//! Idle persistent connections are closed after a few seconds so that they do not hold
//! workers. [`ServerHandle::shutdown`] stops accepting, lets the workers finish the requests in
//! flight, and makes [`Server::run`] return.

mod http;

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::fs::{Mode, OFlags, ResolveFlags};

pub use http::{format_http_date, parse_http_date};

/// One served request, for logging and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLog {
    /// The client's address.
    pub peer: SocketAddr,
    /// `GET`, `HEAD`, …
    pub method: String,
    /// The request target as sent.
    pub target: String,
    /// The status code answered.
    pub status: u16,
    /// Body bytes sent.
    pub bytes: u64,
    /// Time spent on the request.
    pub duration: Duration,
}

impl std::fmt::Display for RequestLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} \"{} {}\" {} {} {:.1}ms",
            self.peer,
            self.method,
            self.target.escape_debug(),
            self.status,
            self.bytes,
            self.duration.as_secs_f64() * 1000.0
        )
    }
}

/// Called once per request from the worker threads.
pub type RequestLogger = Arc<dyn Fn(&RequestLog) + Send + Sync>;

/// How to serve.
#[derive(Clone)]
pub struct ServeOptions {
    /// Address to listen on; port 0 picks a free one (see [`Server::local_addr`]).
    pub listen: SocketAddr,
    /// Connections served at the same time.
    pub workers: usize,
    /// Accepted connections waiting for a worker before new ones get `503`.
    pub queue: usize,
    /// Idle time after which a persistent connection is closed.
    pub keep_alive: Duration,
    /// Whether directories without an `index.html` get a listing.
    pub listings: bool,
    /// Receives one record per request.
    pub logger: Option<RequestLogger>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            workers: 16,
            queue: 64,
            keep_alive: Duration::from_secs(5),
            listings: true,
            logger: None,
        }
    }
}

/// The server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The root directory cannot be opened.
    #[error("cannot open `{path}` to serve it")]
    Root {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The address cannot be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Accepting connections failed.
    #[error("cannot accept connections")]
    Accept(#[source] io::Error),
}

/// Controls a running [`Server`] from another thread.
#[derive(Clone)]
pub struct ServerHandle {
    inner: Arc<Shared>,
    addr: SocketAddr,
}

struct Shared {
    stop: AtomicBool,
    requests: AtomicU64,
    /// Open connections, so that shutdown can wake the workers waiting on idle ones.
    connections: Mutex<HashMap<u64, TcpStream>>,
    next_connection: AtomicU64,
}

impl ServerHandle {
    /// Stops accepting, finishes the requests in flight, and makes [`Server::run`] return.
    pub fn shutdown(&self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        // A worker blocked reading the next request of an idle connection sees end-of-file;
        // one writing a response finishes it and then sees the stop flag.
        if let Ok(connections) = self.inner.connections.lock() {
            for stream in connections.values() {
                let _ = stream.shutdown(std::net::Shutdown::Read);
            }
        }
        // Wake the acceptor, which is blocked in accept().
        let _ = TcpStream::connect_timeout(&wake_addr(self.addr), Duration::from_secs(1));
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }
}

fn wake_addr(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], a.port()))
        }
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
        }
        other => other,
    }
}

/// A bound, not yet running server.
pub struct Server {
    listener: TcpListener,
    root: Arc<OwnedFd>,
    options: ServeOptions,
    handle: ServerHandle,
}

impl Server {
    /// Opens `root` and binds the listening socket.
    pub fn bind(root: &Path, options: ServeOptions) -> Result<Server, ServeError> {
        let dir = rustix::fs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ServeError::Root {
            path: root.to_owned(),
            source: e.into(),
        })?;
        let listener = TcpListener::bind(options.listen).map_err(|source| ServeError::Bind {
            addr: options.listen,
            source,
        })?;
        let addr = listener.local_addr().map_err(|source| ServeError::Bind {
            addr: options.listen,
            source,
        })?;
        Ok(Server {
            listener,
            root: Arc::new(dir),
            options,
            handle: ServerHandle {
                inner: Arc::new(Shared {
                    stop: AtomicBool::new(false),
                    requests: AtomicU64::new(0),
                    connections: Mutex::new(HashMap::new()),
                    next_connection: AtomicU64::new(0),
                }),
                addr,
            },
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.addr
    }

    /// A handle to stop the server or read its counters.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Serves until [`ServerHandle::shutdown`].
    pub fn run(self) -> Result<(), ServeError> {
        let (sender, receiver) = crossbeam_channel::bounded::<TcpStream>(self.options.queue.max(1));
        let workers: Vec<_> = (0..self.options.workers.max(1))
            .map(|_| {
                let receiver = receiver.clone();
                let root = Arc::clone(&self.root);
                let options = self.options.clone();
                let shared = Arc::clone(&self.handle.inner);
                std::thread::spawn(move || {
                    for stream in receiver {
                        if shared.stop.load(Ordering::SeqCst) {
                            continue;
                        }
                        let id = shared.next_connection.fetch_add(1, Ordering::Relaxed);
                        if let (Ok(clone), Ok(mut connections)) =
                            (stream.try_clone(), shared.connections.lock())
                        {
                            connections.insert(id, clone);
                        }
                        serve_connection(stream, &root, &options, &shared);
                        if let Ok(mut connections) = shared.connections.lock() {
                            connections.remove(&id);
                        }
                    }
                })
            })
            .collect();
        drop(receiver);
        let mut result = Ok(());
        for stream in self.listener.incoming() {
            if self.handle.inner.stop.load(Ordering::SeqCst) {
                break;
            }
            let stream = match stream {
                Ok(stream) => stream,
                // A client that gave up before accept() is not the server's problem.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::MFILE.raw_os_error()) => {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                Err(e) => {
                    result = Err(ServeError::Accept(e));
                    break;
                }
            };
            if let Err(crossbeam_channel::TrySendError::Full(mut stream)) = sender.try_send(stream)
            {
                let _ = stream.write_all(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\nConnection: close\r\n\r\n",
                );
            }
        }
        drop(sender);
        for worker in workers {
            let _ = worker.join();
        }
        result
    }
}

/// Limits on what a client may send.
const MAX_HEADER_BYTES: usize = 16 << 10;

fn serve_connection(stream: TcpStream, root: &OwnedFd, options: &ServeOptions, shared: &Shared) {
    let Ok(peer) = stream.peer_addr() else { return };
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(60)));
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut writer = io::BufWriter::with_capacity(16 << 10, write_half);
    let mut first = true;
    loop {
        if shared.stop.load(Ordering::SeqCst) && !first {
            break;
        }
        let timeout = if first {
            Duration::from_secs(10)
        } else {
            options.keep_alive
        };
        let _ = reader.get_ref().set_read_timeout(Some(timeout));
        first = false;
        let request = match http::read_request(&mut reader, MAX_HEADER_BYTES) {
            Ok(Some(request)) => request,
            Ok(None) => break,
            Err(http::RequestError::Io(_)) => break,
            Err(http::RequestError::Bad(reason)) => {
                let started = Instant::now();
                let status = if reason == "header too large" {
                    431
                } else {
                    400
                };
                let _ = http::write_simple(&mut writer, status, reason, false);
                let _ = writer.flush();
                log(
                    options,
                    shared,
                    RequestLog {
                        peer,
                        method: "-".into(),
                        target: "-".into(),
                        status,
                        bytes: 0,
                        duration: started.elapsed(),
                    },
                );
                break;
            }
        };
        let started = Instant::now();
        let keep_alive = request.keep_alive && !shared.stop.load(Ordering::SeqCst);
        let outcome = respond(&request, root, options, &mut writer, keep_alive);
        let flushed = writer.flush();
        let (status, bytes, ok) = match outcome {
            Ok((status, bytes)) => (status, bytes, flushed.is_ok()),
            Err(_) => (0, 0, false),
        };
        log(
            options,
            shared,
            RequestLog {
                peer,
                method: request.method.clone(),
                target: request.target.clone(),
                status,
                bytes,
                duration: started.elapsed(),
            },
        );
        if !ok || !keep_alive {
            break;
        }
        let _ = reader.fill_buf();
    }
}

fn log(options: &ServeOptions, shared: &Shared, record: RequestLog) {
    shared.requests.fetch_add(1, Ordering::Relaxed);
    if let Some(logger) = &options.logger {
        logger(&record);
    }
}

/// Splits a request target into safe path components; `None` if it must be refused.
fn safe_components(target: &str) -> Option<(Vec<String>, bool)> {
    let path = target.split(['?', '#']).next().unwrap_or("");
    if !path.starts_with('/') {
        return None;
    }
    let decoded = http::percent_decode_bytes(path)?;
    let decoded = String::from_utf8(decoded).ok()?;
    let trailing_slash = decoded.ends_with('/');
    let mut components = Vec::new();
    for component in decoded.split('/') {
        match component {
            "" | "." => {}
            c if c.starts_with('.') || c.contains('\0') || c.contains('\\') => return None,
            c => components.push(c.to_owned()),
        }
    }
    Some((components, trailing_slash))
}

fn open_beneath(root: &OwnedFd, components: &[String]) -> io::Result<OwnedFd> {
    let rel = if components.is_empty() {
        ".".to_owned()
    } else {
        components.join("/")
    };
    loop {
        match rustix::fs::openat2(
            root,
            rel.as_str(),
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        ) {
            // The kernel asks for a retry when a rename raced with the lookup.
            Err(rustix::io::Errno::AGAIN) => continue,
            other => return other.map_err(Into::into),
        }
    }
}

fn respond(
    request: &http::Request,
    root: &OwnedFd,
    options: &ServeOptions,
    out: &mut io::BufWriter<TcpStream>,
    keep_alive: bool,
) -> io::Result<(u16, u64)> {
    let head = match request.method.as_str() {
        "GET" => false,
        "HEAD" => true,
        _ => {
            http::write_simple(out, 405, "method not allowed", keep_alive)?;
            return Ok((405, 0));
        }
    };
    let Some((components, trailing_slash)) = safe_components(&request.target) else {
        http::write_simple(out, 404, "not found", keep_alive)?;
        return Ok((404, 0));
    };
    let fd = match open_beneath(root, &components) {
        Ok(fd) => fd,
        Err(e) => {
            let (status, text) = match e.raw_os_error() {
                Some(code) if code == rustix::io::Errno::ACCESS.raw_os_error() => {
                    (403, "forbidden")
                }
                _ => (404, "not found"),
            };
            http::write_simple(out, status, text, keep_alive)?;
            return Ok((status, 0));
        }
    };
    let stat = rustix::fs::fstat(&fd)?;
    let file_type = rustix::fs::FileType::from_raw_mode(stat.st_mode);
    if file_type == rustix::fs::FileType::Directory {
        if !trailing_slash {
            let location = format!("{}/", request.target.split('?').next().unwrap_or("/"));
            http::write_redirect(out, &location, keep_alive)?;
            return Ok((301, 0));
        }
        let mut index = components.clone();
        index.push("index.html".into());
        if let Ok(index_fd) = open_beneath(root, &index) {
            return send_file(request, index_fd, "index.html", head, out, keep_alive);
        }
        if !options.listings {
            http::write_simple(out, 403, "forbidden", keep_alive)?;
            return Ok((403, 0));
        }
        let body = listing(fd, &request.target)?;
        http::write_head(
            out,
            200,
            &[
                ("Content-Type", "text/html; charset=utf-8".into()),
                ("Content-Length", body.len().to_string()),
            ],
            keep_alive,
        )?;
        if !head {
            out.write_all(body.as_bytes())?;
        }
        return Ok((200, if head { 0 } else { body.len() as u64 }));
    }
    if file_type != rustix::fs::FileType::RegularFile {
        http::write_simple(out, 404, "not found", keep_alive)?;
        return Ok((404, 0));
    }
    let name = components.last().cloned().unwrap_or_default();
    send_file(request, fd, &name, head, out, keep_alive)
}

fn send_file(
    request: &http::Request,
    fd: OwnedFd,
    name: &str,
    head: bool,
    out: &mut io::BufWriter<TcpStream>,
    keep_alive: bool,
) -> io::Result<(u16, u64)> {
    let stat = rustix::fs::fstat(&fd)?;
    let size = u64::try_from(stat.st_size).unwrap_or(0);
    let mtime = UNIX_EPOCH + Duration::from_secs(u64::try_from(stat.st_mtime).unwrap_or(0));
    let exact_mtime = mtime + Duration::new(0, u32::try_from(stat.st_mtime_nsec).unwrap_or(0));
    // HTTP dates have whole seconds. A file changed less than a second ago may change again
    // within the same second, and a client that revalidated with that date would be told
    // "not modified" about the newer content (seen: apt keeping a Release replaced 0.3 s after
    // it fetched the previous one). So such a file gets no Last-Modified, and a conditional
    // request for it gets the file.
    let settled = SystemTime::now()
        .duration_since(exact_mtime)
        .is_ok_and(|age| age >= Duration::from_secs(1));
    let last_modified = settled.then(|| format_http_date(mtime));
    let content_type = http::content_type(name);
    if let Some(since) = request
        .header("if-modified-since")
        .and_then(parse_http_date)
        && settled
        && request.header("range").is_none()
        && secs(mtime) <= secs(since)
    {
        let headers: Vec<(&str, String)> = last_modified
            .map(|date| ("Last-Modified", date))
            .into_iter()
            .collect();
        http::write_head(out, 304, &headers, keep_alive)?;
        return Ok((304, 0));
    }
    let range = match request.header("range") {
        Some(value) => match http::parse_range(value, size) {
            http::Range::Whole => None,
            http::Range::Part(start, end) => Some((start, end)),
            http::Range::Unsatisfiable => {
                http::write_head(
                    out,
                    416,
                    &[
                        ("Content-Range", format!("bytes */{size}")),
                        ("Content-Length", "0".into()),
                    ],
                    keep_alive,
                )?;
                return Ok((416, 0));
            }
        },
        None => None,
    };
    let (status, start, length) = match range {
        Some((start, end)) => (206, start, end - start + 1),
        None => (200, 0, size),
    };
    let mut headers = vec![
        ("Content-Type", content_type.to_owned()),
        ("Content-Length", length.to_string()),
        ("Accept-Ranges", "bytes".into()),
    ];
    if let Some(date) = last_modified {
        headers.push(("Last-Modified", date));
    }
    if status == 206 {
        headers.push((
            "Content-Range",
            format!("bytes {start}-{}/{size}", start + length - 1),
        ));
    }
    http::write_head(out, status, &headers, keep_alive)?;
    if head {
        return Ok((status, 0));
    }
    out.flush()?;
    let sent = send_range(out.get_ref(), &fd, start, length)?;
    if sent < length {
        // The file shrank under us: the client must not take the short body as complete.
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank"));
    }
    Ok((status, sent))
}

/// Sends `length` bytes of `file` from `start` with sendfile(2), which moves them from the page
/// cache to the socket without copying them through user space; fewer only if the file
/// shrank meanwhile.
///
/// `io::copy` does not do this: std uses sendfile from a file only to a pipe or file, since
/// the data of a socket send may still be read from the page cache after the call returns, so
/// a change to the file right after it could reach the client (rust-lang/rust, `kernel_copy`).
/// A served tree changes by renaming new files in (`vrepo index` and `vrepo mirror` never
/// rewrite a published file in place), and copying through a buffer would not make a file
/// rewritten during the send consistent either.
fn send_range(socket: &TcpStream, file: &OwnedFd, start: u64, length: u64) -> io::Result<u64> {
    // Linux sends at most 0x7ffff000 bytes per call.
    const MAX_CHUNK: u64 = 1 << 30;
    let mut offset = start;
    let end = start + length;
    while offset < end {
        let chunk = usize::try_from((end - offset).min(MAX_CHUNK)).unwrap_or(1 << 20);
        match rustix::fs::sendfile(socket, file, Some(&mut offset), chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(offset - start)
}

fn secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn listing(dir: OwnedFd, target: &str) -> io::Result<String> {
    let mut names = Vec::new();
    let entries = rustix::fs::Dir::read_from(&dir)?;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let is_dir = entry.file_type() == rustix::fs::FileType::Directory
            || (entry.file_type() == rustix::fs::FileType::Unknown
                && rustix::fs::statat(&dir, entry.file_name(), rustix::fs::AtFlags::empty())
                    .is_ok_and(|s| {
                        rustix::fs::FileType::from_raw_mode(s.st_mode)
                            == rustix::fs::FileType::Directory
                    }));
        names.push(if is_dir { format!("{name}/") } else { name });
    }
    names.sort();
    let title = http::html_escape(target.split('?').next().unwrap_or("/"));
    let mut body = format!(
        "<!DOCTYPE html>\n<html><head><title>Index of {title}</title></head><body>\n<h1>Index of {title}</h1>\n<ul>\n"
    );
    for name in names {
        body.push_str(&format!(
            "<li><a href=\"{}\">{}</a></li>\n",
            http::percent_encode(&name),
            http::html_escape(&name)
        ));
    }
    body.push_str("</ul>\n</body></html>\n");
    Ok(body)
}
