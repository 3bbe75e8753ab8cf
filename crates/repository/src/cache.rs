//! The incremental-index cache behind `vrepo index --update`.
//!
//! For each package file the indexer stores what it derived from it (rpm-md XML fragments, a
//! Packages stanza) keyed by relative path, size and modification time. On `--update` a file whose
//! key is unchanged is not opened at all. Records are written and read in the same sorted order as
//! the scan, so the cache is a stream: memory stays flat however many packages there are.
//!
//! The file lives at `DIR/.vrepo/NAME.cache` (zstd-compressed, replaced atomically). It starts
//! with a fingerprint of everything that shaped the payloads (format version, options); a cache
//! written with other options is ignored rather than trusted.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::publish::{PublishError, STATE_DIR, sync_dir};
use crate::scan::FoundFile;

const MAGIC: &[u8; 8] = b"VREPOC1\n";
/// Upper bound for one record field, so a corrupt cache cannot make us allocate gigabytes.
const MAX_FIELD: u32 = 256 << 20;

/// Failure to read or write a cache (reading failures can be treated as "no cache").
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// An I/O error on the cache file.
    #[error("cannot {action} index cache `{path}`")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The cache file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Publishing the new cache failed.
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// One cached record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheRecord {
    /// Relative path of the package file.
    pub rel: String,
    /// Its size when the payload was derived.
    pub size: u64,
    /// Its modification time then.
    pub mtime_ns: i64,
    /// What the indexer derived from it.
    pub payload: Vec<u8>,
}

fn cache_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(STATE_DIR).join(format!("{name}.cache"))
}

/// Writes a new cache next to the old one; [`CacheWriter::commit`] replaces it.
pub struct CacheWriter {
    tmp: PathBuf,
    path: PathBuf,
    out: Option<zstd::stream::write::Encoder<'static, BufWriter<File>>>,
}

impl CacheWriter {
    /// Starts the cache `name` of repository `dir` for payloads shaped by `fingerprint`.
    pub fn create(dir: &Path, name: &str, fingerprint: &str) -> Result<Self, CacheError> {
        let path = cache_path(dir, name);
        let state = dir.join(STATE_DIR);
        let err = |action, path: &Path| {
            let path = path.to_owned();
            move |source| CacheError::Io {
                action,
                path,
                source,
            }
        };
        std::fs::create_dir_all(&state).map_err(err("create", &state))?;
        let tmp = state.join(format!(".{name}.cache.tmp-{}", std::process::id()));
        let file = File::create(&tmp).map_err(err("create", &tmp))?;
        let mut out = zstd::stream::write::Encoder::new(BufWriter::new(file), 1)
            .map_err(err("create", &tmp))?;
        out.write_all(MAGIC).map_err(err("write", &tmp))?;
        write_bytes(&mut out, fingerprint.as_bytes()).map_err(err("write", &tmp))?;
        Ok(CacheWriter {
            tmp,
            path,
            out: Some(out),
        })
    }

    /// Appends the record for `file`; records must come in scan order.
    pub fn push(&mut self, file: &FoundFile, payload: &[u8]) -> Result<(), CacheError> {
        let Some(out) = self.out.as_mut() else {
            return Ok(());
        };
        (|| {
            write_bytes(out, file.rel.as_bytes())?;
            out.write_all(&file.size.to_le_bytes())?;
            out.write_all(&file.mtime_ns.to_le_bytes())?;
            write_bytes(out, payload)
        })()
        .map_err(|source| CacheError::Io {
            action: "write",
            path: self.tmp.clone(),
            source,
        })
    }

    /// Finishes the file and puts it in place of the previous cache.
    pub fn commit(mut self) -> Result<(), CacheError> {
        let tmp = self.tmp.clone();
        let path = self.path.clone();
        let out = self.out.take();
        let result = (|| {
            let out = out.ok_or(io::ErrorKind::InvalidInput)?;
            let file = out
                .finish()?
                .into_inner()
                .map_err(io::IntoInnerError::into_error)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        if let Err(source) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(CacheError::Io {
                action: "write",
                path,
                source,
            });
        }
        if let Some(parent) = path.parent() {
            sync_dir(parent)?;
        }
        Ok(())
    }
}

impl Drop for CacheWriter {
    fn drop(&mut self) {
        // After a successful commit the temporary name no longer exists.
        let _ = std::fs::remove_file(&self.tmp);
    }
}

fn write_bytes(out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    let len = u32::try_from(bytes.len())
        .ok()
        .filter(|&l| l <= MAX_FIELD)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "cache record too large"))?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(bytes)
}

/// Reads a cache front to back.
pub struct CacheReader {
    path: PathBuf,
    reader: Box<dyn Read + Send>,
}

impl CacheReader {
    /// Opens the cache `name` of `dir`; `Ok(None)` when it is missing or was written for another
    /// `fingerprint`.
    pub fn open(
        dir: &Path,
        name: &str,
        fingerprint: &str,
    ) -> Result<Option<CacheReader>, CacheError> {
        let path = cache_path(dir, name);
        let err = |source| CacheError::Io {
            action: "read",
            path: path.clone(),
            source,
        };
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(err(e)),
        };
        let decoder = zstd::stream::read::Decoder::new(BufReader::new(file)).map_err(err)?;
        let mut reader: Box<dyn Read + Send> = Box::new(BufReader::with_capacity(1 << 16, decoder));
        let mut magic = [0u8; 8];
        reader.read_exact(&mut magic).map_err(err)?;
        if &magic != MAGIC {
            return Ok(None);
        }
        match read_bytes(&mut reader).map_err(err)? {
            Some(found) if found == fingerprint.as_bytes() => {
                Ok(Some(CacheReader { path, reader }))
            }
            _ => Ok(None),
        }
    }

    /// The next record, `None` at the end.
    pub fn next_record(&mut self) -> Result<Option<CacheRecord>, CacheError> {
        let reader = &mut self.reader;
        (|| -> io::Result<Option<CacheRecord>> {
            let Some(rel) = read_bytes(reader)? else {
                return Ok(None);
            };
            let mut size = [0u8; 8];
            reader.read_exact(&mut size)?;
            let mut mtime = [0u8; 8];
            reader.read_exact(&mut mtime)?;
            let payload = read_bytes(reader)?.ok_or(io::ErrorKind::UnexpectedEof)?;
            Ok(Some(CacheRecord {
                rel: String::from_utf8(rel).map_err(|_| io::ErrorKind::InvalidData)?,
                size: u64::from_le_bytes(size),
                mtime_ns: i64::from_le_bytes(mtime),
                payload,
            }))
        })()
        .map_err(|source| CacheError::Io {
            action: "read",
            path: self.path.clone(),
            source,
        })
    }
}

/// Looks up cached payloads for files visited in scan order.
pub struct CacheLookup {
    reader: Option<CacheReader>,
    pending: Option<CacheRecord>,
}

impl CacheLookup {
    /// Opens the cache `name` of `dir`. A missing cache, one made with another `fingerprint`, or
    /// one that cannot be read gives an empty lookup: the cache only saves work, it is never
    /// needed for correctness.
    pub fn open(dir: &Path, name: &str, fingerprint: &str) -> CacheLookup {
        CacheLookup {
            reader: CacheReader::open(dir, name, fingerprint).ok().flatten(),
            pending: None,
        }
    }

    /// An empty lookup, for a cold run.
    pub fn empty() -> CacheLookup {
        CacheLookup {
            reader: None,
            pending: None,
        }
    }

    /// The cached payload for `file` if its size and modification time are unchanged.
    ///
    /// Files must be asked for in scan order; records of files that no longer exist are skipped.
    pub fn get(&mut self, file: &FoundFile) -> Option<Vec<u8>> {
        loop {
            let record = match self.pending.take() {
                Some(record) => record,
                None => self.next_record()?,
            };
            match record.rel.as_str().cmp(file.rel.as_str()) {
                std::cmp::Ordering::Less => continue,
                std::cmp::Ordering::Greater => {
                    self.pending = Some(record);
                    return None;
                }
                std::cmp::Ordering::Equal => {
                    return (record.size == file.size && record.mtime_ns == file.mtime_ns)
                        .then_some(record.payload);
                }
            }
        }
    }

    fn next_record(&mut self) -> Option<CacheRecord> {
        match self.reader.as_mut()?.next_record() {
            Ok(Some(record)) => Some(record),
            // End of stream, or a damaged cache: stop using it.
            _ => {
                self.reader = None;
                None
            }
        }
    }
}

/// Reads a length-prefixed field; `None` at a clean end of stream.
fn read_bytes(reader: &mut dyn Read) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len);
    if len > MAX_FIELD {
        return Err(io::ErrorKind::InvalidData.into());
    }
    let mut buf = vec![0u8; len as usize];
    reader.read_exact(&mut buf)?;
    Ok(Some(buf))
}
