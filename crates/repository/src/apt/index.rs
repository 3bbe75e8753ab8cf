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
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use rayon::prelude::*;

use super::overrides::{OverrideError, Overrides};
use super::packages::{PackageFile, write_packages_stanza};
use super::release::{ReleaseEntry, ReleaseFields, write_release};
use crate::BadPackage;
use crate::cache::{CacheError, CacheLookup, CacheWriter};
use crate::compress::{CompressWriter, Compression};
use crate::deb::checksum::{Checksums, HashingWriter, MultiHasher};
use crate::deb::{DebError, read_deb};
use crate::progress::Progress;
use crate::publish::{PublishError, STATE_DIR, Staging, lock_repository, sync_dir};
use crate::scan::{FoundFile, ScanError, scan_packages};

/// Name of the `--update` cache under `DIR/.vrepo/`.
const CACHE_NAME: &str = "apt";
/// Files per unit of parallel work; bounds memory together with the channel depth.
const CHUNK_FILES: usize = 512;
/// Bytes of stanza text handed to the compressor threads at a time.
const BLOCK_BYTES: usize = 1 << 20;
/// The compressed variants written beside each plain `Packages`.
const COMPRESSED: [Compression; 2] = [Compression::Gzip, Compression::Xz];
/// xz preset for `Packages.xz`; see [`compressor`].
const XZ_PRESET: u32 = 0;

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

    let sink = IndexSink::new(&opts.layout, index_root, staging.path(), cache_out);
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
    };
    let release_path = staging.path().join("Release");
    write_synced(
        &release_path,
        write_release(&release_fields, &written.entries).as_bytes(),
    )?;

    // The cache describes package files, not metadata, so publishing it first is always safe.
    written.cache.commit()?;
    match &opts.layout {
        AptLayout::Dists { .. } => staging.commit()?,
        AptLayout::Flat => {
            for name in ["Packages.gz", "Packages.xz", "Packages", "Release"] {
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
}

/// The writer side: cache records and index files.
struct IndexSink {
    dists: Option<(String, String)>,
    /// Directory of the `binary-ARCH` directories (dists) or of `Packages` (flat).
    index_root: PathBuf,
    /// Directory of `Release`, which the entries' paths are relative to.
    release_root: PathBuf,
    cache: CacheWriter,
}

impl IndexSink {
    fn new(
        layout: &AptLayout,
        index_root: PathBuf,
        release_root: &Path,
        cache: CacheWriter,
    ) -> IndexSink {
        IndexSink {
            dists: match layout {
                AptLayout::Flat => None,
                AptLayout::Dists { suite, component } => Some((suite.clone(), component.clone())),
            },
            index_root,
            release_root: release_root.to_owned(),
            cache,
        }
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
            flat = Some(IndexOutput::create(&self.index_root, "Packages")?);
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
                            let output = IndexOutput::create(&dir, "Packages")?;
                            per_arch.entry(architecture).or_insert(output)
                        }
                    };
                    output.write(stanza.as_bytes())?;
                }
            }
        }

        let mut entries = Vec::new();
        let architectures;
        if let Some(output) = flat {
            entries.extend(output.finish(&self.release_root)?);
            architectures = seen_archs.into_iter().collect();
        } else {
            if let Some(spool) = spool.take() {
                spool
                    .into_inner()
                    .map_err(|e| AptError::write(&spool_path)(e.into_error()))?;
                if per_arch.is_empty() {
                    // Only architecture-independent packages: a binary-all index alone.
                    let dir = self.index_root.join("binary-all");
                    per_arch.insert("all".to_owned(), IndexOutput::create(&dir, "Packages")?);
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
                entries.extend(output.finish(&self.release_root)?);
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

/// One `Packages` index being written: the plain file here, compressed copies in threads.
struct IndexOutput {
    path: PathBuf,
    plain: HashingWriter<BufWriter<File>>,
    block: Vec<u8>,
    compressors: Vec<CompressorThread>,
}

struct CompressorThread {
    path: PathBuf,
    blocks: Option<crossbeam_channel::Sender<Arc<Vec<u8>>>>,
    handle: Option<JoinHandle<io::Result<(u64, Checksums)>>>,
}

impl IndexOutput {
    fn create(dir: &Path, name: &str) -> Result<IndexOutput, AptError> {
        std::fs::create_dir_all(dir).map_err(AptError::write(dir))?;
        let path = dir.join(name);
        let file = File::create(&path).map_err(AptError::write(&path))?;
        let mut compressors = Vec::new();
        for compression in COMPRESSED {
            let path = dir.join(format!("{name}{}", compression.suffix()));
            let file = File::create(&path).map_err(AptError::write(&path))?;
            let (sender, receiver) = crossbeam_channel::bounded::<Arc<Vec<u8>>>(4);
            let handle = std::thread::spawn(move || -> io::Result<(u64, Checksums)> {
                let buffered = BufWriter::with_capacity(1 << 16, file);
                let mut writer = compressor(compression, HashingWriter::new(buffered))?;
                for block in receiver {
                    writer.write_all(&block)?;
                }
                let (buffered, len, sums) = writer.finish()?.finish();
                let file = buffered
                    .into_inner()
                    .map_err(io::IntoInnerError::into_error)?;
                file.sync_all()?;
                Ok((len, sums))
            });
            compressors.push(CompressorThread {
                path,
                blocks: Some(sender),
                handle: Some(handle),
            });
        }
        Ok(IndexOutput {
            path,
            plain: HashingWriter::new(BufWriter::with_capacity(1 << 16, file)),
            block: Vec::with_capacity(BLOCK_BYTES),
            compressors,
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), AptError> {
        self.block.extend_from_slice(bytes);
        if self.block.len() >= BLOCK_BYTES {
            self.flush_block()?;
        }
        Ok(())
    }

    fn copy_from(&mut self, input: &mut impl Read, path: &Path) -> Result<(), AptError> {
        let mut buffer = vec![0u8; 1 << 16];
        loop {
            let got = input.read(&mut buffer).map_err(AptError::write(path))?;
            if got == 0 {
                return Ok(());
            }
            self.write(&buffer[..got])?;
        }
    }

    fn flush_block(&mut self) -> Result<(), AptError> {
        if self.block.is_empty() {
            return Ok(());
        }
        let block = Arc::new(std::mem::replace(
            &mut self.block,
            Vec::with_capacity(BLOCK_BYTES),
        ));
        self.plain
            .write_all(&block)
            .map_err(AptError::write(&self.path))?;
        for compressor in &mut self.compressors {
            let failed = match &compressor.blocks {
                Some(blocks) => blocks.send(Arc::clone(&block)).is_err(),
                None => false,
            };
            if failed {
                // The thread ended early: its error comes out of finish_compressor.
                compressor.blocks = None;
                return compressor.finish();
            }
        }
        Ok(())
    }

    /// Finishes all files and returns their `Release` entries.
    fn finish(mut self, release_root: &Path) -> Result<Vec<ReleaseEntry>, AptError> {
        self.flush_block()?;
        let IndexOutput {
            path,
            plain,
            mut compressors,
            ..
        } = self;
        let (buffered, len, checksums) = plain.finish();
        let file = buffered
            .into_inner()
            .map_err(|e| AptError::write(&path)(e.into_error()))?;
        file.sync_all().map_err(AptError::write(&path))?;
        let mut entries = vec![ReleaseEntry {
            path: relative(release_root, &path),
            size: len,
            checksums,
        }];
        for compressor in &mut compressors {
            let (size, checksums) = compressor.finish_result()?;
            entries.push(ReleaseEntry {
                path: relative(release_root, &compressor.path),
                size,
                checksums,
            });
        }
        Ok(entries)
    }
}

/// The compressing writer for one index file.
///
/// `Packages` is mostly hex digests, which no compressor shrinks much: measured on 20,000
/// stanzas (20 MB), xz preset 6 takes 14.6 s of CPU for 3.96 MB, preset 1 2.2 s for 4.69 MB,
/// preset 0 1.0-1.3 s for 5.08 MB, and gzip -6 0.6 s for 4.83 MB. xz at preset 6 would cost
/// five times what reading all the packages costs; preset 0 is the cheapest xz there is.
// TODO(lead): fold into crate::compress (a level parameter, or a "fast" variant).
fn compressor<W: Write>(compression: Compression, inner: W) -> io::Result<CompressWriter<W>> {
    match compression {
        Compression::Xz => Ok(CompressWriter::Xz(liblzma::write::XzEncoder::new(
            inner, XZ_PRESET,
        ))),
        other => other.writer(inner),
    }
}

impl CompressorThread {
    /// Ends the thread and reports its error, if any.
    fn finish(&mut self) -> Result<(), AptError> {
        self.finish_result().map(|_| ())
    }

    fn finish_result(&mut self) -> Result<(u64, Checksums), AptError> {
        self.blocks = None;
        let handle = self.handle.take().ok_or_else(|| AptError::Write {
            path: self.path.clone(),
            source: io::Error::other("compressor already finished"),
        })?;
        match handle.join() {
            Ok(result) => result.map_err(AptError::write(&self.path)),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for CompressorThread {
    fn drop(&mut self) {
        // Closing the channel ends the thread; wait for it so no file is written after we return.
        self.blocks = None;
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}
