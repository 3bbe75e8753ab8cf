//! `vrepo index` for RPMs: from a directory of packages to a published `repodata/`.
//!
//! Two passes, both streaming:
//!
//! 1. Packages are read in parallel, a chunk at a time, and each one's primary, filelists and
//!    other fragments are appended, in scan order, to a new `--update` cache. Unchanged packages
//!    take their fragments from the previous cache without being opened.
//! 2. The three documents are rendered from that cache, each on its own thread, through its
//!    compressor into a staging directory, then repomd.xml is written and the directory swapped
//!    in for `repodata/`.
//!
//! Writing the cache first gives the package count that the document heads declare before a
//! single fragment is written, and lets the compressors of pass 2 run side by side; memory holds
//! one chunk of fragments, however many packages there are.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use super::repomd::{Repomd, RepomdRecord};
use super::sqlite::{self, SqliteError};
use super::write::Document;
use crate::BadPackage;
use crate::cache::{CacheError, CacheLookup, CacheReader, CacheWriter};
use crate::compress::Compression;
use crate::progress::Progress;
use crate::publish::{PublishError, Staging, lock_repository};
use crate::rpm_file::{RpmReadError, RpmReadOptions, read_rpm};
use crate::scan::{ScanError, scan_packages};

const CACHE_NAME: &str = "rpm-md";
const CHUNK: usize = 512;

/// How to index.
#[derive(Debug, Clone)]
pub struct RpmIndexOptions {
    /// Compression of primary, filelists and other.
    pub compression: Compression,
    /// Reuse what the previous run derived from unchanged packages.
    pub update: bool,
    /// Leave out unreadable packages (listed in the report) instead of failing.
    pub skip_bad: bool,
    /// Wait for another indexer of the same directory instead of failing.
    pub wait_for_lock: bool,
    /// Also write the sqlite databases (`primary_db`, `filelists_db`, `other_db`) old
    /// clients such as yum read.
    pub database: bool,
    /// How packages become metadata.
    pub read: RpmReadOptions,
    /// Sign `repomd.xml` (`repomd.xml.asc`) before it is published.
    pub signer: Option<std::sync::Arc<crate::sign::Signer>>,
}

impl Default for RpmIndexOptions {
    fn default() -> Self {
        RpmIndexOptions {
            compression: Compression::Gzip,
            update: false,
            skip_bad: false,
            wait_for_lock: false,
            database: false,
            read: RpmReadOptions::default(),
            signer: None,
        }
    }
}

/// What an index run did.
#[derive(Debug, Clone, Default)]
pub struct RpmIndexReport {
    /// Packages in the new metadata.
    pub packages: u64,
    /// Their total size.
    pub bytes: u64,
    /// Packages taken from the cache without being read.
    pub reused: u64,
    /// Packages left out with `skip_bad`.
    pub skipped: Vec<BadPackage>,
    /// The published repomd.xml.
    pub repomd: PathBuf,
}

/// Why indexing failed. Nothing was published.
#[derive(Debug, thiserror::Error)]
pub enum RpmIndexError {
    /// The tree could not be walked.
    #[error(transparent)]
    Scan(#[from] ScanError),
    /// A package could not be read (and `skip_bad` was off).
    #[error(transparent)]
    Package(#[from] RpmReadError),
    /// A package file cannot be indexed (and `skip_bad` was off).
    #[error("cannot index `{}`: {}", .0.path.display(), .0.reason)]
    Bad(BadPackage),
    /// Locking or publishing failed.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The cache could not be written or read back.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// Signing repomd.xml failed.
    #[error(transparent)]
    Sign(#[from] crate::sign::SignError),
    /// A sqlite database could not be built.
    #[error(transparent)]
    Database(#[from] SqliteError),
    /// Writing a metadata file failed.
    #[error("cannot write `{path}`")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

fn fingerprint(options: &RpmIndexOptions) -> String {
    format!(
        "rpm-md fragments v1; changelog_limit={}",
        options.read.changelog_limit
    )
}

/// Indexes the RPMs under `dir` into `dir/repodata`.
pub fn index_rpm(
    dir: &Path,
    options: &RpmIndexOptions,
    progress: &dyn Progress,
) -> Result<RpmIndexReport, RpmIndexError> {
    let _lock = lock_repository(dir, options.wait_for_lock)?;
    let scan = scan_packages(dir, "rpm")?;
    let mut report = RpmIndexReport::default();
    for bad in scan.bad {
        if !options.skip_bad {
            return Err(RpmIndexError::Bad(bad));
        }
        report.skipped.push(bad);
    }
    let fingerprint = fingerprint(options);

    // Pass 1: fragments into a new cache.
    let mut lookup = if options.update {
        CacheLookup::open(dir, CACHE_NAME, &fingerprint)
    } else {
        CacheLookup::empty()
    };
    let mut cache = CacheWriter::create(dir, CACHE_NAME, &fingerprint)?;
    progress.start("reading packages", scan.files.len() as u64);
    for chunk in scan.files.chunks(CHUNK) {
        let cached: Vec<Option<Vec<u8>>> = chunk.iter().map(|f| lookup.get(f)).collect();
        let fresh: Vec<Option<Result<Vec<u8>, RpmReadError>>> = chunk
            .par_iter()
            .zip(cached.par_iter())
            .map(|(file, cached)| {
                let result = match cached {
                    Some(_) => None,
                    None => Some(read_rpm(file, &options.read).map(|pkg| encode_fragments(&pkg))),
                };
                progress.advance(1);
                progress.bytes(file.size);
                result
            })
            .collect();
        for ((file, cached), fresh) in chunk.iter().zip(cached).zip(fresh) {
            let payload = match (cached, fresh) {
                (Some(payload), _) => {
                    report.reused += 1;
                    payload
                }
                (None, Some(Ok(payload))) => payload,
                (None, Some(Err(e))) if options.skip_bad => {
                    report.skipped.push(BadPackage {
                        path: file.path.clone(),
                        reason: error_line(&e),
                    });
                    continue;
                }
                (None, Some(Err(e))) => return Err(e.into()),
                (None, None) => continue,
            };
            cache.push(file, &payload)?;
            report.packages += 1;
            report.bytes += file.size;
        }
    }
    drop(lookup);
    cache.commit()?;
    progress.finish();

    // Pass 2: render the documents from the cache.
    progress.start("writing metadata", 3);
    let staging = Staging::new(dir, "repodata")?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let results: Vec<Result<Vec<Published>, RpmIndexError>> = Document::ALL
        .par_iter()
        .enumerate()
        .map(|(slot, &doc)| {
            let xml = render_document(
                dir,
                &fingerprint,
                staging.path(),
                (doc, slot),
                report.packages,
                options.compression,
                now,
            )?;
            let mut published = Vec::new();
            if options.database {
                published.push(render_database(
                    staging.path(),
                    doc,
                    &xml,
                    options.compression,
                    now,
                )?);
            }
            published.insert(0, xml);
            progress.advance(1);
            Ok(published)
        })
        .collect();
    let mut repomd = Repomd {
        revision: now.to_string(),
        records: Vec::new(),
    };
    let mut databases = Vec::new();
    for published in results {
        let mut published = published?.into_iter();
        repomd.records.extend(published.next().map(|p| p.record));
        databases.extend(published.map(|p| p.record));
    }
    repomd.records.extend(databases);
    let repomd_path = staging.path().join("repomd.xml");
    write_file(&repomd_path, repomd.to_xml().as_bytes())?;
    if let Some(signer) = &options.signer {
        // In the staging directory: repomd.xml and its signature are swapped in together.
        signer.sign_repomd(staging.path())?;
    }
    staging.commit()?;
    progress.finish();
    report.repomd = dir.join("repodata/repomd.xml");
    Ok(report)
}

fn error_line(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        line.push_str(": ");
        line.push_str(&s.to_string());
        source = s.source();
    }
    line
}

fn encode_fragments(pkg: &super::Package) -> Vec<u8> {
    let mut payload = Vec::with_capacity(4096);
    let mut fragment = String::with_capacity(2048);
    for doc in Document::ALL {
        fragment.clear();
        doc.render(pkg, &mut fragment);
        payload.extend_from_slice(&(fragment.len() as u32).to_le_bytes());
        payload.extend_from_slice(fragment.as_bytes());
    }
    payload
}

/// The fragment number `slot` of an encoded payload.
fn fragment(payload: &[u8], slot: usize) -> Option<&[u8]> {
    let mut rest = payload;
    for i in 0..=slot {
        let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let body = rest.get(4..4 + len)?;
        if i == slot {
            return Some(body);
        }
        rest = &rest[4 + len..];
    }
    None
}

/// Counts and hashes what passes through.
struct Tally<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Tally<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Where a metadata file went and what repomd.xml says of it.
struct Published {
    record: RepomdRecord,
    path: PathBuf,
}

/// Writes `name` (e.g. `primary.xml`) compressed into `staging` under its checksummed name,
/// with the content `write` produces, and describes it for repomd.xml.
fn publish_file(
    staging: &Path,
    kind: &str,
    name: &str,
    compression: Compression,
    now: i64,
    write: impl FnOnce(&mut dyn Write) -> Result<(), RpmIndexError>,
) -> Result<Published, RpmIndexError> {
    let tmp = staging.join(format!(".{name}{}", compression.suffix()));
    let write_err = |source| RpmIndexError::Write {
        path: tmp.clone(),
        source,
    };
    let file = File::create(&tmp).map_err(write_err)?;
    let stored = Tally {
        inner: BufWriter::with_capacity(1 << 16, file),
        hasher: Sha256::new(),
        bytes: 0,
    };
    let compressor = compression.writer(stored).map_err(write_err)?;
    let mut open = Tally {
        inner: BufWriter::with_capacity(1 << 16, compressor),
        hasher: Sha256::new(),
        bytes: 0,
    };
    write(&mut open)?;
    let open_checksum = hex::encode(open.hasher.finalize());
    let open_size = open.bytes;
    let compressor = open
        .inner
        .into_inner()
        .map_err(|e| write_err(e.into_error()))?;
    let mut stored = compressor.finish().map_err(write_err)?;
    stored.flush().map_err(write_err)?;
    let checksum = hex::encode(stored.hasher.finalize());
    let file_name = format!("{checksum}-{name}{}", compression.suffix());
    let path = staging.join(&file_name);
    std::fs::rename(&tmp, &path).map_err(write_err)?;
    Ok(Published {
        record: RepomdRecord {
            kind: kind.to_owned(),
            checksum_type: "sha256".into(),
            checksum,
            open_checksum: Some(open_checksum),
            href: format!("repodata/{file_name}"),
            timestamp: now,
            size: stored.bytes,
            open_size: Some(open_size),
            database_version: None,
        },
        path,
    })
}

/// Renders one XML document from the cache.
fn render_document(
    dir: &Path,
    fingerprint: &str,
    staging: &Path,
    (doc, slot): (Document, usize),
    count: u64,
    compression: Compression,
    now: i64,
) -> Result<Published, RpmIndexError> {
    let name = format!("{}.xml", doc.name());
    let mut reader =
        CacheReader::open(dir, CACHE_NAME, fingerprint)?.ok_or_else(|| RpmIndexError::Write {
            path: dir.join(crate::publish::STATE_DIR),
            source: io::Error::other("the index cache written a moment ago is gone"),
        })?;
    publish_file(staging, doc.name(), &name, compression, now, |out| {
        let write_err = |source| RpmIndexError::Write {
            path: staging.join(&name),
            source,
        };
        out.write_all(doc.head(count).as_bytes())
            .map_err(write_err)?;
        while let Some(record) = reader.next_record()? {
            let body = fragment(&record.payload, slot).ok_or_else(|| {
                write_err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("damaged cache record for `{}`", record.rel),
                ))
            })?;
            out.write_all(body).map_err(write_err)?;
        }
        out.write_all(doc.tail().as_bytes()).map_err(write_err)
    })
}

/// Builds the sqlite database of `doc` from its just-written XML.
fn render_database(
    staging: &Path,
    doc: Document,
    xml: &Published,
    compression: Compression,
    now: i64,
) -> Result<Published, RpmIndexError> {
    let db_path = staging.join(format!(".{}.sqlite", doc.name()));
    let xml_in = Compression::open(&xml.path).map_err(|source| RpmIndexError::Write {
        path: xml.path.clone(),
        source,
    })?;
    let checksum = &xml.record.checksum;
    match doc {
        Document::Primary => sqlite::write_primary_db(&db_path, xml_in, checksum),
        Document::Filelists => sqlite::write_filelists_db(&db_path, xml_in, checksum),
        Document::Other => sqlite::write_other_db(&db_path, xml_in, checksum),
    }?;
    let kind = format!("{}_db", doc.name());
    let name = format!("{}.sqlite", doc.name());
    let mut published = publish_file(staging, &kind, &name, compression, now, |out| {
        let mut db = File::open(&db_path).map_err(|source| RpmIndexError::Write {
            path: db_path.clone(),
            source,
        })?;
        io::copy(&mut db, out).map_err(|source| RpmIndexError::Write {
            path: db_path.clone(),
            source,
        })?;
        Ok(())
    })?;
    let _ = std::fs::remove_file(&db_path);
    published.record.database_version = Some(sqlite::DATABASE_VERSION);
    Ok(published)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), RpmIndexError> {
    std::fs::write(path, bytes).map_err(|source| RpmIndexError::Write {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_round_trip_through_the_payload() {
        let pkg = super::super::Package {
            name: "a".into(),
            ..Default::default()
        };
        let payload = encode_fragments(&pkg);
        for (slot, doc) in Document::ALL.iter().enumerate() {
            let mut expected = String::new();
            doc.render(&pkg, &mut expected);
            assert_eq!(fragment(&payload, slot), Some(expected.as_bytes()));
        }
        assert_eq!(fragment(&payload[..3], 0), None);
    }
}
