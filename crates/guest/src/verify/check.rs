//! Comparing one packaged file with what the database says, as `rpm -V` does: the same
//! attributes, the same exceptions (a symlink has no mode, only regular files have a digest, a
//! size and a time; a `%ghost` may be missing), the same nine-letter result (`SM5DLUGTP`).
//! The guest is hostile: every path is resolved through the safe-path layer, the file is looked
//! at without following a final symlink, and only a regular file is opened.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::Digest;
use vserver_sandbox::{FileInfo, FileKind, GuestRoot, SharedExtents};

use super::expected::{Algo, Expected, checks};

/// User and group names of the guest (its `/etc/passwd` and `/etc/group`), as rpm inside the
/// guest would see them.
#[derive(Debug, Default)]
pub(crate) struct Names {
    pub(crate) users: HashMap<u32, String>,
    pub(crate) groups: HashMap<u32, String>,
}

impl Names {
    /// Whether the owner `id` is the recorded `name`: by the guest's name for `id`, or by the id
    /// of `name` (rpm knows `root` as 0 without any table), as rpm decides.
    pub(crate) fn matches(table: &HashMap<u32, String>, id: u32, name: &str) -> bool {
        table.get(&id).is_some_and(|n| n == name)
            || (name == "root" && id == 0)
            || table.iter().any(|(i, n)| n == name && *i == id)
    }

    pub(crate) fn of(root: &GuestRoot) -> Names {
        let table = |path: &str| {
            let mut map = HashMap::new();
            let mut text = String::new();
            if let Ok(file) = root.open_file(path) {
                let _ = file.take(8 << 20).read_to_string(&mut text);
            }
            for line in text.lines() {
                let fields: Vec<&str> = line.split(':').collect();
                if let (Some(name), Some(Ok(id))) =
                    (fields.first(), fields.get(2).map(|f| f.parse::<u32>()))
                {
                    map.entry(id).or_insert_with(|| (*name).to_owned());
                }
            }
            map
        };
        Names {
            users: table("/etc/passwd"),
            groups: table("/etc/group"),
        }
    }
}

/// Digests already computed in this run: by inode (a file hard-linked into several places, or
/// checked by several packages, is read once) and by shared extents (files of several guests
/// that `unify` made share every extent hold the same bytes: read once for all of them).
#[derive(Default)]
pub(crate) struct DigestCache {
    by_inode: Mutex<HashMap<(u64, u64, Algo), String>>,
    by_extents: Mutex<HashMap<(SharedExtents, Algo), String>>,
}

/// The result of one check: `None` when the file is as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// As recorded; its device and inode (for the set of packaged files).
    Fine(Option<(u64, u64)>),
    /// Missing.
    Missing,
    /// Differs: rpm's nine letters, and its device and inode.
    Differs(String, (u64, u64)),
}

/// Checks `expected` against the guest `root`.
pub(crate) fn check(
    root: &GuestRoot,
    expected: &Expected,
    names: &Names,
    cache: &DigestCache,
    reused: &AtomicU64,
) -> Outcome {
    // rpm -V reports nothing about a %ghost (measured: missing, replaced by a FIFO, touched):
    // its content and state are the guest's. Its inode is not counted as packaged, so a setuid
    // file put there is still reported.
    if expected.ghost {
        return Outcome::Fine(None);
    }
    let info = match root.symlink_metadata(&expected.path) {
        Ok(info) => info,
        Err(_) => return Outcome::Missing,
    };
    let inode = (info.dev, info.ino);
    if expected.exists_only {
        return Outcome::Fine(Some(inode));
    }
    let mut wanted = expected.checks;
    if info.kind == FileKind::Symlink {
        wanted &= !checks::MODE;
    } else {
        wanted &= !checks::LINKTO;
    }
    if info.kind != FileKind::File {
        wanted &= !(checks::DIGEST | checks::SIZE | checks::MTIME);
    }
    // S M 5 D L U G T P
    let mut result = *b".........";
    if wanted & checks::SIZE != 0 && info.size != expected.size {
        result[0] = b'S';
    }
    if wanted & checks::MODE != 0 && full_mode(&info) != expected.mode {
        result[1] = b'M';
    }
    if wanted & checks::DIGEST != 0
        && let Some((algo, digest)) = &expected.digest
    {
        match file_digest(root, expected, &info, *algo, cache, reused) {
            Some(actual) if &actual == digest => {}
            Some(_) => result[2] = b'5',
            None => result[2] = b'?',
        }
    }
    if wanted & checks::LINKTO != 0 {
        let target = root
            .read_link(&expected.path)
            .map(|t| t.to_string_lossy().into_owned())
            .unwrap_or_default();
        if target != expected.link_to {
            result[4] = b'L';
        }
    }
    if wanted & checks::USER != 0 && !Names::matches(&names.users, info.uid, &expected.user) {
        result[5] = b'U';
    }
    if wanted & checks::GROUP != 0 && !Names::matches(&names.groups, info.gid, &expected.group) {
        result[6] = b'G';
    }
    if wanted & checks::MTIME != 0 && info.mtime != expected.mtime {
        result[7] = b'T';
    }
    if result == *b"........." {
        Outcome::Fine(Some(inode))
    } else {
        Outcome::Differs(String::from_utf8_lossy(&result).into_owned(), inode)
    }
}

/// `st_mode` with its file-type bits, as rpm records it.
pub(crate) fn full_mode(info: &FileInfo) -> u32 {
    let kind = match info.kind {
        FileKind::File => 0o100000,
        FileKind::Dir => 0o040000,
        FileKind::Symlink => 0o120000,
        FileKind::CharDevice => 0o020000,
        FileKind::BlockDevice => 0o060000,
        FileKind::Fifo => 0o010000,
        FileKind::Socket => 0o140000,
        _ => 0,
    };
    kind | info.mode
}

/// The digest of the regular file at `path` of `root`, by `algo`.
pub(crate) fn digest_of(root: &GuestRoot, path: &std::path::Path, algo: Algo) -> Option<String> {
    let file = root.open_file(path).ok()?;
    digest_file(file, algo).ok()
}

fn digest_file(file: std::fs::File, algo: Algo) -> std::io::Result<String> {
    match algo {
        Algo::Md5 => hash::<md5::Md5>(file),
        Algo::Sha1 => hash::<sha1::Sha1>(file),
        Algo::Sha224 => hash::<sha2::Sha224>(file),
        Algo::Sha256 => hash::<sha2::Sha256>(file),
        Algo::Sha384 => hash::<sha2::Sha384>(file),
        Algo::Sha512 => hash::<sha2::Sha512>(file),
    }
}

fn file_digest(
    root: &GuestRoot,
    expected: &Expected,
    info: &FileInfo,
    algo: Algo,
    cache: &DigestCache,
    reused: &AtomicU64,
) -> Option<String> {
    let key = (info.dev, info.ino, algo);
    if let Some(known) = cache
        .by_inode
        .lock()
        .ok()
        .and_then(|c| c.get(&key).cloned())
    {
        return Some(known);
    }
    let file = root.open_file(&expected.path).ok()?;
    let extents = vserver_sandbox::shared_extents(&file)
        .ok()
        .flatten()
        .map(|extents| (extents, algo));
    let known = extents
        .as_ref()
        .and_then(|key| cache.by_extents.lock().ok()?.get(key).cloned());
    let digest = match known {
        Some(digest) => {
            reused.fetch_add(1, Ordering::Relaxed);
            digest
        }
        None => digest_file(file, algo).ok()?,
    };
    if let Some(extent_key) = extents
        && let Ok(mut by_extents) = cache.by_extents.lock()
    {
        by_extents.insert(extent_key, digest.clone());
    }
    if let Ok(mut by_inode) = cache.by_inode.lock() {
        by_inode.insert(key, digest.clone());
    }
    Some(digest)
}

fn hash<D: Digest>(mut file: std::fs::File) -> std::io::Result<String> {
    let mut hasher = D::new();
    let mut buffer = vec![0u8; 1 << 17];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}
