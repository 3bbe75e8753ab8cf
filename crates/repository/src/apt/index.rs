//! `vrepo index` for .debs: scan, read in parallel, stream the indexes, publish atomically.
//!
//! Files are processed in scan order, in chunks: the main thread looks each chunk's files up in
//! the `--update` cache (a sorted stream), rayon reads the rest in parallel (one pass per file:
//! control stanza, size, digests), and a writer thread appends the finished stanzas, in order,
//! to the plain index and hands blocks of it to one compressor thread per format. Only a couple
//! of chunks are in flight at a time, so memory does not grow with the number of packages.
//!
//! In the `dists` layout, `Architecture: all` packages belong in every `binary-ARCH` index, but
//! the set of architectures is only known at the end; their stanzas are spooled to a temporary
//! file and appended to each index when the scan is done.
//!
//! Publication: for `dists`, the whole `dists/SUITE` tree is built in a staging directory and
//! swapped in with one rename, so a client sees the old suite or the new one. A flat repository
//! shares its directory with the packages, so its four files are renamed into place one by one,
//! after all of them are completely written and synced: `Packages.gz`, `Packages.xz`, `Packages`
//! and `Release` last. A failure before the renames leaves the previous metadata untouched. A
//! client that reads `Release` after the last rename sees a consistent set; one that fetched the
//! old `Release` just before and the indexes just after gets a hash mismatch and retries (apt
//! reports it and the next `apt-get update` succeeds); that short window is inherent to flat
//! repositories, which is why the `dists` layout is the one to serve while indexing.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufRead, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rayon::prelude::*;

use super::chunks::{
    ChunkCache, ChunkCacheWriter, ChunkId, Chunker, CompressedChunk, compress_chunk,
    empty_gzip_member,
};
use super::overrides::{OverrideError, Overrides};
use super::packages::{PackageFile, write_packages_stanza};
use super::release::{ReleaseEntry, ReleaseFields, write_release};
use crate::BadPackage;
use crate::cache::{CacheError, CacheLookup, CacheWriter};
use crate::compress::Compression;
use crate::deb::checksum::{HashingWriter, MultiHasher};
use crate::deb::{DebError, read_deb};
use crate::progress::Progress;
use crate::publish::{PublishError, STATE_DIR, Staging, lock_repository, sync_dir};
use crate::scan::{FoundFile, ScanError, scan_packages};
use crate::xz_blocks::XzStreamWriter;

/// Name of the `--update` cache under `DIR/.vrepo/`.
const CACHE_NAME: &str = "apt";
/// Files per unit of parallel work; bounds memory together with the channel depth.
const CHUNK_FILES: usize = 512;

/// How the repository is laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AptLayout {
    /// `Packages*` and `Release` in the repository directory itself (`deb file:DIR ./`).
    Flat,
    /// `dists/SUITE/COMPONENT/binary-ARCH/Packages*` and `dists/SUITE/Release`, with
    /// `Filename:` paths relative to the repository directory (usually into `pool/`).
    Dists {
        /// The suite (distribution) name, e.g. `stable`.
        suite: String,
        /// The component, e.g. `main`.
        component: String,
    },
}

/// Options of [`index_apt`].
#[derive(Debug, Clone)]
pub struct AptIndexOptions {
    /// Flat or `dists/` layout.
    pub layout: AptLayout,
    /// A Priority/Section override file.
    pub override_file: Option<PathBuf>,
    /// Reuse the entries of files whose size and modification time did not change.
    pub update: bool,
    /// Leave bad packages out and report them instead of failing.
    pub skip_bad: bool,
    /// Wait for another indexer of the same directory instead of failing.
    pub wait_for_lock: bool,
    /// `Origin:` of the `Release`.
    pub origin: Option<String>,
    /// `Label:` of the `Release`.
    pub label: Option<String>,
    /// Sign the `Release` (`InRelease`, `Release.gpg`) before it is published.
    pub signer: Option<std::sync::Arc<crate::sign::Signer>>,
}

impl Default for AptIndexOptions {
    fn default() -> Self {
        AptIndexOptions {
            layout: AptLayout::Flat,
            override_file: None,
            update: false,
            skip_bad: false,
            wait_for_lock: false,
            origin: None,
            label: None,
            signer: None,
        }
    }
}

/// What [`index_apt`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AptIndexReport {
    /// Packages in the new indexes (each counted once, even when in several).
    pub packages: u64,
    /// Their total size in bytes.
    pub bytes: u64,
    /// How many of them came from the `--update` cache without being read.
    pub reused: u64,
    /// Files left out because they are bad (only with `skip_bad`).
    pub skipped: Vec<BadPackage>,
    /// Architectures of the indexes written (`dists`), or found in the packages (flat).
    pub architectures: Vec<String>,
    /// Chunks of stanzas compressed independently into `Packages.gz` and `Packages.xz`.
    pub chunks: u64,
    /// How many of them were unchanged and copied from the previous run's compressed chunks.
    pub chunks_reused: u64,
}

/// Failure of [`index_apt`].
#[derive(Debug, thiserror::Error)]
pub enum AptError {
    /// An option value that cannot be used.
    #[error("invalid {what} `{value}`: {reason}")]
    InvalidOption {
        /// Which option.
        what: &'static str,
        /// Its value.
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The repository directory could not be walked.
    #[error(transparent)]
    Scan(#[from] ScanError),
    /// Locking or publishing failed.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The override file is unreadable or malformed.
    #[error(transparent)]
    Override(#[from] OverrideError),
    /// The `--update` cache could not be written.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// A package file could not be read or is not a valid .deb.
    #[error(transparent)]
    Package(#[from] DebError),
    /// A package whose name or control data cannot go into an index. The path is shown with
    /// control characters escaped, so a hostile name cannot break the one-line message.
    #[error("cannot index `{}`: {reason}", path.display().to_string().escape_debug())]
    BadPackage {
        /// The package file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Signing the `Release` failed.
    #[error(transparent)]
    Sign(#[from] crate::sign::SignError),
    /// Writing an index file failed.
    #[error("failed to write `{}`", path.display())]
    Write {
        /// The file being written.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl AptError {
    fn write(path: &Path) -> impl FnOnce(io::Error) -> AptError + '_ {
        move |source| AptError::Write {
            path: path.to_owned(),
            source,
        }
    }
}

/// Writes apt metadata for the .debs under `dir`; see the module documentation.
pub fn index_apt(
    dir: &Path,
    opts: &AptIndexOptions,
    progress: &dyn Progress,
) -> Result<AptIndexReport, AptError> {
    if let AptLayout::Dists { suite, component } = &opts.layout {
        check_name("suite", suite)?;
        check_name("component", component)?;
    }
    let _lock = lock_repository(dir, opts.wait_for_lock)?;
    let override_bytes = match &opts.override_file {
        Some(path) => Some(std::fs::read(path).map_err(|source| OverrideError::Io {
            path: path.clone(),
            source,
        })?),
        None => None,
    };
    let overrides = match (&opts.override_file, &override_bytes) {
        (Some(path), Some(bytes)) => Some(Overrides::parse(&String::from_utf8_lossy(bytes), path)?),
        _ => None,
    };
    let fingerprint = cache_fingerprint(&opts.layout, override_bytes.as_deref());

    progress.start("scan", 0);
    let scan = scan_packages(dir, "deb")?;
    progress.finish();
    let mut report = AptIndexReport::default();
    for bad in scan.bad {
        if !opts.skip_bad {
            return Err(AptError::BadPackage {
                path: bad.path,
                reason: bad.reason,
            });
        }
        report.skipped.push(bad);
    }

    let mut cache_in = if opts.update {
        CacheLookup::open(dir, CACHE_NAME, &fingerprint)
    } else {
        CacheLookup::empty()
    };
    let cache_out = CacheWriter::create(dir, CACHE_NAME, &fingerprint)?;
    let chunk_cache = Arc::new(if opts.update {
        ChunkCache::open(dir)
    } else {
        ChunkCache::empty()
    });
    let chunk_cache_out = Arc::new(Mutex::new(ChunkCacheWriter::create(dir)?));

    let (staging, index_root) = match &opts.layout {
        AptLayout::Flat => {
            let staging = Staging::new(&dir.join(STATE_DIR), "apt-flat")?;
            let root = staging.path().to_owned();
            (staging, root)
        }
        AptLayout::Dists { suite, component } => {
            let dists = dir.join("dists");
            std::fs::create_dir_all(&dists).map_err(AptError::write(&dists))?;
            let staging = Staging::new(&dists, suite)?;
            let root = staging.path().join(component);
            (staging, root)
        }
    };

    let sink = IndexSink {
        dists: match &opts.layout {
            AptLayout::Flat => None,
            AptLayout::Dists { suite, component } => Some((suite.clone(), component.clone())),
        },
        index_root,
        release_root: staging.path().to_owned(),
        cache: cache_out,
        chunk_cache,
        chunk_cache_out,
    };
    let (sender, receiver) = crossbeam_channel::bounded::<Vec<Processed>>(2);
    progress.start("index", scan.files.len() as u64);
    let outcome = std::thread::scope(|scope| {
        let writer = scope.spawn(move || sink.run(receiver));
        let produced = produce(
            &scan.files,
            &mut cache_in,
            overrides.as_ref(),
            &opts.layout,
            opts.skip_bad,
            progress,
            &mut report,
            &sender,
        );
        drop(sender);
        let written = writer
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        // A production error explains a writer error that followed from it (closed channel).
        produced.and(written)
    });
    progress.finish();
    let written = outcome?;

    report.architectures = written.architectures.clone();
    report.chunks = written.chunks;
    report.chunks_reused = written.chunks_reused;
    let release_fields = ReleaseFields {
        origin: opts.origin.clone(),
        label: opts.label.clone(),
        suite: match &opts.layout {
            AptLayout::Flat => None,
            AptLayout::Dists { suite, .. } => Some(suite.clone()),
        },
        codename: None,
        architectures: written.architectures.clone(),
        components: match &opts.layout {
            AptLayout::Flat => Vec::new(),
            AptLayout::Dists { component, .. } => vec![component.clone()],
        },
        date: None,
        acquire_by_hash: matches!(opts.layout, AptLayout::Dists { .. }),
    };
    let release_path = staging.path().join("Release");
    let release = write_release(&release_fields, &written.entries);
    write_synced(&release_path, release.as_bytes())?;
    if let Some(signer) = &opts.signer {
        // In the staging directory: the signatures are published with the Release they sign.
        signer.sign_release(staging.path())?;
    }
    if let AptLayout::Dists { suite, .. } = &opts.layout {
        // The indexes by hash as well, and the previous run's for one more run: a client that
        // read the old Release while the suite is swapped still finds what it names.
        let current = dir.join("dists").join(suite);
        crate::by_hash::link_by_hash(staging.path(), &current, release.as_bytes())
            .map_err(AptError::write(staging.path()))?;
    }

    // The caches describe package files and chunk contents, not the published metadata, so
    // publishing them first is always safe.
    written.cache.commit()?;
    if let Some(chunk_cache) = Arc::into_inner(written.chunk_cache_out)
        && let Ok(chunk_cache) = chunk_cache.into_inner()
    {
        chunk_cache.commit()?;
    }
    match &opts.layout {
        AptLayout::Dists { .. } => staging.commit()?,
        AptLayout::Flat => {
            // A signature of the previous Release must not outlive it: it would make apt
            // refuse the new one (or, for InRelease, vouch for indexes no longer there).
            if opts.signer.is_none() {
                for name in ["InRelease", "Release.gpg"] {
                    match std::fs::remove_file(dir.join(name)) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(source) => {
                            return Err(PublishError::Io {
                                action: "remove",
                                path: dir.join(name),
                                source,
                            }
                            .into());
                        }
                    }
                }
            }
            // InRelease last: apt reads it first, and it carries its own Release.
            let signed: &[&str] = if opts.signer.is_some() {
                &["Release.gpg", "InRelease"]
            } else {
                &[]
            };
            for name in ["Packages.gz", "Packages.xz", "Packages", "Release"]
                .iter()
                .chain(signed)
            {
                let from = staging.path().join(name);
                let to = dir.join(name);
                std::fs::rename(&from, &to).map_err(|source| PublishError::Io {
                    action: "publish",
                    path: to.clone(),
                    source,
                })?;
            }
            sync_dir(dir)?;
        }
    }
    Ok(report)
}

/// Suite and component names become directory names: keep them to one plain path component.
fn check_name(what: &'static str, value: &str) -> Result<(), AptError> {
    let ok = !value.is_empty()
        && value != "."
        && value != ".."
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-~".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(AptError::InvalidOption {
            what,
            value: value.to_owned(),
            reason: "use letters, digits and `.`, `_`, `+`, `-`, `~` only",
        })
    }
}

/// One file's outcome, in scan order.
enum Processed {
    Indexed {
        file: FoundFile,
        architecture: String,
        stanza: String,
        payload: Vec<u8>,
    },
    Skipped,
}

/// Reads the files chunk by chunk and sends the results to the writer, in order.
#[allow(clippy::too_many_arguments)]
fn produce(
    files: &[FoundFile],
    cache: &mut CacheLookup,
    overrides: Option<&Overrides>,
    layout: &AptLayout,
    skip_bad: bool,
    progress: &dyn Progress,
    report: &mut AptIndexReport,
    sender: &crossbeam_channel::Sender<Vec<Processed>>,
) -> Result<(), AptError> {
    for chunk in files.chunks(CHUNK_FILES) {
        let work: Vec<(&FoundFile, Option<Vec<u8>>)> =
            chunk.iter().map(|file| (file, cache.get(file))).collect();
        let results: Vec<(Result<Processed, AptError>, bool, u64)> = work
            .into_par_iter()
            .map(|(file, cached)| {
                let reused = cached.is_some();
                match index_one(file, cached, overrides, layout) {
                    Ok((processed, size)) => (Ok(processed), reused, size),
                    Err(err) => (Err(err), false, 0),
                }
            })
            .collect();
        let mut batch = Vec::with_capacity(results.len());
        for (result, reused, size) in results {
            match result {
                Ok(processed) => {
                    report.packages += 1;
                    report.bytes += size;
                    report.reused += u64::from(reused);
                    batch.push(processed);
                }
                Err(err) if skip_bad => {
                    report.skipped.push(bad_package(err));
                    batch.push(Processed::Skipped);
                }
                Err(err) => return Err(err),
            }
        }
        progress.advance(chunk.len() as u64);
        progress.bytes(chunk.iter().map(|file| file.size).sum());
        if sender.send(batch).is_err() {
            // The writer stopped; its error is reported by the caller.
            return Ok(());
        }
    }
    Ok(())
}

fn bad_package(err: AptError) -> BadPackage {
    let path = match &err {
        AptError::Package(deb) => deb.path().to_owned(),
        AptError::BadPackage { path, .. } => path.clone(),
        _ => PathBuf::new(),
    };
    BadPackage {
        path,
        reason: error_chain(&err),
    }
}

/// The error and its causes on one line, as the CLI prints them.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

/// Reads (or takes from the cache) one package and renders its stanza.
fn index_one(
    file: &FoundFile,
    cached: Option<Vec<u8>>,
    overrides: Option<&Overrides>,
    layout: &AptLayout,
) -> Result<(Processed, u64), AptError> {
    if let Some(payload) = cached
        && let Some((size, architecture, stanza)) = decode_payload(&payload)
    {
        let processed = Processed::Indexed {
            file: file.clone(),
            architecture: architecture.to_owned(),
            stanza: stanza.to_owned(),
            payload,
        };
        return Ok((processed, size));
    }
    let info = read_deb(&file.path)?;
    let package = info.control.get("Package").unwrap_or("");
    let architecture = info.control.get("Architecture").unwrap_or("");
    if !is_valid_architecture(architecture) {
        return Err(AptError::BadPackage {
            path: file.path.clone(),
            reason: format!("invalid Architecture {architecture:?}"),
        });
    }
    let entry = overrides.and_then(|o| o.get(package, architecture));
    let filename = match layout {
        AptLayout::Flat => format!("./{}", file.rel),
        AptLayout::Dists { .. } => file.rel.clone(),
    };
    let mut stanza = String::with_capacity(1024);
    write_packages_stanza(
        &mut stanza,
        &info.control,
        &PackageFile {
            filename: &filename,
            size: info.size,
            checksums: &info.checksums,
        },
        entry.as_ref(),
    );
    let payload = encode_payload(info.size, architecture, &stanza);
    Ok((
        Processed::Indexed {
            file: file.clone(),
            architecture: architecture.to_owned(),
            stanza,
            payload,
        },
        info.size,
    ))
}

/// dpkg architecture names: lower-case letters, digits and `-` (they become directory names).
fn is_valid_architecture(arch: &str) -> bool {
    !arch.is_empty()
        && arch.len() <= 64
        && arch
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// What the cache's payloads depend on besides the package file: the layout (it shapes
/// `Filename`) and the override file's content. A change of either invalidates the cache.
fn cache_fingerprint(layout: &AptLayout, override_bytes: Option<&[u8]>) -> String {
    let layout = match layout {
        AptLayout::Flat => "flat".to_owned(),
        AptLayout::Dists { .. } => "dists".to_owned(),
    };
    let overrides = override_bytes.map_or_else(
        || "none".to_owned(),
        |bytes| {
            let mut hasher = MultiHasher::new();
            hasher.update(bytes);
            hex::encode(hasher.finish().sha256)
        },
    );
    format!("apt-stanza-v1 layout={layout} overrides={overrides}")
}

/// Cache payload: the package size, its architecture and its finished `Packages` stanza, so
/// that `--update` copies unchanged entries without parsing anything.
fn encode_payload(size: u64, architecture: &str, stanza: &str) -> Vec<u8> {
    let mut payload = Vec::with_capacity(9 + architecture.len() + stanza.len());
    payload.extend_from_slice(&size.to_le_bytes());
    // Architecture names are at most 64 bytes (checked before).
    payload.push(architecture.len() as u8);
    payload.extend_from_slice(architecture.as_bytes());
    payload.extend_from_slice(stanza.as_bytes());
    payload
}

/// The inverse of [`encode_payload`]; `None` (read the file again) for anything unexpected.
fn decode_payload(payload: &[u8]) -> Option<(u64, &str, &str)> {
    let size = u64::from_le_bytes(payload.get(..8)?.try_into().ok()?);
    let arch_len = usize::from(*payload.get(8)?);
    let architecture = std::str::from_utf8(payload.get(9..9 + arch_len)?).ok()?;
    let stanza = std::str::from_utf8(payload.get(9 + arch_len..)?).ok()?;
    let well_formed = is_valid_architecture(architecture)
        && stanza.ends_with("\n\n")
        && !stanza[..stanza.len() - 1].contains("\n\n");
    well_formed.then_some((size, architecture, stanza))
}

/// What the writer thread produced.
struct Written {
    entries: Vec<ReleaseEntry>,
    architectures: Vec<String>,
    cache: CacheWriter,
    chunk_cache_out: Arc<Mutex<ChunkCacheWriter>>,
    chunks: u64,
    chunks_reused: u64,
}

/// The writer side: cache records and index files.
struct IndexSink {
    dists: Option<(String, String)>,
    /// Directory of the `binary-ARCH` directories (dists) or of `Packages` (flat).
    index_root: PathBuf,
    /// Directory of `Release`, which the entries' paths are relative to.
    release_root: PathBuf,
    cache: CacheWriter,
    /// The previous run's compressed chunks (empty unless `--update`).
    chunk_cache: Arc<ChunkCache>,
    /// This run's compressed chunks, for the next `--update`.
    chunk_cache_out: Arc<Mutex<ChunkCacheWriter>>,
}

impl IndexSink {
    /// Starts the `Packages` files in `dir`.
    fn output(&self, dir: &Path) -> Result<IndexOutput, AptError> {
        IndexOutput::create(
            dir,
            "Packages",
            &self.release_root,
            &self.chunk_cache,
            &self.chunk_cache_out,
        )
    }

    fn run(
        mut self,
        batches: crossbeam_channel::Receiver<Vec<Processed>>,
    ) -> Result<Written, AptError> {
        let mut flat: Option<IndexOutput> = None;
        let mut per_arch: BTreeMap<String, IndexOutput> = BTreeMap::new();
        let mut seen_archs = BTreeSet::new();
        let spool_path = self.release_root.join(".arch-all.spool");
        let mut spool: Option<BufWriter<File>> = None;
        if self.dists.is_none() {
            flat = Some(self.output(&self.index_root)?);
        }
        for batch in batches {
            for processed in batch {
                let Processed::Indexed {
                    file,
                    architecture,
                    stanza,
                    payload,
                } = processed
                else {
                    continue;
                };
                self.cache.push(&file, &payload)?;
                if let Some(output) = flat.as_mut() {
                    seen_archs.insert(architecture);
                    output.write(stanza.as_bytes())?;
                } else if architecture == "all" {
                    let spool = match spool.as_mut() {
                        Some(spool) => spool,
                        None => spool.insert(BufWriter::new(
                            File::create(&spool_path).map_err(AptError::write(&spool_path))?,
                        )),
                    };
                    spool
                        .write_all(stanza.as_bytes())
                        .map_err(AptError::write(&spool_path))?;
                } else {
                    let output = match per_arch.get_mut(&architecture) {
                        Some(output) => output,
                        None => {
                            let dir = self.index_root.join(format!("binary-{architecture}"));
                            let output = self.output(&dir)?;
                            per_arch.entry(architecture).or_insert(output)
                        }
                    };
                    output.write(stanza.as_bytes())?;
                }
            }
        }

        let mut entries = Vec::new();
        let (mut chunks, mut chunks_reused) = (0, 0);
        let architectures;
        if let Some(output) = flat {
            let assembled = output.finish(&self.release_root)?;
            (chunks, chunks_reused) = (assembled.chunks, assembled.reused);
            entries.extend(assembled.entries);
            architectures = seen_archs.into_iter().collect();
        } else {
            if let Some(spool) = spool.take() {
                spool
                    .into_inner()
                    .map_err(|e| AptError::write(&spool_path)(e.into_error()))?;
                if per_arch.is_empty() {
                    // Only architecture-independent packages: a binary-all index alone.
                    let dir = self.index_root.join("binary-all");
                    per_arch.insert("all".to_owned(), self.output(&dir)?);
                }
                for output in per_arch.values_mut() {
                    let mut spooled =
                        File::open(&spool_path).map_err(AptError::write(&spool_path))?;
                    output.copy_from(&mut spooled, &spool_path)?;
                }
                std::fs::remove_file(&spool_path).map_err(AptError::write(&spool_path))?;
            }
            let (suite, component) = self.dists.clone().unwrap_or_default();
            for (arch, output) in per_arch {
                let assembled = output.finish(&self.release_root)?;
                chunks += assembled.chunks;
                chunks_reused += assembled.reused;
                entries.extend(assembled.entries);
                let dir = self.index_root.join(format!("binary-{arch}"));
                let path = dir.join("Release");
                let text =
                    format!("Archive: {suite}\nComponent: {component}\nArchitecture: {arch}\n");
                write_synced(&path, text.as_bytes())?;
                entries.push(release_entry(&self.release_root, &path, text.as_bytes()));
            }
            architectures = seen_archs_or(&entries);
        }
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Written {
            entries,
            architectures,
            cache: self.cache,
            chunk_cache_out: self.chunk_cache_out,
            chunks,
            chunks_reused,
        })
    }
}

/// The architectures of the `binary-ARCH` indexes among the entries.
fn seen_archs_or(entries: &[ReleaseEntry]) -> Vec<String> {
    let archs: BTreeSet<String> = entries
        .iter()
        .filter_map(|e| {
            let dir = e.path.rsplit_once('/')?.0;
            let arch = dir.rsplit('/').next()?.strip_prefix("binary-")?;
            Some(arch.to_owned())
        })
        .collect();
    archs.into_iter().collect()
}

fn release_entry(release_root: &Path, path: &Path, bytes: &[u8]) -> ReleaseEntry {
    let mut hasher = MultiHasher::new();
    hasher.update(bytes);
    ReleaseEntry {
        path: relative(release_root, path),
        size: bytes.len() as u64,
        checksums: hasher.finish(),
    }
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

/// Writes a small file and syncs it, so a later rename publishes durable content.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), AptError> {
    let mut file = File::create(path).map_err(AptError::write(path))?;
    file.write_all(bytes).map_err(AptError::write(path))?;
    file.sync_all().map_err(AptError::write(path))
}

/// One `Packages` index being written: the plain file here, the compressed copies by an
/// assembler thread, from chunks compressed on the rayon pool or taken from the chunk cache.
struct IndexOutput {
    path: PathBuf,
    /// `None` once finished.
    plain: Option<HashingWriter<BufWriter<File>>>,
    chunker: Chunker,
    chunk_cache: Arc<ChunkCache>,
    /// In order, one receiver per chunk, each giving that chunk compressed.
    pending: Option<crossbeam_channel::Sender<PendingChunk>>,
    assembler: Option<JoinHandle<Result<Assembled, AptError>>>,
}

/// What an assembler thread wrote.
struct Assembled {
    entries: Vec<ReleaseEntry>,
    chunks: u64,
    reused: u64,
}

type PendingChunk = crossbeam_channel::Receiver<io::Result<CompressedChunk>>;

/// Chunks compressed or queued ahead of the assembler, per index: bounds memory.
const PENDING_CHUNKS: usize = 32;

impl IndexOutput {
    fn create(
        dir: &Path,
        name: &str,
        release_root: &Path,
        chunk_cache: &Arc<ChunkCache>,
        chunk_writer: &Arc<Mutex<ChunkCacheWriter>>,
    ) -> Result<IndexOutput, AptError> {
        std::fs::create_dir_all(dir).map_err(AptError::write(dir))?;
        let path = dir.join(name);
        let file = File::create(&path).map_err(AptError::write(&path))?;
        let mut outputs = Vec::new();
        for compression in [Compression::Gzip, Compression::Xz] {
            let path = dir.join(format!("{name}{}", compression.suffix()));
            let file = File::create(&path).map_err(AptError::write(&path))?;
            outputs.push((path, file));
        }
        let (sender, receiver) = crossbeam_channel::bounded::<PendingChunk>(PENDING_CHUNKS);
        let release_root = release_root.to_owned();
        let chunk_writer = Arc::clone(chunk_writer);
        let assembler =
            std::thread::spawn(move || assemble(receiver, outputs, &release_root, &chunk_writer));
        Ok(IndexOutput {
            path,
            plain: Some(HashingWriter::new(BufWriter::with_capacity(1 << 16, file))),
            chunker: Chunker::default(),
            chunk_cache: Arc::clone(chunk_cache),
            pending: Some(sender),
            assembler: Some(assembler),
        })
    }

    /// Appends one whole stanza.
    fn write(&mut self, stanza: &[u8]) -> Result<(), AptError> {
        match self.chunker.push(stanza) {
            Some(chunk) => self.flush_chunk(chunk),
            None => Ok(()),
        }
    }

    /// Appends the stanzas of a spool file.
    fn copy_from(&mut self, input: impl Read, path: &Path) -> Result<(), AptError> {
        let mut input = io::BufReader::new(input);
        let mut stanza = Vec::with_capacity(2048);
        loop {
            let line_start = stanza.len();
            let got = input
                .read_until(b'\n', &mut stanza)
                .map_err(AptError::write(path))?;
            if got == 0 || &stanza[line_start..] == b"\n" {
                if !stanza.is_empty() {
                    self.write(&stanza)?;
                    stanza.clear();
                }
                if got == 0 {
                    return Ok(());
                }
            }
        }
    }

    fn flush_chunk(&mut self, chunk: Vec<u8>) -> Result<(), AptError> {
        if let Some(plain) = self.plain.as_mut() {
            plain
                .write_all(&chunk)
                .map_err(AptError::write(&self.path))?;
        }
        let id = ChunkId::of(&chunk).ok_or_else(|| AptError::Write {
            path: self.path.clone(),
            source: io::Error::new(io::ErrorKind::InvalidData, "index chunk over 4 GiB"),
        })?;
        let (done, pending) = crossbeam_channel::bounded(1);
        match self.chunk_cache.get(&id) {
            // The receiver is held by the assembler until it is read: sending cannot fail.
            Some(cached) => drop(done.send(Ok(cached))),
            None => rayon::spawn(move || drop(done.send(compress_chunk(id, &chunk)))),
        }
        let sent = match &self.pending {
            Some(sender) => sender.send(pending).is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            // The assembler stopped early: its error says why.
            self.finish_assembler().map(|_| ())
        }
    }

    fn finish_assembler(&mut self) -> Result<Assembled, AptError> {
        self.pending = None;
        let handle = self.assembler.take().ok_or_else(|| AptError::Write {
            path: self.path.clone(),
            source: io::Error::other("index already finished"),
        })?;
        handle
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }

    /// Finishes all files and returns their `Release` entries and chunk counts.
    fn finish(mut self, release_root: &Path) -> Result<Assembled, AptError> {
        if let Some(chunk) = self.chunker.finish() {
            self.flush_chunk(chunk)?;
        }
        let compressed = self.finish_assembler()?;
        let plain = self.plain.take().ok_or_else(|| AptError::Write {
            path: self.path.clone(),
            source: io::Error::other("index already finished"),
        })?;
        let (buffered, len, checksums) = plain.finish();
        let file = buffered
            .into_inner()
            .map_err(|e| AptError::write(&self.path)(e.into_error()))?;
        file.sync_all().map_err(AptError::write(&self.path))?;
        let mut entries = vec![ReleaseEntry {
            path: relative(release_root, &self.path),
            size: len,
            checksums,
        }];
        entries.extend(compressed.entries);
        Ok(Assembled {
            entries,
            ..compressed
        })
    }
}

impl Drop for IndexOutput {
    fn drop(&mut self) {
        // Closing the channel ends the assembler; wait for it so no file is written after we
        // return.
        self.pending = None;
        if let Some(handle) = self.assembler.take() {
            let _ = handle.join();
        }
    }
}

/// The assembler thread: writes the compressed chunks in order into `Packages.gz` and
/// `Packages.xz`, records them in the new chunk cache, and returns the two `Release` entries.
fn assemble(
    pending: crossbeam_channel::Receiver<PendingChunk>,
    outputs: Vec<(PathBuf, File)>,
    release_root: &Path,
    chunk_writer: &Mutex<ChunkCacheWriter>,
) -> Result<Assembled, AptError> {
    let mut outputs = outputs.into_iter();
    let (Some((gz_path, gz_file)), Some((xz_path, xz_file))) = (outputs.next(), outputs.next())
    else {
        return Err(AptError::Write {
            path: release_root.to_owned(),
            source: io::Error::other("no compressed outputs"),
        });
    };
    let mut gz = HashingWriter::new(BufWriter::with_capacity(1 << 16, gz_file));
    let mut xz = XzStreamWriter::new(HashingWriter::new(BufWriter::with_capacity(
        1 << 16,
        xz_file,
    )))
    .map_err(AptError::write(&xz_path))?;
    let mut chunks = 0u64;
    let mut reused = 0u64;
    for chunk in pending {
        let chunk = chunk
            .recv()
            .unwrap_or_else(|_| Err(io::Error::other("a compression job was lost")))
            .map_err(AptError::write(&xz_path))?;
        gz.write_all(&chunk.gzip)
            .map_err(AptError::write(&gz_path))?;
        xz.append(&chunk.xz).map_err(AptError::write(&xz_path))?;
        chunk_writer
            .lock()
            .map_err(|_| AptError::Write {
                path: xz_path.clone(),
                source: io::Error::other("chunk cache writer poisoned"),
            })?
            .push(&chunk)?;
        chunks += 1;
        reused += u64::from(chunk.reused);
    }
    if chunks == 0 {
        let member = empty_gzip_member().map_err(AptError::write(&gz_path))?;
        gz.write_all(&member).map_err(AptError::write(&gz_path))?;
    }
    let xz = xz.finish().map_err(AptError::write(&xz_path))?;
    let mut entries = Vec::with_capacity(2);
    for (path, writer) in [(gz_path, gz), (xz_path, xz)] {
        let (buffered, size, checksums) = writer.finish();
        let file = buffered
            .into_inner()
            .map_err(|e| AptError::write(&path)(e.into_error()))?;
        file.sync_all().map_err(AptError::write(&path))?;
        entries.push(ReleaseEntry {
            path: relative(release_root, &path),
            size,
            checksums,
        });
    }
    Ok(Assembled {
        entries,
        chunks,
        reused,
    })
}
