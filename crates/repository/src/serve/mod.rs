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
//! # Concurrency, and slow clients
//!
//! A connection costs a thread only while it is being answered. One thread, the poller,
//! accepts connections and reads every request head, non-blocking, with epoll; a complete head
//! goes with its connection to a fixed pool of workers, which write the answer (a file with
//! sendfile(2)) and hand a persistent connection back to the poller to wait for its next
//! request. Clients that send their heads slowly, or keep idle connections open, so cost a
//! file descriptor and a small buffer each, not a worker. (In the security review, issue 13,
//! 200 clients sending a header byte every few seconds held all 16 workers of the previous
//! design, a thread per connection, and everyone else got `503`.)
//!
//! The limits, and why:
//!
//! - A whole request head must arrive within [`ServeOptions::head_timeout`] (10 s) of the
//!   connection's accept, or of the first byte of a later request on a persistent connection.
//!   A time-out per read bounds nothing: a client resets it with every byte. A head the
//!   deadline cuts off gets `408`.
//! - A persistent connection may stay idle [`ServeOptions::keep_alive`] (5 s) between requests.
//! - At most `workers + queue` connections are open at once (fewer when the file descriptor
//!   limit is lower), and at most [`ServeOptions::max_per_client`] from one client address (for
//!   IPv6 its /64, which a single host usually holds whole). A connection beyond either gets
//!   `503` with `Retry-After: 1` at once and is closed. The per-client cap keeps one address
//!   from taking every place; many addresses together can still fill them, each place for at
//!   most the deadline.
//! - Request heads over 16 KiB get `431`; request bodies are refused.
//!
//! [`ServerHandle::shutdown`] stops accepting, lets the workers finish the requests in flight,
//! and makes [`Server::run`] return.
//!
//! # Why not hyper
//!
//! A well-kept HTTP library was considered for this layer: hyper's `header_read_timeout` is
//! exactly the deadline above. We keep our own, because:
//!
//! - hyper needs an async runtime: hyper, hyper-util and tokio (with mio) would add a dozen
//!   crates to the workspace (http, httparse and bytes are there already, through ureq), to a
//!   crate that is synchronous everywhere else (ureq, rayon, threads) and that needs only
//!   `GET`/`HEAD` of files, one range and `If-Modified-Since`;
//! - hyper streams bodies through user-space buffers, while the packages, most of the bytes
//!   served, go here from the file to the socket with sendfile(2), without a copy (1 GiB from
//!   tmpfs over loopback: about 1,100 MiB/s, against 500 to 650 MiB/s through an 8 KiB
//!   buffer);
//! - the slow-client problem was the thread-per-connection design, not the parser, and hyper
//!   would not give us the rest of the fix: caps on connections in all and per client are ours
//!   either way;
//! - what hyper protects against most, parser bugs, has a small surface here: only `GET` and
//!   `HEAD`, no bodies (a `Content-Length` or `Transfer-Encoding` is refused, so no request
//!   smuggling), heads capped at 16 KiB, one code path tested on its own.
//!
//! That changes if the server ever needs TLS, HTTP/2 or request bodies.

mod http;
mod poller;

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
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
    /// Requests answered at the same time.
    pub workers: usize,
    /// Connections open besides those being answered (reading a request, idle between
    /// requests, or waiting for a worker); beyond `workers + queue`, new ones get `503`.
    pub queue: usize,
    /// Idle time after which a persistent connection is closed.
    pub keep_alive: Duration,
    /// Time a client has to send a whole request head: from the accept for the first request
    /// of a connection, from its first byte for later ones.
    pub head_timeout: Duration,
    /// Connections one client address (an IPv6 /64) may have open; more get `503`.
    pub max_per_client: usize,
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
            // Waiting connections cost a descriptor and a few KiB each, so there can be many:
            // enough that filling them takes a thousand slow clients.
            queue: 1024,
            keep_alive: Duration::from_secs(5),
            head_timeout: Duration::from_secs(10),
            // dnf downloads over up to 20 connections (max_parallel_downloads), apt over a few
            // per host; 64 leaves room for several such clients behind one address (guests
            // behind NAT) while one address can take no more than a sixteenth of the places.
            max_per_client: 64,
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
    /// Waiting for connections (epoll) failed.
    #[error("cannot wait for connections")]
    Poll(#[source] io::Error),
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
    /// Written to wake the poller: a connection came back from a worker, or shutdown.
    wake: UnixStream,
}

impl Shared {
    fn wake(&self) {
        // Non-blocking: when the socket is full, the poller has wake-ups pending anyway.
        let _ = (&self.wake).write(&[1]);
    }
}

impl ServerHandle {
    /// Stops accepting, finishes the requests in flight, and makes [`Server::run`] return.
    pub fn shutdown(&self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        self.inner.wake();
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }
}

/// A bound, not yet running server.
pub struct Server {
    listener: TcpListener,
    root: Arc<OwnedFd>,
    options: ServeOptions,
    handle: ServerHandle,
    /// The poller's end of [`Shared::wake`].
    woken: UnixStream,
    places: Arc<Places>,
}

/// File descriptors kept for everything but connections: the listener, epoll, the wake pair,
/// the served root, and whatever else the process holds.
const RESERVED_FDS: u64 = 64;

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
        let bind_err = |source| ServeError::Bind {
            addr: options.listen,
            source,
        };
        let addr = listener.local_addr().map_err(bind_err)?;
        let (wake, woken) = UnixStream::pair().map_err(bind_err)?;
        wake.set_nonblocking(true).map_err(bind_err)?;
        woken.set_nonblocking(true).map_err(bind_err)?;
        let workers = options.workers.max(1);
        // A connection holds one descriptor, and each worker two more while it sends a file
        // (the file and, for a directory, its index): stay below the limit rather than meet
        // EMFILE in accept().
        let descriptors = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::MAX)
            .saturating_sub(RESERVED_FDS + 2 * workers as u64);
        let max_total = (workers + options.queue)
            .min(usize::try_from(descriptors).unwrap_or(usize::MAX))
            .max(1);
        let places = Arc::new(Places::new(max_total, options.max_per_client.max(1)));
        Ok(Server {
            listener,
            root: Arc::new(dir),
            options,
            handle: ServerHandle {
                inner: Arc::new(Shared {
                    stop: AtomicBool::new(false),
                    requests: AtomicU64::new(0),
                    wake,
                }),
                addr,
            },
            woken,
            places,
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
        let (jobs, job_queue) = crossbeam_channel::unbounded::<Job>();
        let (give_back, returned) = crossbeam_channel::unbounded::<Connection>();
        let workers: Vec<_> = (0..self.options.workers.max(1))
            .map(|_| {
                let job_queue = job_queue.clone();
                let give_back = give_back.clone();
                let root = Arc::clone(&self.root);
                let options = self.options.clone();
                let shared = Arc::clone(&self.handle.inner);
                std::thread::spawn(move || {
                    for job in job_queue {
                        if let Some(connection) = work(job, &root, &options, &shared)
                            && give_back.send(connection).is_ok()
                        {
                            shared.wake();
                        }
                    }
                })
            })
            .collect();
        drop((job_queue, give_back));
        let result = poller::run(poller::Setup {
            listener: self.listener,
            woken: self.woken,
            shared: &self.handle.inner,
            options: &self.options,
            places: &self.places,
            jobs,
            returned,
        });
        for worker in workers {
            let _ = worker.join();
        }
        result
    }
}

/// The most request head bytes a client may send.
const MAX_HEADER_BYTES: usize = 16 << 10;

/// How long a worker waits for a client to take more of an answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// One client connection. Dropping it closes it and gives its place back.
struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    /// Received and not yet answered: a head on its way in, or requests pipelined behind the
    /// one being answered.
    pending: Vec<u8>,
    scan: http::HeadScan,
    _place: Place,
}

/// A request head the server will not parse further: answered with `status`, then closed.
#[derive(Debug, Clone, Copy)]
struct Refusal {
    status: u16,
    reason: &'static str,
}

impl Connection {
    /// The next complete request head in `pending`, taken out of it; `None` while incomplete.
    fn next_request(&mut self) -> Option<Result<http::Request, Refusal>> {
        let Some(end) = self.scan.find(&self.pending) else {
            return (self.pending.len() > MAX_HEADER_BYTES).then_some(Err(Refusal {
                status: 431,
                reason: "header too large",
            }));
        };
        let parsed = http::read_request(&mut &self.pending[..end], MAX_HEADER_BYTES);
        self.pending.drain(..end);
        Some(match parsed {
            Ok(Some(request)) => Ok(request),
            Err(http::RequestError::Bad(reason)) => Err(Refusal {
                status: if reason == "header too large" {
                    431
                } else {
                    400
                },
                reason,
            }),
            // A complete head in memory has a request line and cannot fail to read.
            Ok(None) | Err(http::RequestError::Io(_)) => Err(Refusal {
                status: 400,
                reason: "incomplete request",
            }),
        })
    }
}

/// What the poller hands to a worker.
enum Job {
    /// Answer the request, then any pipelined behind it.
    Request(Connection, http::Request),
    /// Answer with an error and close.
    Refuse(Connection, Refusal),
}

/// Runs one job in a worker; a persistent connection to wait on comes back.
fn work(job: Job, root: &OwnedFd, options: &ServeOptions, shared: &Shared) -> Option<Connection> {
    let (mut connection, mut request) = match job {
        Job::Request(connection, request) => (connection, request),
        Job::Refuse(connection, refusal) => {
            refuse(connection, refusal, options, shared);
            return None;
        }
    };
    connection.stream.set_nonblocking(false).ok()?;
    loop {
        let started = Instant::now();
        let keep_alive = request.keep_alive && !shared.stop.load(Ordering::SeqCst);
        let mut writer = io::BufWriter::with_capacity(16 << 10, &connection.stream);
        let outcome = respond(&request, root, options, &mut writer, keep_alive);
        let flushed = writer.flush();
        drop(writer);
        let (status, bytes, ok) = match outcome {
            Ok((status, bytes)) => (status, bytes, flushed.is_ok()),
            Err(_) => (0, 0, false),
        };
        log(
            options,
            shared,
            RequestLog {
                peer: connection.peer,
                method: request.method,
                target: request.target,
                status,
                bytes,
                duration: started.elapsed(),
            },
        );
        if !ok || !keep_alive {
            return None;
        }
        match connection.next_request() {
            Some(Ok(next)) => request = next,
            Some(Err(refusal)) => {
                refuse(connection, refusal, options, shared);
                return None;
            }
            None => break,
        }
    }
    connection.stream.set_nonblocking(true).ok()?;
    Some(connection)
}

/// Answers a head that cannot be served, and closes the connection.
fn refuse(connection: Connection, refusal: Refusal, options: &ServeOptions, shared: &Shared) {
    let started = Instant::now();
    if connection.stream.set_nonblocking(false).is_ok() {
        let mut writer = io::BufWriter::new(&connection.stream);
        let _ = http::write_simple(&mut writer, refusal.status, refusal.reason, false);
        let _ = writer.flush();
    }
    log(
        options,
        shared,
        RequestLog {
            peer: connection.peer,
            method: "-".into(),
            target: "-".into(),
            status: refusal.status,
            bytes: 0,
            duration: started.elapsed(),
        },
    );
}

fn log(options: &ServeOptions, shared: &Shared, record: RequestLog) {
    shared.requests.fetch_add(1, Ordering::Relaxed);
    if let Some(logger) = &options.logger {
        logger(&record);
    }
}

/// Counts the open connections, in all and per client, against their caps.
struct Places {
    counts: Mutex<PlaceCounts>,
    max_total: usize,
    max_per_client: usize,
}

#[derive(Default)]
struct PlaceCounts {
    total: usize,
    per_client: std::collections::HashMap<IpAddr, usize>,
}

/// A connection's place; given back when dropped.
struct Place {
    places: Arc<Places>,
    client: IpAddr,
}

impl Places {
    fn new(max_total: usize, max_per_client: usize) -> Places {
        Places {
            counts: Mutex::new(PlaceCounts::default()),
            max_total,
            max_per_client,
        }
    }

    /// A place for a connection from `peer`, unless the server or that client is full.
    fn take(self: &Arc<Self>, peer: IpAddr) -> Option<Place> {
        let client = client_of(peer);
        // Nothing panics while the lock is held, so the counts behind a poisoned lock (a
        // panic in another thread) are still right.
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let of_client = counts.per_client.get(&client).copied().unwrap_or(0);
        if counts.total >= self.max_total || of_client >= self.max_per_client {
            return None;
        }
        counts.total += 1;
        counts.per_client.insert(client, of_client + 1);
        Some(Place {
            places: Arc::clone(self),
            client,
        })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut counts = self
            .places
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                counts.per_client.remove(&self.client);
            }
        }
    }
}

/// The unit the per-client cap counts: an IPv4 address, or an IPv6 /64 (one host or site
/// usually has a whole /64, and can pick any address in it).
fn client_of(peer: IpAddr) -> IpAddr {
    match peer.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(prefix.into())
        }
        v4 => v4,
    }
}

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
    out: &mut io::BufWriter<&TcpStream>,
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
    out: &mut io::BufWriter<&TcpStream>,
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
