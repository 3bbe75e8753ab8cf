//! `by-hash/` names for a suite's index files, when its Release asks for them.
//!
//! A Release with `Acquire-By-Hash: yes` tells apt to fetch each index as
//! `DIR/by-hash/ALGORITHM/HEX` rather than by its name, so a client that read the old Release
//! while the suite was being replaced still gets the indexes that Release describes — the race a
//! plain rename of `dists/SUITE` leaves. `vrepo index --suite` writes such suites, and a mirror
//! that copies one without those paths breaks every client with "404 Not Found" (a known failure
//! of simpler mirror tools). So the staged suite gets them: hard links to the index files
//! themselves, one per digest the Release lists.
//!
//! The previous generation stays reachable for one more run: an entry of the current tree whose
//! file is still one of that tree's indexes (the same inode) is linked into the new tree too.

use std::collections::HashSet;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::deb::control::Stanza;
use crate::mirror::check_relative_path;

/// The Release sections apt takes digests from, which are also the `by-hash` directory names.
const SECTIONS: [&str; 4] = ["MD5Sum", "SHA1", "SHA256", "SHA512"];

/// Adds `by-hash` links for the indexes staged under `staging` (the new `dists/SUITE`), if
/// `release` asks for them, and keeps the current tree's (`current`) newest ones.
pub(crate) fn link_by_hash(staging: &Path, current: &Path, release: &[u8]) -> io::Result<()> {
    let Ok(stanza) = Stanza::parse_bytes(release) else {
        // The Release was parsed before it was staged; nothing to add if it cannot be now.
        return Ok(());
    };
    if !stanza
        .get("Acquire-By-Hash")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("yes"))
    {
        return Ok(());
    }
    let mut dirs = HashSet::new();
    for section in SECTIONS {
        let Some(field) = stanza.field(section) else {
            continue;
        };
        for line in field.raw_value().lines() {
            let [hex, _size, path] = line.split_ascii_whitespace().collect::<Vec<_>>()[..] else {
                continue;
            };
            let staged = staging.join(path);
            // Only files the mirror staged (and so already checked) get a name; the Release may
            // list files it did not copy (other architectures, Contents, translations).
            if check_relative_path(path).is_err() || !is_hex(hex) || !staged.is_file() {
                continue;
            }
            let dir = staged.parent().unwrap_or(staging);
            link(&staged, &dir.join("by-hash").join(section).join(hex))?;
            dirs.insert(path.rsplit_once('/').map_or("", |(d, _)| d).to_owned());
        }
    }
    for dir in dirs {
        keep_previous(&current.join(&dir), &staging.join(&dir))?;
    }
    Ok(())
}

/// Links the current tree's `by-hash` entries that are still its indexes into the new tree.
fn keep_previous(current_dir: &Path, staged_dir: &Path) -> io::Result<()> {
    let Ok(entries) = std::fs::read_dir(current_dir) else {
        return Ok(());
    };
    let indexes: HashSet<(u64, u64)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::symlink_metadata(e.path()).ok())
        .filter(|m| m.is_file())
        .map(|m| (m.dev(), m.ino()))
        .collect();
    for section in SECTIONS {
        let from = current_dir.join("by-hash").join(section);
        let Ok(entries) = std::fs::read_dir(&from) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name();
            let Some(hex) = name.to_str().filter(|n| is_hex(n)) else {
                continue;
            };
            let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
                continue;
            };
            if meta.is_file() && indexes.contains(&(meta.dev(), meta.ino())) {
                link(
                    &entry.path(),
                    &staged_dir.join("by-hash").join(section).join(hex),
                )?;
            }
        }
    }
    Ok(())
}

fn is_hex(text: &str) -> bool {
    (32..=128).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Hard-links `target` at `name` (a copy where links are impossible); an existing name stays.
fn link(target: &Path, name: &Path) -> io::Result<()> {
    let context = |path: &Path| {
        let path = path.to_owned();
        move |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()))
    };
    if std::fs::symlink_metadata(name).is_ok() {
        return Ok(());
    }
    if let Some(parent) = name.parent() {
        std::fs::create_dir_all(parent).map_err(context(parent))?;
    }
    match std::fs::hard_link(target, name) {
        Ok(()) => Ok(()),
        Err(_) => std::fs::copy(target, name).map(drop).map_err(context(name)),
    }
}
