//! The poller of `vrepo serve`: one thread that accepts connections, reads their request
//! heads without blocking, enforces the deadlines and caps, and hands complete requests to the
//! workers (see the [module documentation](super#concurrency-and-slow-clients)).

use std::collections::{BTreeSet, HashMap};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use rustix::buffer::spare_capacity;
use rustix::event::{Timespec, epoll};

use super::{
    Connection, Job, MAX_HEADER_BYTES, Places, Refusal, RequestLog, ServeError, ServeOptions,
    Shared, WRITE_TIMEOUT, http, log,
};

/// What the poller works with.
pub(super) struct Setup<'a> {
    pub(super) listener: TcpListener,
    pub(super) woken: UnixStream,
    pub(super) shared: &'a Shared,
    pub(super) options: &'a ServeOptions,
    pub(super) places: &'a Arc<Places>,
    pub(super) jobs: Sender<Job>,
    pub(super) returned: Receiver<Connection>,
}

const LISTENER: u64 = 0;
const WAKE: u64 = 1;

/// After the process ran out of file descriptors, how long accepting pauses (the listener
/// would otherwise report the same waiting connection again at once).
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

/// A connection waiting for (the rest of) a request head.
struct Waiting {
    connection: Connection,
    deadline: Instant,
    /// Between two requests of a persistent connection, before the first byte of the next.
    idle: bool,
}

struct Poller<'a> {
    setup: Setup<'a>,
    epoll: rustix::fd::OwnedFd,
    waiting: HashMap<u64, Waiting>,
    /// The deadlines of `waiting`, soonest first.
    deadlines: BTreeSet<(Instant, u64)>,
    next_token: u64,
    accept_paused_until: Option<Instant>,
}

/// Runs until shutdown; the connections still waiting are closed on return.
pub(super) fn run(setup: Setup<'_>) -> Result<(), ServeError> {
    let poll_err = |e: rustix::io::Errno| ServeError::Poll(e.into());
    setup
        .listener
        .set_nonblocking(true)
        .map_err(ServeError::Accept)?;
    let epoll = epoll::create(epoll::CreateFlags::CLOEXEC).map_err(poll_err)?;
    epoll::add(
        &epoll,
        &setup.listener,
        epoll::EventData::new_u64(LISTENER),
        epoll::EventFlags::IN,
    )
    .map_err(poll_err)?;
    epoll::add(
        &epoll,
        &setup.woken,
        epoll::EventData::new_u64(WAKE),
        epoll::EventFlags::IN,
    )
    .map_err(poll_err)?;
    let mut poller = Poller {
        setup,
        epoll,
        waiting: HashMap::new(),
        deadlines: BTreeSet::new(),
        next_token: WAKE + 1,
        accept_paused_until: None,
    };
    poller.run()
}

impl Poller<'_> {
    fn run(&mut self) -> Result<(), ServeError> {
        let mut events = Vec::with_capacity(256);
        while !self.setup.shared.stop.load(Ordering::SeqCst) {
            let timeout = self
                .next_wake_up()
                .map(|at| at.saturating_duration_since(Instant::now()))
                .and_then(|wait| Timespec::try_from(wait).ok());
            events.clear();
            match epoll::wait(&self.epoll, spare_capacity(&mut events), timeout.as_ref()) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(ServeError::Poll(e.into())),
            }
            for token in events.drain(..).map(|event| event.data.u64()) {
                match token {
                    LISTENER => self.accept()?,
                    WAKE => self.take_back(),
                    token => self.read(token),
                }
            }
            self.expire(Instant::now());
            if self
                .accept_paused_until
                .is_some_and(|until| until <= Instant::now())
            {
                self.accept_paused_until = None;
                epoll::add(
                    &self.epoll,
                    &self.setup.listener,
                    epoll::EventData::new_u64(LISTENER),
                    epoll::EventFlags::IN,
                )
                .map_err(|e| ServeError::Poll(e.into()))?;
            }
        }
        // Connections waiting for a request are closed; the workers finish theirs and see
        // the job queue close.
        self.waiting.clear();
        Ok(())
    }

    fn next_wake_up(&self) -> Option<Instant> {
        let deadline = self.deadlines.first().map(|(at, _)| *at);
        match (deadline, self.accept_paused_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn accept(&mut self) -> Result<(), ServeError> {
        loop {
            let (stream, peer) = match self.setup.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                // A client that gave up before accept() is not the server's problem.
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionAborted
                            | ErrorKind::ConnectionReset
                            | ErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                Err(e) if is_out_of_descriptors(&e) => {
                    // The connection stays in the backlog; try again shortly.
                    let _ = epoll::delete(&self.epoll, &self.setup.listener);
                    self.accept_paused_until = Some(Instant::now() + ACCEPT_PAUSE);
                    return Ok(());
                }
                Err(e) => return Err(ServeError::Accept(e)),
            };
            self.adopt(stream, peer);
        }
    }

    /// Takes a new connection in, or turns it away when the server or its client is full.
    fn adopt(&mut self, stream: TcpStream, peer: SocketAddr) {
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        let Some(place) = self.setup.places.take(peer.ip()) else {
            turn_away(&stream);
            return;
        };
        let _ = stream.set_nodelay(true);
        // Only blocking writes (in the workers) wait; this bounds each of them.
        let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
        let connection = Connection {
            stream,
            peer,
            pending: Vec::new(),
            scan: http::HeadScan::default(),
            _place: place,
        };
        let deadline = Instant::now() + self.setup.options.head_timeout;
        self.wait(connection, deadline, false);
    }

    /// Connections the workers answered and that stay open come back here.
    fn take_back(&mut self) {
        let mut drain = [0u8; 64];
        while matches!((&self.setup.woken).read(&mut drain), Ok(n) if n > 0) {}
        while let Ok(connection) = self.setup.returned.try_recv() {
            let now = Instant::now();
            // A partial pipelined head is a head on its way in; otherwise the connection idles.
            let (deadline, idle) = if connection.pending.is_empty() {
                (now + self.setup.options.keep_alive, true)
            } else {
                (now + self.setup.options.head_timeout, false)
            };
            self.wait(connection, deadline, idle);
        }
    }

    fn wait(&mut self, connection: Connection, deadline: Instant, idle: bool) {
        let token = self.next_token;
        self.next_token += 1;
        if epoll::add(
            &self.epoll,
            &connection.stream,
            epoll::EventData::new_u64(token),
            epoll::EventFlags::IN,
        )
        .is_err()
        {
            return;
        }
        self.deadlines.insert((deadline, token));
        self.waiting.insert(
            token,
            Waiting {
                connection,
                deadline,
                idle,
            },
        );
    }

    /// Stops watching `token`; the connection is the caller's.
    fn release(&mut self, token: u64) -> Option<Waiting> {
        let waiting = self.waiting.remove(&token)?;
        self.deadlines.remove(&(waiting.deadline, token));
        let _ = epoll::delete(&self.epoll, &waiting.connection.stream);
        Some(waiting)
    }

    /// Reads what `token`'s client sent; a complete head goes to a worker.
    fn read(&mut self, token: u64) {
        let head_timeout = self.setup.options.head_timeout;
        let Some(waiting) = self.waiting.get_mut(&token) else {
            return;
        };
        let mut chunk = [0u8; 4096];
        let mut ended = false;
        let mut broken = false;
        // Up to one read past the limit is enough to tell a head that is too large.
        while waiting.connection.pending.len() <= MAX_HEADER_BYTES {
            match (&waiting.connection.stream).read(&mut chunk) {
                Ok(0) => {
                    ended = true;
                    break;
                }
                Ok(n) => {
                    waiting.connection.pending.extend_from_slice(&chunk[..n]);
                    if waiting.idle {
                        // The next request started: its head has its own deadline.
                        waiting.idle = false;
                        let deadline = Instant::now() + head_timeout;
                        self.deadlines.remove(&(waiting.deadline, token));
                        self.deadlines.insert((deadline, token));
                        waiting.deadline = deadline;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    broken = true;
                    break;
                }
            }
        }
        let next = match waiting.connection.next_request() {
            Some(next) => next,
            // Reset, or closed between requests: nothing to answer.
            None if broken || (ended && waiting.connection.pending.is_empty()) => {
                self.release(token);
                return;
            }
            None if ended => Err(Refusal {
                status: 400,
                reason: "incomplete request",
            }),
            None => return,
        };
        let Some(waiting) = self.release(token) else {
            return;
        };
        let job = match next {
            Ok(request) => Job::Request(waiting.connection, request),
            Err(refusal) => Job::Refuse(waiting.connection, refusal),
        };
        // After shutdown the workers are gone, and the connection closes with the job.
        let _ = self.setup.jobs.send(job);
    }

    /// Closes the connections whose deadline passed; a head cut off gets `408`.
    fn expire(&mut self, now: Instant) {
        while let Some(&(at, token)) = self.deadlines.first() {
            if at > now {
                break;
            }
            let Some(waiting) = self.release(token) else {
                self.deadlines.pop_first();
                continue;
            };
            let connection = waiting.connection;
            if waiting.idle || connection.pending.is_empty() {
                // Nothing was asked (an idle persistent connection, or a client that never
                // sent a byte): just close.
                continue;
            }
            let mut answer = Vec::new();
            let _ = http::write_simple(&mut answer, 408, "request head too slow", false);
            // Non-blocking: a client this slow gets what fits in its socket buffer.
            let _ = (&connection.stream).write(&answer);
            log(
                self.setup.options,
                self.setup.shared,
                RequestLog {
                    peer: connection.peer,
                    method: "-".into(),
                    target: "-".into(),
                    status: 408,
                    bytes: 0,
                    duration: self.setup.options.head_timeout,
                },
            );
        }
    }
}

/// The answer to a connection beyond a cap.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\nConnection: close\r\n\r\n";

/// Answers `503` without waiting, and closes: the server, or this client, has no place left.
fn turn_away(stream: &TcpStream) {
    // Take in what the client already sent: closing a socket with unread data resets the
    // connection, and the client could lose the answer with it.
    let mut sink = [0u8; 4096];
    let _ = (&*stream).read(&mut sink);
    let _ = (&*stream).write(BUSY);
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

fn is_out_of_descriptors(e: &io::Error) -> bool {
    use rustix::io::Errno;
    [Errno::MFILE, Errno::NFILE, Errno::NOBUFS, Errno::NOMEM]
        .iter()
        .any(|errno| e.raw_os_error() == Some(errno.raw_os_error()))
}
