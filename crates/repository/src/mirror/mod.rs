//! `vrepo mirror`: an incremental, verified, resumable copy of an rpm-md or apt repository.
//!
//! # How a run goes
//!
//! 1. Lock DEST ([`lock_repository`]) so two runs of the same mirror never interleave.
//! 2. Fetch the metadata root (`repodata/repomd.xml`, or `dists/SUITE/InRelease`/`Release`),
//!    check its signature against `--keyring` (or note that checking is off), then fetch every
//!    index it names into a hidden staging directory, verifying size and digest. An index whose
//!    copy in DEST already matches is linked from there instead of fetched.
//! 3. Read the package list (primary, or `Packages` per component and architecture). Every
//!    location is checked before it names a file ([`check`]): nothing from the source can write
//!    outside DEST, over its metadata or into its state.
//! 4. Keep the packages DEST already has with the right digest (a size+mtime cache avoids
//!    rehashing them), download the others in parallel into `DEST/.vrepo/mirror-parts/`, named
//!    by digest. Each is capped at its declared size and verified before it is used; partial
//!    files stay there and are resumed by the next run.
//! 5. Only when every package is present and verified: move the new packages into place, sync
//!    the file system, and swap the new metadata in with one rename per tree. Until that
//!    rename clients see the previous, complete mirror; after it, the new one.
//! 6. Then remove the packages the source dropped (those this mirror placed earlier and the new
//!    metadata no longer names), unless `--keep-removed`.
//!
//! # Inflate limits
//!
//! Every compressed index the mirror reads (rpm-md primary, apt `Packages` in any compression;
//! the other files are only checked against their digests, never inflated) is read through a
//! cap on its inflated size, so a small file cannot make a run inflate gigabytes (security
//! review, issue 13: an 18 MB primary.xml.gz of zeros took 8.4 GB). The cap is:
//!
//! - for rpm-md, the `open-size` repomd.xml declares, exactly: one byte more is refused;
//! - without a declared size, 50 times the compressed size, at least 64 MiB. A ratio rather
//!   than a fixed size, because what makes a bomb is the amplification: what a source can
//!   make us inflate is then tied to what it must send. Real indexes compress 4 to 16 times
//!   (Debian bookworm's `Release`: main `Packages.gz` 4.1, `Packages.xz` 5.7, `Sources.xz`
//!   5.3, `Contents-amd64.gz` 12.8 to 15.5), so the ratio stops only bombs (gzip reaches
//!   about 1,000, xz and zstd far more);
//! - in every case at most [`MAX_INFLATED`] (2 GiB), and a declared open-size is believed
//!   only up to the ratio.
//!
//! The readers stream, and refuse single records (an XML event, a deb822 stanza, a package
//! element) past a few MiB, so memory stays bounded well below the cap (a zeros bomb has no
//! record boundary at all); see [`crate::rpmmd`] and [`crate::deb::control::StanzaReader`].
//! A refused file fails the run with [`MirrorError::InflatedTooLarge`] before anything is
//! published.
//!
//! One window is inherent to repositories that change a file's content under the same name:
//! such a file is replaced right after the metadata switch, so for that moment the metadata
//! names content not yet in place (a client then sees a checksum error and retries). New names,
//! which is what rpm-md and Debian archives use for new builds, have no such window.

mod apt;
mod check;
pub(crate) use check::check_relative_path;
mod fetch;
mod rpmmd;
mod signature;
mod subset;

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;

pub use check::{Algorithm, Digest};
pub use fetch::{FetchError, FetchOptions, Fetcher, Source};
pub use signature::{SignatureError, SignaturePolicy};

use crate::cache::{CacheLookup, CacheWriter};
use crate::progress::Progress;
use crate::publish::{PublishError, STATE_DIR, Staging, lock_repository};
use crate::scan::FoundFile;

/// Which kind of repository the source is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirrorFormat {
    /// rpm-md when `repodata/repomd.xml` exists, otherwise apt (which needs a suite).
    Auto,
    /// rpm-md (`repodata/`).
    RpmMd,
    /// apt (`dists/SUITE/`).
    Apt,
}

/// What to mirror and how.
#[derive(Debug, Clone)]
pub struct MirrorOptions {
    /// The repository kind.
    pub format: MirrorFormat,
    /// apt suites (`dists/SUITE`); at least one for apt.
    pub suites: Vec<String>,
    /// apt components; empty: those the Release lists.
    pub components: Vec<String>,
    /// apt architectures; empty: those the Release lists (plus `all` when present).
    pub architectures: Vec<String>,
    /// Keep packages that the source no longer lists.
    pub keep_removed: bool,
    /// Parallel downloads.
    pub jobs: usize,
    /// Retries, backoff, rate limit, time-outs.
    pub fetch: FetchOptions,
    /// Signature checking of the metadata root.
    pub signature: SignaturePolicy,
    /// Wait for another run holding DEST's lock instead of failing.
    pub wait_for_lock: bool,
    /// Mirror only these packages and their dependency closure, re-indexed (`--packages`).
    pub subset: Option<crate::closure::SubsetOptions>,
    /// Sign the published metadata roots with this key (`--sign`): a subset's own metadata,
    /// or a full mirror's copy of the source's `Release`/`repomd.xml`, whose source signature
    /// is then replaced by ours.
    pub signer: Option<std::sync::Arc<crate::sign::Signer>>,
}

/// The most any metadata file the mirror reads may inflate to, whatever the source declares:
/// 2 GiB, over ten times the largest index a mirror reads today (Debian bookworm's main
/// `Packages` for amd64 inflates to 48 MiB; the largest file its `Release` lists,
/// `Contents-amd64`, to 142 MiB). A constant rather than an option: no real repository comes
/// near it, and the other limits bite first on anything hostile.
pub const MAX_INFLATED: u64 = 2 << 30;

/// Without a declared inflated size, an index may inflate to this many times its compressed
/// size: about three times the most that real metadata compresses (see the module
/// documentation), and a small multiple of what a bomb's source must send.
const INFLATE_RATIO: u64 = 50;

/// The ratio's floor: a small index may always inflate to this, which costs little.
const INFLATE_FLOOR: u64 = 64 << 20;

impl Default for MirrorOptions {
    fn default() -> Self {
        MirrorOptions {
            format: MirrorFormat::Auto,
            suites: Vec::new(),
            components: Vec::new(),
            architectures: Vec::new(),
            keep_removed: false,
            jobs: 4,
            fetch: FetchOptions::default(),
            signature: SignaturePolicy::Unverified,
            wait_for_lock: false,
            subset: None,
            signer: None,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MirrorReport {
    /// `rpm-md` or `apt`.
    pub format: &'static str,
    /// Packages the source lists (after de-duplication).
    pub packages: u64,
    /// Their total size.
    pub bytes: u64,
    /// Packages DEST already had with the right digest.
    pub present: u64,
    /// Packages downloaded (or taken from a verified partial download) this run.
    pub downloaded: u64,
    /// Bytes transferred for packages this run.
    pub downloaded_bytes: u64,
    /// Downloads that continued a partial file.
    pub resumed: u64,
    /// Packages removed because the source dropped them.
    pub removed: u64,
    /// Whether the published metadata changed.
    pub metadata_changed: bool,
    /// Requests made to the source (HTTP requests, or files opened for a local source).
    pub requests: u64,
    /// With a subset: the names and dependencies that could not be resolved (only when
    /// `skip_missing` let the run go on).
    pub unresolved: Vec<crate::closure::Missing>,
}

impl MirrorReport {
    /// Whether DEST changed at all (metadata, packages added or removed).
    pub fn changed(&self) -> bool {
        self.metadata_changed || self.downloaded > 0 || self.removed > 0
    }
}

/// A mirror run failed; DEST still holds the previous mirror.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// Locking or publishing failed.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// A metadata file could not be fetched.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The signature check failed.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// Signing the published metadata failed.
    #[error(transparent)]
    Sign(#[from] crate::sign::SignError),
    /// The source is not a repository of the expected kind.
    #[error("`{source_name}` is not {expected}")]
    NotARepository {
        /// The source.
        source_name: String,
        /// What was looked for.
        expected: String,
    },
    /// The source names a path that must not be written.
    #[error("refusing `{path}` named by {named_by} on the source: {reason}")]
    HostilePath {
        /// The path as the source gave it.
        path: String,
        /// The metadata file naming it.
        named_by: String,
        /// Why it is refused.
        reason: String,
    },
    /// A metadata file is malformed.
    #[error("malformed {file} on the source: {reason}")]
    Malformed {
        /// The file.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// Some packages could not be fetched or verified.
    #[error(
        "{failed} of {wanted} packages could not be mirrored (first: {first}); the previous mirror is unchanged"
    )]
    Packages {
        /// How many failed.
        failed: usize,
        /// How many were to be downloaded.
        wanted: usize,
        /// The first failure.
        first: Box<FetchError>,
        /// All failures, in package order.
        all: Vec<FetchError>,
    },
    /// Requested packages or their dependencies are not in the source (subset mirrors).
    #[error("cannot resolve {count} of the requested packages and dependencies: {list}")]
    Unresolved {
        /// How many are missing.
        count: usize,
        /// The first of them, on one line.
        list: String,
        /// All of them.
        missing: Vec<crate::closure::Missing>,
    },
    /// A metadata file inflates past its limit: a decompression bomb, or a wrong open-size.
    #[error(
        "`{url}` inflates to more than {limit} bytes ({why}); refusing it, the previous mirror is unchanged"
    )]
    InflatedTooLarge {
        /// The file on the source.
        url: String,
        /// The limit, in inflated bytes.
        limit: u64,
        /// Where the limit comes from.
        why: InflateLimitKind,
    },
    /// The subset could not be indexed.
    #[error("cannot index the package subset in `{}`", path.display())]
    Reindex {
        /// The directory being indexed.
        path: PathBuf,
        /// The indexer's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A local file operation failed.
    #[error("cannot {action} `{path}`")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> MirrorError {
    let path = path.to_owned();
    move |source| MirrorError::Io {
        action,
        path,
        source,
    }
}

/// A package the new metadata names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Wanted {
    pub(crate) rel: String,
    pub(crate) size: u64,
    pub(crate) digest: Digest,
}

/// Which metadata root a staged tree has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TreeKind {
    /// `repodata/` with `repomd.xml`.
    RpmMd,
    /// An apt suite or flat repository with `Release`.
    Apt,
}

/// A metadata tree staged for publication.
pub(crate) struct StagedTree {
    pub(crate) staging: Staging,
    pub(crate) kind: TreeKind,
    pub(crate) changed: bool,
    /// For a flat apt repository, the metadata shares DEST's top directory with the packages:
    /// these staged files are renamed into DEST one by one, in this order (`Release` last),
    /// instead of swapping a directory.
    pub(crate) flat_files: Option<Vec<String>>,
}

impl StagedTree {
    /// Signs the staged root (replacing any signature copied from the source), so that the
    /// switch publishes the root and its signatures together.
    fn sign(&mut self, signer: &crate::sign::Signer) -> Result<(), MirrorError> {
        match self.kind {
            TreeKind::RpmMd => signer.sign_repomd(self.staging.path())?,
            TreeKind::Apt => {
                signer.sign_release(self.staging.path())?;
                if let Some(files) = &mut self.flat_files {
                    // The root files go last, InRelease (what apt reads first) at the very end.
                    files
                        .retain(|n| !matches!(n.as_str(), "Release" | "Release.gpg" | "InRelease"));
                    files.extend(["Release", "Release.gpg", "InRelease"].map(str::to_owned));
                }
            }
        }
        Ok(())
    }

    fn publish(self, dest: &Path) -> Result<(), MirrorError> {
        let Some(files) = &self.flat_files else {
            return Ok(self.staging.commit()?);
        };
        let mut wanted = BTreeSet::new();
        for name in files {
            let from = self.staging.path().join(name);
            let to = dest.join(name);
            std::fs::rename(&from, &to).map_err(io_err("publish", &to))?;
            wanted.insert(name.as_str());
        }
        // A root file the source no longer has (say, an InRelease) must not outlive the rest.
        for name in ["InRelease", "Release.gpg"] {
            if !wanted.contains(name) {
                let _ = std::fs::remove_file(dest.join(name));
            }
        }
        crate::publish::sync_dir(dest)?;
        Ok(())
    }
}

/// What the metadata of the source asks for.
pub(crate) struct Plan {
    pub(crate) format: &'static str,
    pub(crate) trees: Vec<StagedTree>,
    pub(crate) packages: Vec<Wanted>,
    /// The package indexes read (staged copies), for subset resolution.
    pub(crate) indexes: Vec<SourceIndex>,
}

/// A package index of the source, as staged by a planner.
pub(crate) enum SourceIndex {
    /// rpm-md primary.
    Primary(StagedIndex),
    /// An apt `Packages` (any compression); `suite` is `None` for a flat repository.
    Packages {
        index: StagedIndex,
        suite: Option<String>,
        component: String,
    },
}

/// A staged copy of an index of the source, and how far it may inflate.
pub(crate) struct StagedIndex {
    /// The staged file.
    pub(crate) path: PathBuf,
    /// Its address on the source, for messages.
    pub(crate) url: String,
    pub(crate) limit: InflateLimit,
}

/// How many bytes a metadata file may inflate to, and why.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InflateLimit {
    bytes: u64,
    why: InflateLimitKind,
}

/// Where the inflate limit of a metadata file comes from (see
/// [`inflate limits`](crate::mirror#inflate-limits)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateLimitKind {
    /// The size repomd.xml declares (`open-size`).
    OpenSize,
    /// A multiple of the compressed size, for metadata that declares no size.
    Ratio,
    /// [`MAX_INFLATED`].
    Ceiling,
}

impl std::fmt::Display for InflateLimitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InflateLimitKind::OpenSize => write!(f, "its open-size in repomd.xml"),
            InflateLimitKind::Ratio => write!(
                f,
                "{INFLATE_RATIO} times its compressed size, more than real metadata inflates"
            ),
            InflateLimitKind::Ceiling => write!(
                f,
                "the ceiling of {} GiB for any metadata",
                MAX_INFLATED >> 30
            ),
        }
    }
}

/// The inflate limit of an index of `compressed` bytes: its declared `open_size` when the
/// metadata gives one, else [`INFLATE_RATIO`] times its compressed size (at least
/// [`INFLATE_FLOOR`]); never more than [`MAX_INFLATED`], nor than the ratio allows (a declared
/// size is believed only as far as real metadata compresses).
fn inflate_limit(compressed: u64, open_size: Option<u64>) -> InflateLimit {
    let by_ratio = compressed.saturating_mul(INFLATE_RATIO).max(INFLATE_FLOOR);
    let mut limit = InflateLimit {
        bytes: MAX_INFLATED,
        why: InflateLimitKind::Ceiling,
    };
    // Ties go to the later, more specific reason.
    for (bytes, why) in [
        (by_ratio, InflateLimitKind::Ratio),
        (open_size.unwrap_or(u64::MAX), InflateLimitKind::OpenSize),
    ] {
        if bytes <= limit.bytes {
            limit = InflateLimit { bytes, why };
        }
    }
    limit
}

/// Set while a capped index is read; turns what the parser made of the cap's error into
/// [`MirrorError::InflatedTooLarge`].
pub(crate) struct InflateGuard<'a> {
    tripped: crate::compress::CapTripped,
    index: &'a StagedIndex,
}

impl StagedIndex {
    /// Opens the staged file, decompressed and capped at its limit.
    pub(crate) fn open(
        &self,
    ) -> Result<(Box<dyn std::io::BufRead>, InflateGuard<'_>), MirrorError> {
        let (input, tripped) =
            crate::compress::Compression::open_capped(&self.path, self.limit.bytes)
                .map_err(io_err("read", &self.path))?;
        Ok((
            input,
            InflateGuard {
                tripped,
                index: self,
            },
        ))
    }
}

impl InflateGuard<'_> {
    /// `result`, unless the cap stopped the reading: then the cap's error, whatever the parser
    /// reported (a wrapped I/O error, or a complaint about the truncated document).
    pub(crate) fn check<T>(&self, result: Result<T, MirrorError>) -> Result<T, MirrorError> {
        if self.tripped.tripped() {
            return Err(MirrorError::InflatedTooLarge {
                url: self.index.url.clone(),
                limit: self.index.limit.bytes,
                why: self.index.limit.why,
            });
        }
        result
    }
}

/// Shared state of one run, handed to the format-specific planners.
pub(crate) struct Context<'a> {
    pub(crate) fetcher: &'a Fetcher,
    pub(crate) dest: &'a Path,
    pub(crate) state_dir: PathBuf,
    pub(crate) options: &'a MirrorOptions,
}

/// Largest metadata root (repomd.xml, Release) accepted.
const MAX_ROOT_FILE: u64 = 64 << 20;
/// Largest detached signature accepted.
const MAX_SIGNATURE: u64 = 1 << 20;
/// The packages this mirror placed, one relative path per line.
const MANAGED_FILE: &str = "mirror.files";
const PARTS_DIR: &str = "mirror-parts";
/// The fingerprint of the key the published metadata is signed with (empty: unsigned, or
/// the source's own signatures).
const SIGNED_BY_FILE: &str = "mirror.signed-by";
const CACHE_NAME: &str = "mirror";
const CACHE_FINGERPRINT: &str = "mirror-digest-v1";

impl Context<'_> {
    /// Where the copy of the source's metadata at `rel` (`repodata`, `dists/S`, `Release`) is
    /// kept between runs, so unchanged files are linked instead of fetched: DEST itself, or
    /// for a subset (whose published metadata is its own) a copy under `.vrepo/`.
    pub(crate) fn current_metadata(&self, rel: &str) -> PathBuf {
        match &self.options.subset {
            Some(_) => self.state_dir.join(subset::SOURCE_COPY_DIR).join(rel),
            None => self.dest.join(rel),
        }
    }

    /// The inflate limit of an index staged at `staged`; see [`inflate_limit`].
    pub(crate) fn inflate_limit(&self, staged: &Path, open_size: Option<u64>) -> InflateLimit {
        let compressed = std::fs::metadata(staged).map_or(0, |m| m.len());
        inflate_limit(compressed, open_size)
    }

    /// Checks a path from the source that will name a file under DEST.
    pub(crate) fn check_path(&self, path: &str, named_by: &str) -> Result<(), MirrorError> {
        let hostile = |reason: &str| MirrorError::HostilePath {
            path: path.to_owned(),
            named_by: named_by.to_owned(),
            reason: reason.to_owned(),
        };
        check::check_relative_path(path).map_err(hostile)?;
        if path.starts_with("repodata/") || path.starts_with("dists/") {
            return Err(hostile("a package cannot live in the metadata directories"));
        }
        Ok(())
    }

    /// Puts the metadata file `rel` (declared `size` and `digest`) at `staged`, linking DEST's
    /// `current` copy when it matches and fetching it otherwise. `Ok(false)` if the source does
    /// not have it.
    pub(crate) fn stage_file(
        &self,
        rel: &str,
        current: &Path,
        staged: &Path,
        size: u64,
        digest: &Digest,
    ) -> Result<bool, MirrorError> {
        if file_matches(current, size, digest) {
            if std::fs::hard_link(current, staged).is_err() {
                std::fs::copy(current, staged).map_err(io_err("copy", current))?;
            }
            return Ok(true);
        }
        match self.fetcher.download(rel, staged, size, digest, &|_| {}) {
            Ok(_) => Ok(true),
            Err(FetchError::NotFound { .. }) => {
                let _ = std::fs::remove_file(staged);
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Whether `path` is a regular file of `size` bytes with `digest`.
fn file_matches(path: &Path, size: u64, digest: &Digest) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return false;
    };
    if !meta.is_file() || meta.len() != size {
        return false;
    }
    File::open(path)
        .and_then(|f| check::hash_reader(digest.algorithm(), f))
        .is_ok_and(|(hex, len)| len == size && hex == digest.hex())
}

/// Mirrors `source` (URL, `file://` URL or path) into `dest`.
///
/// On error DEST still serves the previous mirror; verified downloads are kept for the next run.
pub fn mirror(
    source: &str,
    dest: &Path,
    options: &MirrorOptions,
    progress: &dyn Progress,
) -> Result<MirrorReport, MirrorError> {
    let source = Source::parse(source);
    if let Source::Local(dir) = &source
        && !dir.is_dir()
    {
        return Err(MirrorError::NotARepository {
            source_name: dir.display().to_string(),
            expected: "a directory".into(),
        });
    }
    std::fs::create_dir_all(dest).map_err(io_err("create", dest))?;
    let _lock = lock_repository(dest, options.wait_for_lock)?;
    let fetcher = Fetcher::new(source.clone(), options.fetch.clone());
    let context = Context {
        fetcher: &fetcher,
        dest,
        state_dir: dest.join(STATE_DIR),
        options,
    };
    let not_a_repository = |expected: &str| MirrorError::NotARepository {
        source_name: source.display(""),
        expected: expected.to_owned(),
    };
    progress.start("metadata", 0);
    let plan = match options.format {
        MirrorFormat::RpmMd => rpmmd::plan(&context)?
            .ok_or_else(|| not_a_repository("an rpm-md repository (no repodata/repomd.xml)"))?,
        MirrorFormat::Apt if options.suites.is_empty() => apt::plan_flat(&context)?,
        MirrorFormat::Apt => apt::plan(&context)?,
        MirrorFormat::Auto => match rpmmd::plan(&context)? {
            Some(plan) => plan,
            None if !options.suites.is_empty() => apt::plan(&context)?,
            None => apt::plan_flat(&context).map_err(|e| match e {
                MirrorError::NotARepository { .. } => not_a_repository(
                    "a repository: it has neither repodata/repomd.xml nor a flat apt Release; \
                     for an apt archive, name a suite with --suite",
                ),
                other => other,
            })?,
        },
    };
    progress.finish();
    let mut plan = plan;
    let subset = match &options.subset {
        Some(wanted) => Some(subset::select(&context, &mut plan, wanted)?),
        None => None,
    };
    let packages = dedupe(std::mem::take(&mut plan.packages))?;
    let signed_by = options
        .signer
        .as_ref()
        .map_or_else(String::new, |s| s.fingerprint().to_owned());
    // Signing on, off or with another key changes what clients must see, even when the
    // source did not change.
    let signing_changed = read_signed_by(&context.state_dir) != signed_by;
    let mut report = MirrorReport {
        format: plan.format,
        packages: packages.len() as u64,
        bytes: packages.iter().map(|p| p.size).sum(),
        metadata_changed: signing_changed
            || match &subset {
                Some(subset) => subset.metadata_changed(&context, &packages),
                None => plan.trees.iter().any(|t| t.changed),
            },
        unresolved: subset
            .as_ref()
            .map(|s| s.missing.clone())
            .unwrap_or_default(),
        ..MirrorReport::default()
    };

    let missing = find_missing(dest, &packages);
    report.present = (packages.len() - missing.len()) as u64;

    let parts = context.state_dir.join(PARTS_DIR);
    std::fs::create_dir_all(&parts).map_err(io_err("create", &parts))?;
    let fetched = download_all(&context, &parts, &missing, progress)?;
    report.downloaded = missing.len() as u64;
    report.downloaded_bytes = fetched.iter().map(|f| f.transferred).sum();
    report.resumed = fetched.iter().filter(|f| f.resumed).count() as u64;
    if subset.is_some() {
        subset::keep_source_metadata(&context, plan.format, &plan.trees);
    }
    if let Some(subset) = &subset
        && report.changed()
    {
        // The source's metadata describes all of it: publish an index of the subset instead.
        plan.trees = subset.reindex(&context, &parts, &packages, &missing)?;
    }

    // Record every package this run may place before placing any, so an interrupted run never
    // leaves files that a later run would not know it may remove.
    let previously_managed = read_managed(&context.state_dir);
    let wanted_paths: BTreeSet<String> = packages.iter().map(|p| p.rel.clone()).collect();
    let union: BTreeSet<String> = previously_managed.union(&wanted_paths).cloned().collect();
    write_managed(&context.state_dir, &union)?;

    let mut deferred = Vec::new();
    for wanted in &missing {
        let target = dest.join(&wanted.rel);
        if std::fs::symlink_metadata(&target).is_ok() {
            deferred.push(*wanted);
        } else {
            place(dest, &parts, wanted)?;
        }
    }
    if report.changed() {
        // Every tree is signed before any is published: a key that fails leaves DEST as it was.
        if let Some(signer) = &options.signer {
            for tree in &mut plan.trees {
                tree.sign(signer)?;
            }
        }
        sync_filesystem(dest)?;
        for tree in plan.trees {
            tree.publish(dest)?;
        }
        crate::publish::write_file_atomic(
            &context.state_dir.join(SIGNED_BY_FILE),
            signed_by.as_bytes(),
        )?;
        if let Some(subset) = &subset {
            subset.record(&context, &packages)?;
        }
    }
    for wanted in deferred {
        place(dest, &parts, wanted)?;
    }

    let mut managed = wanted_paths.clone();
    if options.keep_removed {
        managed = union;
    } else {
        for rel in previously_managed.difference(&wanted_paths) {
            if remove_dropped(dest, rel)? {
                report.removed += 1;
            }
        }
    }
    write_managed(&context.state_dir, &managed)?;
    write_cache(dest, &packages);
    let _ = std::fs::remove_dir_all(&parts);
    report.requests = fetcher.requests();
    Ok(report)
}

/// One entry per path; the same path with two different digests is an error.
fn dedupe(mut packages: Vec<Wanted>) -> Result<Vec<Wanted>, MirrorError> {
    packages.sort_by(|a, b| a.rel.cmp(&b.rel));
    let mut out: Vec<Wanted> = Vec::with_capacity(packages.len());
    for p in packages {
        if let Some(last) = out.last()
            && last.rel == p.rel
        {
            if last.digest.algorithm() == p.digest.algorithm()
                && (last.digest != p.digest || last.size != p.size)
            {
                return Err(MirrorError::Malformed {
                    file: "package index".into(),
                    reason: format!("`{}` is listed twice with different content", p.rel),
                });
            }
            continue;
        }
        out.push(p);
    }
    Ok(out)
}

fn found_file(dest: &Path, rel: &str) -> Option<FoundFile> {
    let path = dest.join(rel);
    let meta = std::fs::symlink_metadata(&path).ok()?;
    meta.is_file().then(|| FoundFile {
        rel: rel.to_owned(),
        size: meta.len(),
        mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        path,
    })
}

/// The packages DEST lacks or holds with other content (sorted input, sorted output).
fn find_missing<'a>(dest: &Path, packages: &'a [Wanted]) -> Vec<&'a Wanted> {
    let mut lookup = CacheLookup::open(dest, CACHE_NAME, CACHE_FINGERPRINT);
    let mut to_hash = Vec::new();
    let mut missing = Vec::new();
    for wanted in packages {
        match found_file(dest, &wanted.rel) {
            Some(found) if found.size == wanted.size => {
                let cached = lookup.get(&found);
                if cached.as_deref() != Some(wanted.digest.to_string().as_bytes()) {
                    to_hash.push(wanted);
                }
            }
            _ => missing.push(wanted),
        }
    }
    let bad: Vec<&Wanted> = to_hash
        .into_par_iter()
        .filter(|w| !file_matches(&dest.join(&w.rel), w.size, &w.digest))
        .collect();
    missing.extend(bad);
    missing.sort_by(|a, b| a.rel.cmp(&b.rel));
    missing
}

fn part_name(digest: &Digest) -> String {
    format!("{}-{}.part", digest.algorithm().name(), digest.hex())
}

/// Downloads `missing` with `options.jobs` threads; all must succeed.
fn download_all(
    context: &Context<'_>,
    parts: &Path,
    missing: &[&Wanted],
    progress: &dyn Progress,
) -> Result<Vec<fetch::Fetched>, MirrorError> {
    // Identical content under two names is fetched once.
    let mut unique: Vec<&Wanted> = Vec::new();
    let mut seen = BTreeSet::new();
    for w in missing {
        if seen.insert(&w.digest) {
            unique.push(w);
        }
    }
    // The phase names the package count; the units are bytes.
    progress.start(
        &format!("downloading {} packages", unique.len()),
        unique.iter().map(|w| w.size).sum(),
    );
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Result<fetch::Fetched, FetchError>)>> = Mutex::new(Vec::new());
    let threads = context.options.jobs.clamp(1, 64).min(unique.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(w) = unique.get(i) else { break };
                    let part = parts.join(part_name(&w.digest));
                    let result = context
                        .fetcher
                        .download(&w.rel, &part, w.size, &w.digest, &|n| progress.advance(n));
                    if let Ok(mut all) = results.lock() {
                        all.push((i, result));
                    }
                }
            });
        }
    });
    progress.finish();
    let mut results = results.into_inner().unwrap_or_default();
    results.sort_by_key(|(i, _)| *i);
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for (_, result) in results {
        match result {
            Ok(f) => ok.push(f),
            Err(e) => failed.push(e),
        }
    }
    if failed.is_empty() {
        Ok(ok)
    } else {
        let count = failed.len();
        let first = failed.remove(0);
        Err(MirrorError::Packages {
            failed: count,
            wanted: unique.len(),
            first: Box::new(first),
            all: failed,
        })
    }
}

/// Creates the parent directories of `rel` under `dest`, refusing to pass through a symlink.
fn make_parents(dest: &Path, rel: &str) -> Result<PathBuf, MirrorError> {
    let mut dir = dest.to_owned();
    let components: Vec<&str> = rel.split('/').collect();
    for component in &components[..components.len().saturating_sub(1)] {
        dir.push(component);
        match std::fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(MirrorError::Io {
                    action: "create directory",
                    path: dir,
                    source: std::io::Error::other("a non-directory (or a symlink) is in the way"),
                });
            }
            Err(_) => match std::fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err("create", &dir)(e)),
            },
        }
    }
    Ok(dest.join(rel))
}

/// Moves the verified download of `wanted` to its place (atomically replacing what is there).
fn place(dest: &Path, parts: &Path, wanted: &Wanted) -> Result<(), MirrorError> {
    let part = parts.join(part_name(&wanted.digest));
    let target = make_parents(dest, &wanted.rel)?;
    let tmp = parts.join(format!(".place-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    // A link keeps the part for other names with the same content.
    if std::fs::hard_link(&part, &tmp).is_err() {
        std::fs::copy(&part, &tmp).map_err(io_err("copy", &part))?;
    }
    std::fs::rename(&tmp, &target).map_err(io_err("place", &target))
}

fn sync_filesystem(dest: &Path) -> Result<(), MirrorError> {
    let dir = File::open(dest).map_err(io_err("open", dest))?;
    rustix::fs::syncfs(&dir).map_err(|e| io_err("sync", dest)(e.into()))
}

/// Removes a dropped package; `Ok(false)` if it was already gone.
fn remove_dropped(dest: &Path, rel: &str) -> Result<bool, MirrorError> {
    if check::check_relative_path(rel).is_err() {
        return Ok(false);
    }
    // Never follow a symlink in the parents: the file must really be under DEST.
    let mut dir = dest.to_owned();
    let components: Vec<&str> = rel.split('/').collect();
    for component in &components[..components.len() - 1] {
        dir.push(component);
        match std::fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            _ => return Ok(false),
        }
    }
    let path = dest.join(rel);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_err("remove", &path)(e)),
    }
    // Empty directories left behind go too (a non-empty one stops the walk).
    let mut parent = path.parent();
    while let Some(dir) = parent {
        if dir == dest || std::fs::remove_dir(dir).is_err() {
            break;
        }
        parent = dir.parent();
    }
    Ok(true)
}

fn read_signed_by(state_dir: &Path) -> String {
    std::fs::read_to_string(state_dir.join(SIGNED_BY_FILE))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn read_managed(state_dir: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(state_dir.join(MANAGED_FILE))
        .unwrap_or_default()
        .lines()
        .filter(|l| check::check_relative_path(l).is_ok())
        .map(str::to_owned)
        .collect()
}

fn write_managed(state_dir: &Path, paths: &BTreeSet<String>) -> Result<(), MirrorError> {
    let mut text = String::new();
    for p in paths {
        text.push_str(p);
        text.push('\n');
    }
    crate::publish::write_file_atomic(&state_dir.join(MANAGED_FILE), text.as_bytes())?;
    Ok(())
}

/// Records size, mtime and digest of every package, so the next run need not rehash them.
fn write_cache(dest: &Path, packages: &[Wanted]) {
    let Ok(mut writer) = CacheWriter::create(dest, CACHE_NAME, CACHE_FINGERPRINT) else {
        return;
    };
    for wanted in packages {
        if let Some(found) = found_file(dest, &wanted.rel)
            && writer
                .push(&found, wanted.digest.to_string().as_bytes())
                .is_err()
        {
            return;
        }
    }
    // The cache only saves work: failing to write it is not an error of the mirror.
    let _ = writer.commit();
}

/// Writes `bytes` to a new file `path` (inside a staging directory).
pub(crate) fn write_new(path: &Path, bytes: &[u8]) -> Result<(), MirrorError> {
    let mut file = File::create(path).map_err(io_err("create", path))?;
    file.write_all(bytes).map_err(io_err("write", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflate_limits() {
        let limit = |compressed, open_size| {
            let l = inflate_limit(compressed, open_size);
            (l.bytes, l.why)
        };
        // A declared size, exactly; none: the ratio, at least the floor.
        assert_eq!(limit(1000, Some(5000)), (5000, InflateLimitKind::OpenSize));
        assert_eq!(limit(1000, None), (INFLATE_FLOOR, InflateLimitKind::Ratio));
        assert_eq!(limit(10 << 20, None), (500 << 20, InflateLimitKind::Ratio));
        // A declared size is believed only as far as the ratio.
        assert_eq!(limit(1000, Some(1 << 40)).1, InflateLimitKind::Ratio);
        // And nothing goes past the ceiling.
        assert_eq!(
            limit(1 << 30, None),
            (MAX_INFLATED, InflateLimitKind::Ceiling)
        );
        assert_eq!(
            limit(1 << 30, Some(3 << 30)),
            (MAX_INFLATED, InflateLimitKind::Ceiling)
        );
    }
}
