//! Snapshots of a repository, and publication of a snapshot under a stable name.
//!
//! A snapshot store is a directory (the *publish root*, served as a whole by `vrepo serve` or
//! a web server) laid out as:
//!
//! ```text
//! ROOT/.vrepo-snapshots/pool/AB/ABCDEF…       package files by sha256 (hard links)
//! ROOT/.vrepo-snapshots/snapshots/NAME/        a snapshot: the repository's tree, metadata
//!                                              copied, each package a hard link into the pool
//! ROOT/.vrepo-snapshots/snapshots/NAME.info    what and when it was taken
//! ROOT/.vrepo-snapshots/publications/AS-N/    a publication of a snapshot: hard links of
//!                                              its files, with a fresh Date in each Release
//! ROOT/stable -> .vrepo-snapshots/publications/AS-N   a published name: a relative symlink
//! ```
//!
//! Why this shape:
//!
//! - **Metadata only.** Packages are never copied: the pool holds one inode per distinct
//!   content, shared with the repository and with every snapshot that has the file, so a
//!   snapshot costs its metadata (a few MB for a large mirror) and its directory entries. The
//!   pool is content-addressed so a package that the mirror fetched again under a new inode is
//!   still stored once. Hashing is paid once per inode: a cache keyed by device, inode, size
//!   and modification time remembers digests.
//! - **Snapshots are immutable.** They are assembled under a hidden name and renamed into
//!   place; `vrepo mirror` and `vrepo index` only ever replace files by rename, never write
//!   into them, so a hard link keeps the content it had when the snapshot was taken.
//! - **A publication re-dates the Release.** apt refuses a Release older than the one it
//!   already has (protection against replayed metadata), so switching `stable` back to an
//!   older snapshot would be ignored by every client that saw the newer one. Each publication
//!   is therefore the snapshot's tree as hard links (no copy) with each `Release` given the
//!   current `Date` and signed again (`--sign`; a signed snapshot cannot be re-published
//!   without its key, as its old signature no longer matches). rpm-md has no such check and is
//!   published as it is. The previous publication's `by-hash` indexes are linked into the new
//!   one, so an apt client that read the old `InRelease` mid-switch still finds them.
//! - **Publishing is one rename.** A published name is a symlink; switching it creates the new
//!   link under a temporary name and renames it over the old one (`rename(2)` replaces a
//!   directory entry atomically), then syncs the directory. A client resolves the name once per
//!   request, so it sees the old snapshot or the new one, complete; a kill at any point leaves
//!   the old or the new link. Clients that need one view across several requests (apt reads
//!   `InRelease`, then indexes by hash) get it because both snapshots stay complete.
//! - **Deleting a published snapshot is refused**, so a published name never dangles; pool
//!   files no snapshot uses any more are removed with the snapshot.
//! - The repository lock is held while a snapshot is taken, so a mirror run never switches
//!   the repository's metadata half-way through the copy.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::publish::{PublishError, RepoLock, lock_repository, sync_dir};

/// The hidden directory of the publish root that holds the pool and the snapshots.
pub const STORE_DIR: &str = ".vrepo-snapshots";

/// A snapshot operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A snapshot or published name that cannot be used.
    #[error(
        "invalid name `{}`: use letters, digits, `.`, `_`, `-`, not starting with `.` or `-`",
        .0.escape_debug()
    )]
    BadName(String),
    /// The snapshot does not exist.
    #[error("no snapshot `{name}` in `{}`; `vrepo snapshot list` shows them", root.display())]
    NoSuchSnapshot {
        /// The snapshot.
        name: String,
        /// The publish root.
        root: PathBuf,
    },
    /// The snapshot already exists.
    #[error("snapshot `{name}` already exists in `{}`; delete it first or pick another name", root.display())]
    Exists {
        /// The snapshot.
        name: String,
        /// The publish root.
        root: PathBuf,
    },
    /// The snapshot is published and cannot be deleted.
    #[error(
        "snapshot `{name}` is published as {names}; publish another snapshot under that name first"
    )]
    Published {
        /// The snapshot.
        name: String,
        /// The names it is published as.
        names: String,
    },
    /// Something other than a published name is in the way.
    #[error("`{}` exists and is not a published name (a symlink into {STORE_DIR}); refusing to replace it", path.display())]
    NotAPublishedName {
        /// The path.
        path: PathBuf,
    },
    /// The repository and the publish root are on different file systems.
    #[error(
        "`{}` and `{}` are on different file systems; snapshots hard-link packages, so put the publish root beside the repository",
        repo.display(), root.display()
    )]
    CrossDevice {
        /// The repository.
        repo: PathBuf,
        /// The publish root.
        root: PathBuf,
    },
    /// A signed snapshot is published without a key.
    #[error(
        "the snapshot's metadata is signed: publishing re-dates its Release (apt ignores a Release older than one it has seen), so give the key with --sign"
    )]
    NeedsKey,
    /// Signing the publication failed.
    #[error(transparent)]
    Sign(#[from] crate::sign::SignError),
    /// The repository has no metadata to snapshot.
    #[error("`{}` holds no repository metadata (repodata/, dists/ or Release)", .0.display())]
    NotARepository(PathBuf),
    /// Locking the repository failed.
    #[error(transparent)]
    Lock(#[from] PublishError),
    /// A file operation failed.
    #[error("cannot {action} `{}`", path.display())]
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

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError {
    let path = path.to_owned();
    move |source| SnapshotError::Io {
        action,
        path,
        source,
    }
}

/// Checks a snapshot or published name: one plain path component.
pub fn check_name(name: &str) -> Result<(), SnapshotError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(SnapshotError::BadName(name.to_owned()))
    }
}

/// What a snapshot holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Its name.
    pub name: String,
    /// The repository it was taken of.
    pub source: String,
    /// When, seconds since the epoch.
    pub created: u64,
    /// Package files (hard links into the pool).
    pub packages: u64,
    /// Their total size (shared, not paid again).
    pub package_bytes: u64,
    /// Metadata files copied.
    pub metadata_files: u64,
    /// Their total size: what the snapshot costs on disk, besides directory entries.
    pub metadata_bytes: u64,
    /// Packages hashed this time (the others' digests were cached).
    pub hashed: u64,
    /// The names it is published as.
    pub published_as: Vec<String>,
}

impl SnapshotInfo {
    fn to_text(&self) -> String {
        format!(
            "source={}\ncreated={}\npackages={}\npackage_bytes={}\nmetadata_files={}\nmetadata_bytes={}\n",
            self.source.replace('\n', " "),
            self.created,
            self.packages,
            self.package_bytes,
            self.metadata_files,
            self.metadata_bytes
        )
    }

    fn from_text(name: &str, text: &str) -> SnapshotInfo {
        let mut info = SnapshotInfo {
            name: name.to_owned(),
            ..SnapshotInfo::default()
        };
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let number = value.parse().unwrap_or(0);
            match key {
                "source" => info.source = value.to_owned(),
                "created" => info.created = number,
                "packages" => info.packages = number,
                "package_bytes" => info.package_bytes = number,
                "metadata_files" => info.metadata_files = number,
                "metadata_bytes" => info.metadata_bytes = number,
                _ => {}
            }
        }
        info
    }
}

/// A publish root: its snapshots and published names.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    root: PathBuf,
}

fn is_package(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e == "rpm" || e == "deb" || e == "udeb")
}

/// A test hook: sleep this many milliseconds between the steps of a switch, so a test can
/// kill it at every point.
fn step_pause() {
    if let Some(ms) = std::env::var("VREPO_TEST_SWITCH_PAUSE_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

impl SnapshotStore {
    /// The store of publish root `root` (created on first use).
    pub fn new(root: impl Into<PathBuf>) -> SnapshotStore {
        SnapshotStore { root: root.into() }
    }

    fn store(&self) -> PathBuf {
        self.root.join(STORE_DIR)
    }

    fn snapshots(&self) -> PathBuf {
        self.store().join("snapshots")
    }

    fn pool(&self) -> PathBuf {
        self.store().join("pool")
    }

    fn publications(&self) -> PathBuf {
        self.store().join("publications")
    }

    /// Where snapshot `name` lives.
    pub fn snapshot_dir(&self, name: &str) -> PathBuf {
        self.snapshots().join(name)
    }

    /// Creates the store if need be and takes its lock: creating, publishing and deleting
    /// exclude each other (a delete's pool cleanup must not race a create's links).
    fn lock_store(&self) -> Result<RepoLock, SnapshotError> {
        for dir in [self.snapshots(), self.pool(), self.publications()] {
            std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        }
        let lock = lock_repository(&self.store(), true)?;
        // Every create, publish and delete runs under this lock, so a hidden entry here is
        // what a killed one left: a half-made snapshot or publication, a half-deleted one, a
        // temporary link. They go now (a half-made snapshot's links would keep pool files).
        for dir in [self.snapshots(), self.publications()] {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if entry.file_name().to_string_lossy().starts_with('.') {
                    let path = entry.path();
                    let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
                }
            }
        }
        for entry in std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.contains(".switch-") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(lock)
    }

    /// Takes snapshot `name` of the repository `repo` (a `vrepo mirror` or `vrepo index`
    /// directory), holding the repository's lock while it reads.
    pub fn create(
        &self,
        repo: &Path,
        name: &str,
        wait_for_lock: bool,
    ) -> Result<SnapshotInfo, SnapshotError> {
        check_name(name)?;
        let has_metadata = ["repodata", "dists", "Release", "InRelease"]
            .iter()
            .any(|m| repo.join(m).exists());
        if !has_metadata {
            return Err(SnapshotError::NotARepository(repo.to_owned()));
        }
        let _store_lock = self.lock_store()?;
        let repo_dev = std::fs::metadata(repo).map_err(io_err("read", repo))?.dev();
        let root_dev = std::fs::metadata(&self.root)
            .map_err(io_err("read", &self.root))?
            .dev();
        if repo_dev != root_dev {
            return Err(SnapshotError::CrossDevice {
                repo: repo.to_owned(),
                root: self.root.clone(),
            });
        }
        let final_dir = self.snapshot_dir(name);
        if std::fs::symlink_metadata(&final_dir).is_ok() {
            return Err(SnapshotError::Exists {
                name: name.to_owned(),
                root: self.root.clone(),
            });
        }
        let _lock = lock_repository(repo, wait_for_lock)?;
        let staging = self
            .snapshots()
            .join(format!(".{name}.tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        let mut cache = DigestCache::open(&self.store().join("digests"));
        let result = self.fill(repo, &staging, &mut cache);
        let mut info = match result {
            Ok(info) => info,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(e);
            }
        };
        cache.save();
        info.name = name.to_owned();
        info.source = std::fs::canonicalize(repo)
            .unwrap_or_else(|_| repo.to_owned())
            .display()
            .to_string();
        info.created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let info_path = self.snapshots().join(format!("{name}.info"));
        crate::publish::write_file_atomic(&info_path, info.to_text().as_bytes())?;
        sync_tree(&staging)?;
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            &staging,
            rustix::fs::CWD,
            &final_dir,
            rustix::fs::RenameFlags::NOREPLACE,
        )
        .map_err(|e| {
            let _ = std::fs::remove_dir_all(&staging);
            io_err("create", &final_dir)(e.into())
        })?;
        sync_dir(&self.snapshots())?;
        Ok(info)
    }

    /// Copies metadata and links packages of `repo` into `staging`.
    fn fill(
        &self,
        repo: &Path,
        staging: &Path,
        cache: &mut DigestCache,
    ) -> Result<SnapshotInfo, SnapshotError> {
        let mut info = SnapshotInfo::default();
        // Metadata files that are hard links of each other in the repository (by-hash names)
        // stay so: a copy each would multiply the snapshot's cost.
        let mut copied: BTreeMap<(u64, u64), PathBuf> = BTreeMap::new();
        std::fs::create_dir_all(staging).map_err(io_err("create", staging))?;
        let walker = walkdir::WalkDir::new(repo)
            .min_depth(1)
            .sort_by_file_name()
            .into_iter()
            // Hidden entries are state (`.vrepo/`) and staging directories, never content.
            .filter_entry(|e| !e.file_name().to_string_lossy().starts_with('.'));
        for entry in walker {
            let entry = entry.map_err(|e| {
                let path = e.path().unwrap_or(repo).to_owned();
                SnapshotError::Io {
                    action: "read",
                    path,
                    source: e
                        .into_io_error()
                        .unwrap_or_else(|| std::io::Error::other("walk failed")),
                }
            })?;
            let rel = entry.path().strip_prefix(repo).unwrap_or(entry.path());
            let target = staging.join(rel);
            let kind = entry.file_type();
            if kind.is_dir() {
                std::fs::create_dir_all(&target).map_err(io_err("create", &target))?;
            } else if kind.is_symlink() {
                // Kept as they are: a symlink inside the tree means the same in the snapshot.
                let link =
                    std::fs::read_link(entry.path()).map_err(io_err("read", entry.path()))?;
                std::os::unix::fs::symlink(&link, &target).map_err(io_err("create", &target))?;
            } else if kind.is_file() {
                let meta = entry.metadata().map_err(|e| SnapshotError::Io {
                    action: "read",
                    path: entry.path().to_owned(),
                    source: e.into(),
                })?;
                if is_package(entry.path()) {
                    let (pooled, hashed) = self.pool_file(entry.path(), &meta, cache)?;
                    info.hashed += u64::from(hashed);
                    std::fs::hard_link(&pooled, &target).map_err(io_err("link", &target))?;
                    info.packages += 1;
                    info.package_bytes += meta.len();
                } else if let Some(first) = copied.get(&(meta.dev(), meta.ino())) {
                    std::fs::hard_link(first, &target).map_err(io_err("link", &target))?;
                } else {
                    copy_file(entry.path(), &target)?;
                    copied.insert((meta.dev(), meta.ino()), target.clone());
                    info.metadata_files += 1;
                    info.metadata_bytes += meta.len();
                }
            }
        }
        Ok(info)
    }

    /// The pool file of `path`'s content, linked in if new; `true` if it had to be hashed.
    fn pool_file(
        &self,
        path: &Path,
        meta: &std::fs::Metadata,
        cache: &mut DigestCache,
    ) -> Result<(PathBuf, bool), SnapshotError> {
        let key = (
            meta.dev(),
            meta.ino(),
            meta.len(),
            meta.mtime(),
            meta.mtime_nsec(),
        );
        let (hex, hashed) = match cache.get(key) {
            Some(hex) => (hex, false),
            None => {
                let mut file = File::open(path).map_err(io_err("read", path))?;
                let mut hasher = Sha256::new();
                let mut buffer = vec![0; 1 << 16];
                loop {
                    let n = file.read(&mut buffer).map_err(io_err("read", path))?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buffer[..n]);
                }
                let hex = hex::encode(hasher.finalize());
                cache.insert(key, hex.clone());
                (hex, true)
            }
        };
        let dir = self.pool().join(&hex[..2]);
        std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        let pooled = dir.join(&hex);
        if std::fs::symlink_metadata(&pooled).is_err() {
            match std::fs::hard_link(path, &pooled) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err("link", &pooled)(e)),
            }
        }
        Ok((pooled, hashed))
    }

    /// Every snapshot, by name, with the names it is published as.
    pub fn list(&self) -> Result<Vec<SnapshotInfo>, SnapshotError> {
        let published = self.published()?;
        let mut out = Vec::new();
        let dir = self.snapshots();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io_err("read", &dir)(e)),
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if check_name(&name).is_err() || name.ends_with(".info") || !entry.path().is_dir() {
                continue;
            }
            let text =
                std::fs::read_to_string(dir.join(format!("{name}.info"))).unwrap_or_default();
            let mut info = SnapshotInfo::from_text(&name, &text);
            info.published_as = published
                .iter()
                .filter(|(_, target)| **target == name)
                .map(|(n, _)| n.clone())
                .collect();
            out.push(info);
        }
        out.sort_by(|a, b| a.created.cmp(&b.created).then(a.name.cmp(&b.name)));
        Ok(out)
    }

    /// Published names and the snapshot each points at.
    pub fn published(&self) -> Result<BTreeMap<String, String>, SnapshotError> {
        let mut out = BTreeMap::new();
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io_err("read", &self.root)(e)),
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if check_name(&name).is_err() {
                continue;
            }
            if let Some(snapshot) = published_target(&entry.path()) {
                out.insert(name, snapshot);
            }
        }
        Ok(out)
    }

    /// Publishes snapshot `name` as `as_name` (`ROOT/AS_NAME`), replacing what that name
    /// showed in one rename. apt Releases are re-dated and, with `signer`, signed again.
    pub fn publish(
        &self,
        name: &str,
        as_name: &str,
        signer: Option<&crate::sign::Signer>,
    ) -> Result<(), SnapshotError> {
        check_name(name)?;
        check_name(as_name)?;
        let snapshot = self.snapshot_dir(name);
        if !snapshot.is_dir() {
            return Err(SnapshotError::NoSuchSnapshot {
                name: name.to_owned(),
                root: self.root.clone(),
            });
        }
        let _store_lock = self.lock_store()?;
        let link = self.root.join(as_name);
        let previous = match std::fs::symlink_metadata(&link) {
            Ok(_) => match published_target(&link) {
                Some(_) => std::fs::read_link(&link).ok().map(|t| self.root.join(t)),
                None => return Err(SnapshotError::NotAPublishedName { path: link }),
            },
            Err(_) => None,
        };
        let prefix = format!(".{as_name}.switch-");
        let staged = self
            .publications()
            .join(format!("{prefix}{}", std::process::id()));
        let stamp = std::time::SystemTime::now();
        let result = self.stage_publication(&snapshot, &staged, previous.as_deref(), stamp, signer);
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&staged);
            return Err(e);
        }
        crate::publish::write_file_atomic(&staged.join(".snapshot"), name.as_bytes())?;
        let nanos = stamp
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let publication_name = format!("{as_name}-{nanos}");
        let publication = self.publications().join(&publication_name);
        sync_tree(&staged)?;
        std::fs::rename(&staged, &publication).map_err(|e| {
            let _ = std::fs::remove_dir_all(&staged);
            io_err("create", &publication)(e)
        })?;
        sync_dir(&self.publications())?;
        step_pause();

        let tmp = self.root.join(format!("{prefix}{}", std::process::id()));
        let target = Path::new(STORE_DIR)
            .join("publications")
            .join(&publication_name);
        std::os::unix::fs::symlink(&target, &tmp).map_err(io_err("create", &tmp))?;
        step_pause();
        std::fs::rename(&tmp, &link).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io_err("publish", &link)(e)
        })?;
        step_pause();
        sync_dir(&self.root)?;
        self.collect_publications();
        Ok(())
    }

    /// The publication of `snapshot` in `staged`: hard links, Releases re-dated and signed.
    fn stage_publication(
        &self,
        snapshot: &Path,
        staged: &Path,
        previous: Option<&Path>,
        stamp: std::time::SystemTime,
        signer: Option<&crate::sign::Signer>,
    ) -> Result<(), SnapshotError> {
        let mut releases = Vec::new();
        let mut signed = false;
        for entry in walkdir::WalkDir::new(snapshot).sort_by_file_name() {
            let entry = entry.map_err(|e| SnapshotError::Io {
                action: "read",
                path: snapshot.to_owned(),
                source: e
                    .into_io_error()
                    .unwrap_or_else(|| std::io::Error::other("walk failed")),
            })?;
            let rel = entry.path().strip_prefix(snapshot).unwrap_or(entry.path());
            let target = staged.join(rel);
            let kind = entry.file_type();
            let file_name = entry.file_name().to_string_lossy();
            let depth = rel.components().count();
            // The root files of a flat repository or of `dists/SUITE`.
            let is_root = depth == 1
                || (depth == 3
                    && rel
                        .components()
                        .next()
                        .is_some_and(|c| c.as_os_str() == "dists"));
            if kind.is_dir() {
                std::fs::create_dir_all(&target).map_err(io_err("create", &target))?;
            } else if kind.is_symlink() {
                let to = std::fs::read_link(entry.path()).map_err(io_err("read", entry.path()))?;
                std::os::unix::fs::symlink(&to, &target).map_err(io_err("create", &target))?;
            } else if is_root && matches!(file_name.as_ref(), "InRelease" | "Release.gpg") {
                // Made again below for the re-dated Release.
                signed = true;
            } else if is_root && file_name == "Release" {
                let text =
                    std::fs::read_to_string(entry.path()).map_err(io_err("read", entry.path()))?;
                let text = redate(&text, stamp);
                let mut file = File::create(&target).map_err(io_err("create", &target))?;
                file.write_all(text.as_bytes())
                    .map_err(io_err("write", &target))?;
                releases.push((target.parent().unwrap_or(staged).to_owned(), text));
            } else {
                if file_name == "repomd.xml.asc" {
                    signed = true;
                }
                std::fs::hard_link(entry.path(), &target).map_err(io_err("link", &target))?;
            }
        }
        if signed && signer.is_none() && !releases.is_empty() {
            return Err(SnapshotError::NeedsKey);
        }
        for (dir, text) in &releases {
            if let Some(signer) = signer {
                signer.sign_release(dir)?;
            }
            if let Some(previous) = previous
                && let Ok(rel) = dir.strip_prefix(staged)
            {
                // Best effort: a client mid-switch then finds the indexes it read of.
                let _ = crate::by_hash::link_by_hash(dir, &previous.join(rel), text.as_bytes());
            }
        }
        Ok(())
    }

    /// Removes publications no published name points at, but the newest unused one of each
    /// name (a client that resolved the name just before a switch may still be reading it).
    fn collect_publications(&self) {
        let in_use: Vec<PathBuf> = std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .filter_map(|t| t.file_name().map(|n| n.to_owned().into()))
            .collect();
        let mut by_name: BTreeMap<String, Vec<(u128, PathBuf)>> = BTreeMap::new();
        for entry in std::fs::read_dir(self.publications())
            .into_iter()
            .flatten()
            .flatten()
        {
            let file_name = entry.file_name().to_string_lossy().into_owned();
            if file_name.starts_with('.') || in_use.iter().any(|u| *u == Path::new(&file_name)) {
                continue;
            }
            if let Some((as_name, nanos)) = file_name.rsplit_once('-')
                && let Ok(nanos) = nanos.parse::<u128>()
            {
                by_name
                    .entry(as_name.to_owned())
                    .or_default()
                    .push((nanos, entry.path()));
            }
        }
        for (_, mut unused) in by_name {
            unused.sort();
            unused.pop();
            for (_, path) in unused {
                let _ = std::fs::remove_dir_all(path);
            }
        }
    }

    /// Removes published name `as_name` (the snapshot stays).
    pub fn unpublish(&self, as_name: &str) -> Result<(), SnapshotError> {
        check_name(as_name)?;
        let link = self.root.join(as_name);
        if published_target(&link).is_none() {
            return Err(SnapshotError::NotAPublishedName { path: link });
        }
        std::fs::remove_file(&link).map_err(io_err("remove", &link))?;
        sync_dir(&self.root)?;
        Ok(())
    }

    /// Deletes snapshot `name` (refused while it is published) and the pool files no other
    /// snapshot uses.
    pub fn delete(&self, name: &str) -> Result<(), SnapshotError> {
        check_name(name)?;
        let dir = self.snapshot_dir(name);
        if !dir.is_dir() {
            return Err(SnapshotError::NoSuchSnapshot {
                name: name.to_owned(),
                root: self.root.clone(),
            });
        }
        let _store_lock = self.lock_store()?;
        let names: Vec<String> = self
            .published()?
            .into_iter()
            .filter(|(_, target)| target == name)
            .map(|(n, _)| format!("`{n}`"))
            .collect();
        if !names.is_empty() {
            return Err(SnapshotError::Published {
                name: name.to_owned(),
                names: names.join(", "),
            });
        }
        // Out of sight first, so no half-deleted snapshot is ever visible under its name.
        let doomed = self
            .snapshots()
            .join(format!(".{name}.deleting-{}", std::process::id()));
        std::fs::rename(&dir, &doomed).map_err(io_err("delete", &dir))?;
        sync_dir(&self.snapshots())?;
        let _ = std::fs::remove_file(self.snapshots().join(format!("{name}.info")));
        std::fs::remove_dir_all(&doomed).map_err(io_err("delete", &doomed))?;
        // Its earlier publications (no name points at them: checked above) go too.
        for entry in std::fs::read_dir(self.publications())
            .into_iter()
            .flatten()
            .flatten()
        {
            let of = std::fs::read_to_string(entry.path().join(".snapshot")).unwrap_or_default();
            if of.trim() == name {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        self.collect_pool()
    }

    /// Removes pool files that only the pool still links (no snapshot, no repository).
    fn collect_pool(&self) -> Result<(), SnapshotError> {
        let pool = self.pool();
        for entry in walkdir::WalkDir::new(&pool).min_depth(2).max_depth(2) {
            let Ok(entry) = entry else { continue };
            if let Ok(meta) = entry.metadata()
                && meta.is_file()
                && meta.nlink() == 1
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(())
    }
}

/// The snapshot a published name points at, if it is one of ours: the link leads to
/// `.vrepo-snapshots/publications/AS-N`, whose hidden `.snapshot` names the snapshot.
fn published_target(link: &Path) -> Option<String> {
    let target = std::fs::read_link(link).ok()?;
    let mut parts = target.components();
    let store = parts.next()?.as_os_str().to_str()?.to_owned();
    let publications = parts.next()?.as_os_str().to_str()?.to_owned();
    parts.next()?;
    if store != STORE_DIR || publications != "publications" || parts.next().is_some() {
        return None;
    }
    let dir = link.parent()?.join(&target);
    let name = std::fs::read_to_string(dir.join(".snapshot")).ok()?;
    let name = name.trim().to_owned();
    check_name(&name).is_ok().then_some(name)
}

/// `text` (a Release) with its `Date:` set to `stamp`.
fn redate(text: &str, stamp: std::time::SystemTime) -> String {
    let date = format!("Date: {}", crate::apt::format_rfc2822_utc(stamp));
    let mut out = String::with_capacity(text.len() + 40);
    let mut replaced = false;
    for line in text.lines() {
        if !replaced && line.starts_with("Date:") {
            out.push_str(&date);
            replaced = true;
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    if !replaced {
        out.insert_str(0, &format!("{date}\n"));
    }
    out
}

fn copy_file(from: &Path, to: &Path) -> Result<(), SnapshotError> {
    std::fs::copy(from, to).map_err(io_err("copy", from))?;
    Ok(())
}

fn sync_tree(dir: &Path) -> Result<(), SnapshotError> {
    for entry in walkdir::WalkDir::new(dir).contents_first(true) {
        let Ok(entry) = entry else { continue };
        if entry.file_type().is_file() || entry.file_type().is_dir() {
            File::open(entry.path())
                .and_then(|f| f.sync_all())
                .map_err(io_err("sync", entry.path()))?;
        }
    }
    Ok(())
}

type DigestKey = (u64, u64, u64, i64, i64);

/// sha256 of package files by device, inode, size and modification time: a file is hashed
/// once, however many snapshots link it.
struct DigestCache {
    path: PathBuf,
    entries: BTreeMap<DigestKey, String>,
    changed: bool,
}

impl DigestCache {
    fn open(path: &Path) -> DigestCache {
        let mut entries = BTreeMap::new();
        for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            if let [dev, ino, size, sec, nsec, hex] = fields[..]
                && hex.len() == 64
                && hex.bytes().all(|b| b.is_ascii_hexdigit())
                && let (Ok(dev), Ok(ino), Ok(size), Ok(sec), Ok(nsec)) = (
                    dev.parse(),
                    ino.parse(),
                    size.parse(),
                    sec.parse(),
                    nsec.parse(),
                )
            {
                entries.insert((dev, ino, size, sec, nsec), hex.to_owned());
            }
        }
        DigestCache {
            path: path.to_owned(),
            entries,
            changed: false,
        }
    }

    fn get(&self, key: DigestKey) -> Option<String> {
        self.entries.get(&key).cloned()
    }

    fn insert(&mut self, key: DigestKey, hex: String) {
        self.entries.insert(key, hex);
        self.changed = true;
    }

    /// Only a cache: a failure to write it costs rehashing next time, nothing else.
    fn save(&self) {
        if !self.changed {
            return;
        }
        let mut text = String::new();
        for ((dev, ino, size, sec, nsec), hex) in &self.entries {
            text.push_str(&format!("{dev} {ino} {size} {sec} {nsec} {hex}\n"));
        }
        let tmp = self
            .path
            .with_extension(format!("tmp-{}", std::process::id()));
        let written = File::create(&tmp).and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            f.sync_all()
        });
        if written.is_ok() {
            let _ = std::fs::rename(&tmp, &self.path);
        } else {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_plain_component() {
        for good in ["stable", "daily-2026-12-04", "A", "v1.2_3"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".hidden",
            "-x",
            "a/b",
            "..",
            "a b",
            "a\nb",
            ".vrepo-snapshots",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn redating_replaces_only_the_date() {
        let stamp = std::time::UNIX_EPOCH + std::time::Duration::from_secs(86_400);
        let text = "Suite: stable\nDate: Thu, 01 Jan 1970 00:00:00 UTC\nSHA256:\n abc 1 x\n";
        let out = redate(text, stamp);
        assert!(
            out.starts_with("Suite: stable\nDate: Fri, 02 Jan 1970"),
            "{out}"
        );
        assert!(out.ends_with("SHA256:\n abc 1 x\n"), "{out}");
        assert!(redate("Suite: s\n", stamp).starts_with("Date: Fri, 02 Jan 1970"));
    }
}
