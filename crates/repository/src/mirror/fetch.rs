//! Getting files from a source (HTTP(S), `file://` or a local path): retries, resume, limits.
//!
//! Every transfer is capped at the size the metadata declares, so a hostile or broken server
//! cannot fill the disk; the bytes are hashed as they arrive and the file only counts as fetched
//! when size and digest match. Transient failures (connection errors, time-outs, 5xx, a body
//! cut short) are retried with exponential backoff; a partial download is kept as `*.part` and
//! continued with a `Range` request on the next attempt or the next run. A shared token bucket
//! enforces `--limit-rate` across all download threads.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::check::{Algorithm, Digest, Hasher};

/// Where a mirror reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An `http://` or `https://` base URL, normalised to end in `/`.
    Http(String),
    /// A local directory (`file://…` or a plain path).
    Local(PathBuf),
}

impl Source {
    /// Parses the SOURCE argument.
    pub fn parse(source: &str) -> Source {
        let lower = source.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            let mut base = source.to_owned();
            if !base.ends_with('/') {
                base.push('/');
            }
            Source::Http(base)
        } else if let Some(path) = source.strip_prefix("file://") {
            Source::Local(PathBuf::from(percent_decode(path)))
        } else {
            Source::Local(PathBuf::from(source))
        }
    }

    /// The address of `rel` on this source, for messages.
    pub fn display(&self, rel: &str) -> String {
        match self {
            Source::Http(base) => format!("{base}{}", percent_encode_path(rel)),
            Source::Local(dir) => dir.join(rel).display().to_string(),
        }
    }
}

/// A file could not be fetched from the source.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The source has no such file.
    #[error("`{url}` does not exist on the source")]
    NotFound {
        /// The address.
        url: String,
    },
    /// The server answered with an unexpected HTTP status.
    #[error("`{url}`: the server answered HTTP {status}")]
    Status {
        /// The address.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The transfer failed.
    #[error("cannot fetch `{url}`")]
    Transfer {
        /// The address.
        url: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The source sent more than the metadata declares.
    #[error("`{url}` is larger than its declared size of {limit} bytes; refusing it")]
    TooLarge {
        /// The address.
        url: String,
        /// The declared size.
        limit: u64,
    },
    /// The source sent less than the metadata declares.
    #[error("`{url}` has {got} bytes but its declared size is {expected}")]
    TooShort {
        /// The address.
        url: String,
        /// Bytes received.
        got: u64,
        /// Declared size.
        expected: u64,
    },
    /// The content does not match the declared checksum.
    #[error("`{url}` does not match its checksum (expected {expected}, got {got}); refusing it")]
    ChecksumMismatch {
        /// The address.
        url: String,
        /// The declared digest.
        expected: Digest,
        /// The digest of what arrived.
        got: String,
    },
    /// A local file (the download area) could not be written.
    #[error("cannot {action} `{path}`")]
    Local {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl FetchError {
    fn is_transient(&self) -> bool {
        match self {
            FetchError::Transfer { .. } | FetchError::TooShort { .. } => true,
            FetchError::Status { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            _ => false,
        }
    }
}

/// Knobs of a [`Fetcher`].
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Attempts after the first one for transient failures.
    pub retries: u32,
    /// First backoff delay; doubled after each failed attempt (at most 10 s).
    pub backoff: Duration,
    /// Bytes per second over all transfers; `None` for no limit.
    pub rate_limit: Option<u64>,
    /// Connection and per-read time-out.
    pub timeout: Duration,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            retries: 3,
            backoff: Duration::from_millis(250),
            rate_limit: None,
            timeout: Duration::from_secs(30),
        }
    }
}

/// Fetches files of one source; shared by the download threads.
pub struct Fetcher {
    source: Source,
    agent: Option<ureq::Agent>,
    options: FetchOptions,
    bucket: Option<TokenBucket>,
    requests: AtomicU64,
    bytes: AtomicU64,
}

/// What a completed download did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fetched {
    /// Bytes transferred in this call (less than the size when a partial file was resumed).
    pub transferred: u64,
    /// Whether an earlier partial download was continued.
    pub resumed: bool,
}

enum Opened {
    Missing,
    Body {
        reader: Box<dyn Read + Send>,
        /// Whether the body starts at the requested offset (false: from byte 0).
        from_offset: bool,
        length: Option<u64>,
    },
    RangeNotSatisfiable,
}

impl Fetcher {
    /// A fetcher for `source`.
    pub fn new(source: Source, options: FetchOptions) -> Fetcher {
        let agent = matches!(source, Source::Http(_)).then(|| {
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_connect(Some(options.timeout))
                .timeout_per_read(Some(options.timeout))
                .max_idle_connections_per_host(64)
                .user_agent(concat!("vrepo-mirror/", env!("CARGO_PKG_VERSION")))
                .build()
                .new_agent()
        });
        Fetcher {
            bucket: options.rate_limit.map(TokenBucket::new),
            source,
            agent,
            options,
            requests: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }

    /// The source.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// Requests (HTTP) or opens (local) made so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Bytes received so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn open(&self, rel: &str, offset: u64) -> Result<Opened, FetchError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let url = self.source.display(rel);
        match (&self.source, &self.agent) {
            (Source::Http(_), Some(agent)) => {
                let mut request = agent.get(&url);
                if offset > 0 {
                    request = request.header("Range", format!("bytes={offset}-"));
                }
                let response = request.call().map_err(|e| FetchError::Transfer {
                    url: url.clone(),
                    source: match e {
                        ureq::Error::Io(e) => e,
                        other => io::Error::other(other),
                    },
                })?;
                let status = response.status().as_u16();
                let length = response
                    .headers()
                    .get("content-length")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                match status {
                    200 | 206 => Ok(Opened::Body {
                        reader: Box::new(response.into_body().into_reader()),
                        from_offset: status == 206,
                        length,
                    }),
                    404 | 410 => Ok(Opened::Missing),
                    416 => Ok(Opened::RangeNotSatisfiable),
                    status => Err(FetchError::Status { url, status }),
                }
            }
            _ => {
                let Source::Local(dir) = &self.source else {
                    return Ok(Opened::Missing);
                };
                let path = dir.join(rel);
                let mut file = match File::open(&path) {
                    Ok(file) => file,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Opened::Missing),
                    Err(source) => return Err(FetchError::Transfer { url, source }),
                };
                let transfer = |source| FetchError::Transfer {
                    url: url.clone(),
                    source,
                };
                let meta = file.metadata().map_err(transfer)?;
                if meta.is_dir() {
                    return Ok(Opened::Missing);
                }
                if offset > meta.len() {
                    return Ok(Opened::RangeNotSatisfiable);
                }
                file.seek(SeekFrom::Start(offset)).map_err(transfer)?;
                Ok(Opened::Body {
                    reader: Box::new(file),
                    from_offset: true,
                    length: Some(meta.len() - offset),
                })
            }
        }
    }

    /// Fetches a small file whole (metadata), refusing more than `max` bytes; `None` if missing.
    pub fn get_bytes(&self, rel: &str, max: u64) -> Result<Option<Vec<u8>>, FetchError> {
        self.with_retries(|| {
            let url = self.source.display(rel);
            let Opened::Body { reader, .. } = self.open(rel, 0)? else {
                return Ok(None);
            };
            let mut out = Vec::new();
            let mut limited = reader.take(max + 1);
            self.copy_limited(&mut limited, &mut out, &url)?;
            if out.len() as u64 > max {
                return Err(FetchError::TooLarge { url, limit: max });
            }
            Ok(Some(out))
        })
    }

    /// Downloads `rel` into `part` (continuing a partial file there), checking the declared
    /// `size` and `digest`; on success `part` holds exactly the declared content.
    ///
    /// `on_bytes` is told about every chunk received, for progress.
    pub fn download(
        &self,
        rel: &str,
        part: &Path,
        size: u64,
        digest: &Digest,
        on_bytes: &(dyn Fn(u64) + Sync),
    ) -> Result<Fetched, FetchError> {
        let url = self.source.display(rel);
        let mut restarted = false;
        let mut outcome = Fetched::default();
        let result = self.with_retries(|| {
            let got =
                self.download_once(rel, part, size, digest.algorithm(), on_bytes, &mut outcome)?;
            let (hex, len) = got;
            if len == size && hex == digest.hex() {
                return Ok(());
            }
            let _ = std::fs::remove_file(part);
            if outcome.resumed && !restarted {
                // The kept partial file may be what is wrong: try once more from byte 0.
                restarted = true;
                outcome.resumed = false;
                return Err(FetchError::TooShort {
                    url: url.clone(),
                    got: len,
                    expected: size,
                });
            }
            Err(FetchError::ChecksumMismatch {
                url: url.clone(),
                expected: digest.clone(),
                got: hex,
            })
        });
        result.map(|()| outcome)
    }

    /// One attempt; returns the digest and length of the whole `part` file when the transfer
    /// ended at the declared size.
    fn download_once(
        &self,
        rel: &str,
        part: &Path,
        size: u64,
        algorithm: Algorithm,
        on_bytes: &(dyn Fn(u64) + Sync),
        outcome: &mut Fetched,
    ) -> Result<(String, u64), FetchError> {
        let url = self.source.display(rel);
        let local = |action, source| FetchError::Local {
            action,
            path: part.to_owned(),
            source,
        };
        let mut file = File::options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(part)
            .map_err(|e| local("open", e))?;
        let mut have = file.metadata().map_err(|e| local("stat", e))?.len();
        if have > size {
            file.set_len(0).map_err(|e| local("truncate", e))?;
            have = 0;
        }
        let hash_existing = |file: &mut File| -> Result<Hasher, FetchError> {
            // Hash what is already there, so the digest covers the whole file.
            let mut hasher = Hasher::new(algorithm);
            file.seek(SeekFrom::Start(0))
                .map_err(|e| local("read", e))?;
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = file.read(&mut buf).map_err(|e| local("read", e))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            Ok(hasher)
        };
        let mut hasher = if have == size {
            // Complete from an earlier run: only verify it. Counted as resumed, so that a
            // mismatch (say, a run killed before it could check) starts over from byte 0.
            outcome.resumed = true;
            let hasher = hash_existing(&mut file)?;
            return Ok((hasher.finish_hex(), have));
        } else if have > 0 {
            hash_existing(&mut file)?
        } else {
            Hasher::new(algorithm)
        };
        let (reader, from_offset, length) = match self.open(rel, have)? {
            Opened::Missing => return Err(FetchError::NotFound { url }),
            Opened::RangeNotSatisfiable => {
                // The partial file does not fit the source any more: start over.
                file.set_len(0).map_err(|e| local("truncate", e))?;
                return Err(FetchError::TooShort {
                    url,
                    got: 0,
                    expected: size,
                });
            }
            Opened::Body {
                reader,
                from_offset,
                length,
            } => (reader, from_offset, length),
        };
        if !from_offset || have == 0 {
            file.set_len(0).map_err(|e| local("truncate", e))?;
            have = 0;
            hasher = Hasher::new(algorithm);
        } else {
            outcome.resumed = true;
        }
        if let Some(length) = length
            && have + length > size
        {
            return Err(FetchError::TooLarge { url, limit: size });
        }
        file.seek(SeekFrom::Start(have))
            .map_err(|e| local("seek", e))?;
        let mut limited = reader.take(size - have + 1);
        // Under a rate limit, small chunks keep the flow (and the file on disk) smooth.
        let chunk = self
            .options
            .rate_limit
            .map_or(1 << 16, |rate| (rate / 10).clamp(1 << 10, 1 << 16) as usize);
        let mut buf = vec![0u8; chunk];
        let mut total = have;
        loop {
            let n = match limited.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    let _ = file.flush();
                    return Err(FetchError::Transfer { url, source });
                }
            };
            if total + n as u64 > size {
                drop(file);
                let _ = std::fs::remove_file(part);
                return Err(FetchError::TooLarge { url, limit: size });
            }
            self.throttle(n as u64);
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n]).map_err(|e| local("write", e))?;
            total += n as u64;
            outcome.transferred += n as u64;
            self.bytes.fetch_add(n as u64, Ordering::Relaxed);
            on_bytes(n as u64);
        }
        if total < size {
            return Err(FetchError::TooShort {
                url,
                got: total,
                expected: size,
            });
        }
        Ok((hasher.finish_hex(), total))
    }

    fn copy_limited(
        &self,
        reader: &mut impl Read,
        out: &mut Vec<u8>,
        url: &str,
    ) -> Result<(), FetchError> {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(FetchError::Transfer {
                        url: url.to_owned(),
                        source,
                    });
                }
            };
            self.throttle(n as u64);
            self.bytes.fetch_add(n as u64, Ordering::Relaxed);
            out.extend_from_slice(&buf[..n]);
        }
    }

    fn throttle(&self, n: u64) {
        if let Some(bucket) = &self.bucket {
            bucket.take(n);
        }
    }

    fn with_retries<T>(
        &self,
        mut attempt: impl FnMut() -> Result<T, FetchError>,
    ) -> Result<T, FetchError> {
        let mut delay = self.options.backoff;
        let mut tries = 0;
        loop {
            match attempt() {
                Err(e) if e.is_transient() && tries < self.options.retries => {
                    tries += 1;
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
                other => return other,
            }
        }
    }
}

/// A token bucket shared by all transfers: at most `rate` bytes per second, bursts of one second.
struct TokenBucket {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    fn new(rate: u64) -> TokenBucket {
        let rate = rate.max(1) as f64;
        TokenBucket {
            rate,
            state: Mutex::new((rate, Instant::now())),
        }
    }

    fn take(&self, n: u64) {
        let wait = {
            let Ok(mut state) = self.state.lock() else {
                return;
            };
            let now = Instant::now();
            let (tokens, last) = *state;
            let tokens = (tokens + now.duration_since(last).as_secs_f64() * self.rate)
                .min(self.rate)
                - n as f64;
            *state = (tokens, now);
            // A debt is paid by sleeping outside the lock; others queue behind it in the bucket.
            (tokens < 0.0).then(|| Duration::from_secs_f64(-tokens / self.rate))
        };
        if let Some(wait) = wait {
            std::thread::sleep(wait);
        }
    }
}

/// Percent-encodes a relative path for a URL, keeping `/` and RFC 3986 unreserved characters.
pub(crate) fn percent_encode_path(rel: &str) -> String {
    let mut out = String::with_capacity(rel.len());
    for b in rel.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes; invalid escapes are kept as they are.
pub(crate) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex_value(bytes[i + 1]), hex_value(bytes[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn encodes_and_decodes_paths() {
        let rel = "pool/main/libc++_1:2~3 x.deb";
        let encoded = percent_encode_path(rel);
        assert_eq!(encoded, "pool/main/libc%2B%2B_1%3A2~3%20x.deb");
        assert_eq!(percent_decode(&encoded), rel);
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn parses_sources() {
        assert_eq!(
            Source::parse("http://127.0.0.1:1/repo"),
            Source::Http("http://127.0.0.1:1/repo/".into())
        );
        assert_eq!(
            Source::parse("file:///srv/a%20b"),
            Source::Local("/srv/a b".into())
        );
        assert_eq!(Source::parse("/srv/x"), Source::Local("/srv/x".into()));
    }
}
