//! `vserver --all unify`: identical packaged files of all guests stored once, on a stock kernel.
//!
//! util-vserver's `vhashify` hard-linked identical files across guests and needed a kernel patch
//! (immutable-unlink) so that no guest could write through the link into another. Here the file
//! system shares *extents* instead (`FIDEDUPERANGE`, xfs with reflink, btrfs): every file keeps
//! its own inode, owner and mode, and a write by any guest copies on write. The kernel compares
//! the bytes before sharing, so a file a guest changed since we looked is simply left alone.
//!
//! Candidates come from the trusted databases, not from reading every file: regular packaged
//! files that are not configuration (`%config`, conffiles) nor `%ghost`, whose size, mode and
//! owner are still the recorded ones, grouped by recorded digest and size per file system. One
//! file per group is read and hashed, to pick a source that matches the database; every other
//! member is then deduplicated against it by the kernel. On a file system that cannot share
//! extents (ext4), nothing changes: the report says what unification would save.
//!
//! The package state of each guest (`PKGDIR/G`: dpkg's `info/` files, apt's lists and caches,
//! the copies of our own hook and plugin) is mostly the same bytes in every guest of a
//! distribution too. Those files have no trusted digest, and need none: they are grouped by
//! their path below `PKGDIR/G` and their size, the first one is the source, and the kernel's
//! byte-for-byte compare decides which others share its extents. They are reached through the
//! safe-path layer (regular files only, no link followed), like the guests' files; the rpm
//! database and dpkg's `status`, which change with every operation, are left out.
//!
//! The content index (`PKGDIR/.unify/index`, host-only) remembers the inodes already shared
//! (device, inode, size, time, digest); a second run only asks the kernel about files that are
//! new or changed since. A file whose extent map (`FIEMAP`) is its source's already holds the
//! same bytes and is not asked about either: clones made with reflinks cost no reading. The
//! index is written at the end (temporary name, rename): a run that is killed leaves every file
//! shared or untouched, and the next run redoes what it did not record.
//!
//! Every file costs the file system one remapping whatever its size, and most packaged files
//! are small: [`UnifyOptions::min_size`] leaves those out, for most of the saving in a fraction
//! of the time; the groups that save the most go first either way.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use vserver_sandbox::{Dedupe, FileKind, GuestRoot};

use crate::config::{PackageManagement, load_guest};
use crate::error::{Error, Result};
use crate::roots::HostRoots;
use crate::verify::check::{Names, digest_of, full_mode};
use crate::verify::expected::{Algo, Expected, checks};

/// Threads at work at once, scanning and deduplicating: both wait on the disk more than on the
/// processor.
const IO_THREADS: usize = 8;

/// How to unify.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnifyOptions {
    /// Only report what would be shared.
    pub dry_run: bool,
    /// Leave out files smaller than this many bytes. Every file costs the file system one
    /// remapping, whatever its size: most of the saving lies in the few large files.
    pub min_size: u64,
}

/// What a unification did (or, without shared extents, would do).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UnifyReport {
    /// Guests whose files were considered.
    pub guests: usize,
    /// Guests left out, with the reason (internal package management, no packages).
    pub skipped_guests: Vec<String>,
    /// Packaged files that qualified (unchanged, not configuration).
    pub candidates: u64,
    /// Package-state files considered (dpkg's `info/`, apt's lists and caches, hook and plugin
    /// copies).
    pub state_files: u64,
    /// Packaged files left out because their size, mode or owner changed.
    pub changed: u64,
    /// Files left out because they are smaller than the minimum size asked for.
    pub below_min_size: u64,
    /// Groups of identical files (two or more inodes).
    pub groups: u64,
    /// Files whose extents are now shared with their group's source.
    pub shared_files: u64,
    /// Bytes of those files.
    pub shared_bytes: u64,
    /// Files already sharing their source's extents, as the index knew or their extent maps
    /// show (not asked again).
    pub known_files: u64,
    /// Files the kernel found different from the source (changed since the database said).
    pub differed: u64,
    /// Bytes that sharing would save where the file system cannot share (its total).
    pub possible_bytes: u64,
    /// Whether the file system shares extents (`None`: nothing was tried).
    pub supported: Option<bool>,
    /// What to know about the result (the file system's limits).
    pub note: Option<String>,
    /// Seconds it took.
    pub seconds: f64,
    /// Of those, reading the databases and looking at the candidates.
    pub scan_seconds: f64,
}

/// One candidate file.
struct Candidate {
    guest: usize,
    /// In the guest's package state rather than its root.
    state: bool,
    path: PathBuf,
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
}

/// The content index: inodes known to share their extents with their group's source.
type Index = HashSet<IndexKey>;

fn index_path(roots: &HostRoots) -> PathBuf {
    roots.pkgdir.join(".unify").join("index")
}

fn read_index(roots: &HostRoots) -> Index {
    let text = fs_err::read_to_string(index_path(roots)).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split(' ').collect();
            let [dev, ino, size, mtime, digest] = words.as_slice() else {
                return None;
            };
            Some((
                dev.parse().ok()?,
                ino.parse().ok()?,
                size.parse().ok()?,
                mtime.parse().ok()?,
                (*digest).to_owned(),
            ))
        })
        .collect()
}

fn write_index(roots: &HostRoots, index: &Index) -> Result<()> {
    let path = index_path(roots);
    let dir = roots.pkgdir.join(".unify");
    fs_err::create_dir_all(&dir).map_err(Error::io("create", &dir))?;
    let temp = dir.join(".index.new");
    let mut file = fs_err::File::create(&temp).map_err(Error::io("write", &temp))?;
    let mut text = String::new();
    for (dev, ino, size, mtime, digest) in index {
        text.push_str(&format!("{dev} {ino} {size} {mtime} {digest}\n"));
    }
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(Error::io("write", &temp))?;
    fs_err::rename(&temp, &path).map_err(Error::io("rename into", &path))
}

/// Directories of `PKGDIR/G` whose files are unified by path and size (see the module
/// documentation).
const STATE_TREES: &[&str] = &[
    "dpkg/state/info",
    "dpkg/state/triggers",
    "apt/hook",
    "apt/state/lists",
    "apt/cache",
    "rpm/plugins",
];

/// How deep a walk of a state tree goes.
const STATE_DEPTH: usize = 8;

/// What makes files one group: recorded digest (or package-state path), size and device.
type GroupKey = (String, u64, u64);

/// The group key of a package-state file: its path below `PKGDIR/G`, marked so that it never
/// equals a digest.
fn state_key(path: &Path) -> String {
    format!("state:{}", path.display())
}

/// What one guest contributes: its root and package state, and its candidates, each with its
/// group key and the digest algorithm that checks the group's source (`None`: the kernel's
/// compare is the only check, for package-state files).
struct GuestScan {
    root: GuestRoot,
    state: Option<GuestRoot>,
    candidates: Vec<(GroupKey, Option<Algo>, Candidate)>,
    changed: u64,
    below_min_size: u64,
}

/// Adds the regular files below `dir` of the package state `state` to `scan`.
fn scan_state_tree(
    state: &GuestRoot,
    dir: &Path,
    depth: usize,
    min_size: u64,
    scan: &mut GuestScan,
) {
    if depth > STATE_DEPTH {
        return;
    }
    let Ok(entries) = state.read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = dir.join(&entry.name);
        match entry.kind {
            FileKind::Dir => scan_state_tree(state, &path, depth + 1, min_size, scan),
            FileKind::File => {
                let Ok(info) = state.symlink_metadata(&path) else {
                    continue;
                };
                if info.kind != FileKind::File || info.size == 0 {
                    continue;
                }
                if info.size < min_size {
                    scan.below_min_size += 1;
                    continue;
                }
                scan.candidates.push((
                    (state_key(&path), info.size, info.dev),
                    None,
                    Candidate {
                        guest: 0,
                        state: true,
                        path,
                        dev: info.dev,
                        ino: info.ino,
                        size: info.size,
                        mtime: info.mtime,
                    },
                ));
            }
            _ => {}
        }
    }
}

/// The candidates of guest `name` (see the module documentation); `Ok(None)` with a reason
/// when the guest has none to offer.
fn scan_guest(
    roots: &HostRoots,
    name: &str,
    min_size: u64,
) -> Result<std::result::Result<GuestScan, String>> {
    let config = load_guest(roots, name)?;
    if config.package_management != PackageManagement::External {
        return Ok(Err(format!("{name}: package management is not external")));
    }
    let files = match config.family.as_str() {
        "rpm" => crate::verify::rpm_files(roots, &config)?.0,
        "deb" => crate::verify::deb_files(roots, &config)?,
        _ => return Ok(Err(format!("{name}: no packages"))),
    };
    let root = GuestRoot::open(&config.root).map_err(|source| Error::Guest {
        guest: name.to_owned(),
        source,
    })?;
    let names_table = Names::of(&root);
    let mut scan = GuestScan {
        root,
        state: vserver_pkgmgmt::PkgLayout::new(&roots.pkgdir, name)
            .open_state()
            .ok(),
        candidates: Vec::new(),
        changed: 0,
        below_min_size: 0,
    };
    if let Some(state) = scan.state.as_ref().and_then(|s| s.try_clone().ok()) {
        for tree in STATE_TREES {
            scan_state_tree(&state, &Path::new("/").join(tree), 0, min_size, &mut scan);
        }
    }
    // Looking at each file waits on the disk for its inode: many at once.
    let looks: Vec<Look> = {
        use rayon::prelude::*;
        files
            .par_iter()
            .map(|expected| look_at(&scan.root, &names_table, expected, min_size))
            .collect()
    };
    for look in looks {
        match look {
            Look::Candidate(candidate) => scan.candidates.push(candidate),
            Look::Changed => scan.changed += 1,
            Look::Small => scan.below_min_size += 1,
            Look::Out => {}
        }
    }
    Ok(Ok(scan))
}

/// What one packaged file is to unification.
enum Look {
    Candidate((GroupKey, Option<Algo>, Candidate)),
    /// Its size, mode or owner is not the recorded one.
    Changed,
    /// Smaller than the minimum size asked for.
    Small,
    /// Not a candidate at all (configuration, missing, not a regular file).
    Out,
}

/// Looks at the packaged file `expected` in the guest `root`.
fn look_at(root: &GuestRoot, names: &Names, expected: &Expected, min_size: u64) -> Look {
    let Some((algo, digest)) = qualifies(expected) else {
        return Look::Out;
    };
    // Where the database records the size (rpm), a small file is left out unseen.
    if expected.checks & checks::SIZE != 0 && expected.size < min_size {
        return Look::Small;
    }
    let Ok(info) = root.symlink_metadata(&expected.path) else {
        return Look::Out;
    };
    if info.size < min_size {
        return Look::Small;
    }
    let unchanged = info.kind == FileKind::File
        && (expected.checks & checks::SIZE == 0 || info.size == expected.size)
        && (expected.mode == 0 || full_mode(&info) == expected.mode)
        && (expected.user.is_empty() || Names::matches(&names.users, info.uid, &expected.user))
        && (expected.group.is_empty() || Names::matches(&names.groups, info.gid, &expected.group));
    if !unchanged {
        return Look::Changed;
    }
    Look::Candidate((
        (digest, info.size, info.dev),
        Some(algo),
        Candidate {
            guest: 0,
            state: false,
            path: expected.path.clone(),
            dev: info.dev,
            ino: info.ino,
            size: info.size,
            mtime: info.mtime,
        },
    ))
}

/// The two trees of one guest that hold candidates.
struct GuestTrees {
    root: GuestRoot,
    state: Option<GuestRoot>,
}

/// What one group of identical files gave.
#[derive(Default)]
struct GroupOutcome {
    shared_files: u64,
    shared_bytes: u64,
    known_files: u64,
    differed: u64,
    possible_bytes: u64,
    unsupported: bool,
    supported: bool,
    indexed: Vec<IndexKey>,
}

type IndexKey = (u64, u64, u64, i64, String);

/// Shares the extents of one group's members with its source.
fn unify_group(
    trees: &[GuestTrees],
    index: &Index,
    digest: &str,
    algo: Option<Algo>,
    size: u64,
    members: &[Candidate],
) -> GroupOutcome {
    let tree = |c: &Candidate| -> Option<&GuestRoot> {
        let guest = &trees[c.guest];
        if c.state {
            guest.state.as_ref()
        } else {
            Some(&guest.root)
        }
    };
    let mut outcome = GroupOutcome::default();
    let key = |c: &Candidate| (c.dev, c.ino, c.size, c.mtime, digest.to_owned());
    if members.iter().all(|c| index.contains(&key(c))) {
        outcome.known_files = members.len() as u64 - 1;
        outcome.indexed = members.iter().map(key).collect();
        return outcome;
    }
    // The source: the first member whose content is the database's (a package-state file
    // has no recorded digest: the first one).
    let Some(source) = members.iter().find(|c| match algo {
        Some(algo) => tree(c).and_then(|t| digest_of(t, &c.path, algo)).as_deref() == Some(digest),
        None => tree(c).is_some(),
    }) else {
        return outcome;
    };
    let Some(Ok(source_file)) = tree(source).map(|t| t.open_file(&source.path)) else {
        return outcome;
    };
    outcome.indexed.push(key(source));
    // A member whose extent map is the source's holds its bytes already (clones made with
    // reflinks, an index lost): no need to have the kernel read and compare it.
    let source_extents = vserver_sandbox::shared_extents(&source_file).ok().flatten();
    let mut batch: Vec<(&Candidate, std::fs::File)> = Vec::new();
    for member in members.iter().filter(|m| m.ino != source.ino) {
        if index.contains(&key(member)) && index.contains(&key(source)) {
            outcome.known_files += 1;
            outcome.indexed.push(key(member));
            continue;
        }
        let Some(Ok(file)) = tree(member).map(|t| t.open_file(&member.path)) else {
            continue;
        };
        if source_extents.is_some()
            && vserver_sandbox::shared_extents(&file).ok().flatten() == source_extents
        {
            outcome.known_files += 1;
            outcome.supported = true;
            outcome.indexed.push(key(member));
            continue;
        }
        batch.push((member, file));
    }
    for batch in batch.chunks(vserver_sandbox::MAX_DESTINATIONS) {
        let files: Vec<&std::fs::File> = batch.iter().map(|(_, f)| f).collect();
        let results = match vserver_sandbox::dedupe_files(&source_file, &files, size) {
            Ok(results) => results,
            Err(error)
                if matches!(
                    error.raw_os_error(),
                    Some(libc_errno::EOPNOTSUPP | libc_errno::EINVAL | libc_errno::ENOTTY)
                ) =>
            {
                outcome.unsupported = true;
                outcome.possible_bytes = size * (members.len() as u64 - 1);
                outcome.indexed.clear();
                return outcome;
            }
            Err(_) => {
                if algo.is_some() {
                    outcome.differed += batch.len() as u64;
                }
                continue;
            }
        };
        for ((member, _), result) in batch.iter().zip(results) {
            match result {
                Ok(Dedupe::Shared) => {
                    outcome.shared_files += 1;
                    outcome.shared_bytes += size;
                    outcome.supported = true;
                    outcome.indexed.push(key(member));
                }
                // A package-state file of the same name and size but other bytes is simply
                // another file; only a packaged file that differs from its source changed.
                Ok(Dedupe::Differs) | Err(_) if algo.is_some() => outcome.differed += 1,
                Ok(Dedupe::Differs) | Err(_) => {}
            }
        }
    }
    outcome
}

/// Unifies the files of the guests `names` (see the module documentation and
/// [`UnifyOptions`]). Guests are scanned, and groups unified, in parallel; the groups that save
/// the most go first, so that a run cut short has saved the most it could.
pub fn unify(roots: &HostRoots, names: &[String], options: &UnifyOptions) -> Result<UnifyReport> {
    // Scanning waits on the disk for inodes, and the kernel reads every member to compare it:
    // the work waits on the disk more than on the processor, so more requests in flight than
    // there are cores.
    match rayon::ThreadPoolBuilder::new()
        .num_threads(IO_THREADS)
        .build()
    {
        Ok(pool) => pool.install(|| unify_in_pool(roots, names, options)),
        Err(_) => unify_in_pool(roots, names, options),
    }
}

fn unify_in_pool(
    roots: &HostRoots,
    names: &[String],
    options: &UnifyOptions,
) -> Result<UnifyReport> {
    use rayon::prelude::*;
    let started = Instant::now();
    let mut report = UnifyReport::default();
    let scans: Vec<Result<std::result::Result<GuestScan, String>>> = names
        .par_iter()
        .map(|name| scan_guest(roots, name, options.min_size))
        .collect();
    let mut trees = Vec::new();
    // (digest or package-state path, size, device) → members
    let mut groups: BTreeMap<GroupKey, (Option<Algo>, Vec<Candidate>)> = BTreeMap::new();
    for scan in scans {
        let scan = match scan? {
            Ok(scan) => scan,
            Err(reason) => {
                report.skipped_guests.push(reason);
                continue;
            }
        };
        let index = trees.len();
        report.changed += scan.changed;
        report.below_min_size += scan.below_min_size;
        for (key, algo, mut candidate) in scan.candidates {
            if candidate.state {
                report.state_files += 1;
            } else {
                report.candidates += 1;
            }
            candidate.guest = index;
            groups
                .entry(key)
                .or_insert_with(|| (algo, Vec::new()))
                .1
                .push(candidate);
        }
        trees.push(GuestTrees {
            root: scan.root,
            state: scan.state,
        });
        report.guests += 1;
    }
    report.scan_seconds = started.elapsed().as_secs_f64();
    let mut work = Vec::new();
    for ((digest, size, _), (algo, mut members)) in groups {
        // One member per inode: hard links are one file already.
        let mut seen = HashSet::new();
        members.retain(|c| seen.insert(c.ino));
        if members.len() < 2 || size == 0 {
            continue;
        }
        report.groups += 1;
        if options.dry_run {
            report.possible_bytes += size * (members.len() as u64 - 1);
            continue;
        }
        work.push((digest, algo, size, members));
    }
    work.sort_by_key(
        |(_, _, size, members): &(String, Option<Algo>, u64, Vec<Candidate>)| {
            std::cmp::Reverse(size * (members.len() as u64 - 1))
        },
    );
    let index = read_index(roots);
    let outcomes: Vec<GroupOutcome> = work
        .par_iter()
        .map(|(digest, algo, size, members)| {
            unify_group(&trees, &index, digest, *algo, *size, members)
        })
        .collect();
    // Files below the minimum size were not looked at: what the index knew of them stays.
    let mut updated: Index = index
        .iter()
        .filter(|(_, _, size, _, _)| *size < options.min_size)
        .cloned()
        .collect();
    for outcome in outcomes {
        report.shared_files += outcome.shared_files;
        report.shared_bytes += outcome.shared_bytes;
        report.known_files += outcome.known_files;
        report.differed += outcome.differed;
        report.possible_bytes += outcome.possible_bytes;
        if outcome.unsupported {
            report.supported = Some(false);
        } else if outcome.supported && report.supported.is_none() {
            report.supported = Some(true);
        }
        updated.extend(outcome.indexed);
    }
    if report.supported == Some(false) {
        report.note = Some(
            "this file system cannot share extents (FIDEDUPERANGE): nothing was changed; xfs (mkfs.xfs -m reflink=1) or btrfs would allow it".into(),
        );
    } else if !options.dry_run {
        write_index(roots, &updated)?;
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The recorded digest of a file unification may share: regular, not configuration, not a
/// `%ghost`, not replaced by another package's.
fn qualifies(expected: &Expected) -> Option<(Algo, String)> {
    if expected.config || expected.ghost || expected.exists_only {
        return None;
    }
    if expected.mode != 0 && expected.mode & 0o170000 != 0o100000 {
        return None;
    }
    expected.digest.clone()
}

/// The errno values that mean "this file system does not deduplicate".
mod libc_errno {
    pub(super) const EOPNOTSUPP: i32 = 95;
    pub(super) const EINVAL: i32 = 22;
    pub(super) const ENOTTY: i32 = 25;
}
