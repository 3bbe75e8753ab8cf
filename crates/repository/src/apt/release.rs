//! `Release` files: the signed-or-trusted root that lists every index with its size and digests.
//!
//! apt downloads `Release` first and then accepts an index only if its size and hash match the
//! entry here, so the list must describe exactly the files published beside it. The list is
//! therefore built from the index files this run wrote, never by scanning the directory (a scan
//! of `dists/S/` would find the previous `Release` and list it in the new one). The layout of the
//! entries (` HASH SIZE PATH`, size right-aligned in 16 columns) and the header fields follow
//! what apt-ftparchive and the Debian archive write.

use std::time::SystemTime;

use crate::deb::checksum::Checksums;

/// One file listed in a `Release`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseEntry {
    /// Path relative to the directory holding `Release`, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Digests.
    pub checksums: Checksums,
}

/// The header fields of a `Release`; optional ones are left out when `None` or empty.
#[derive(Debug, Clone, Default)]
pub struct ReleaseFields {
    /// `Origin:`.
    pub origin: Option<String>,
    /// `Label:`.
    pub label: Option<String>,
    /// `Suite:`.
    pub suite: Option<String>,
    /// `Codename:`.
    pub codename: Option<String>,
    /// `Architectures:` (space-separated on output).
    pub architectures: Vec<String>,
    /// `Components:` (space-separated on output).
    pub components: Vec<String>,
    /// `Date:`; the current time when `None`.
    pub date: Option<SystemTime>,
    /// `Acquire-By-Hash: yes`: the indexes are also published as `by-hash/ALGORITHM/HEX`.
    pub acquire_by_hash: bool,
}

/// Renders a `Release` file.
pub fn write_release(fields: &ReleaseFields, entries: &[ReleaseEntry]) -> String {
    let mut out = String::new();
    let mut field = |name: &str, value: Option<&str>| {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            out.push_str(name);
            out.push_str(": ");
            out.push_str(value);
            out.push('\n');
        }
    };
    field("Origin", fields.origin.as_deref());
    field("Label", fields.label.as_deref());
    field("Suite", fields.suite.as_deref());
    field("Codename", fields.codename.as_deref());
    let date = format_rfc2822_utc(fields.date.unwrap_or_else(SystemTime::now));
    field("Date", Some(&date));
    field("Acquire-By-Hash", fields.acquire_by_hash.then_some("yes"));
    field("Architectures", Some(&fields.architectures.join(" ")));
    field("Components", Some(&fields.components.join(" ")));
    type Digest = fn(&Checksums) -> String;
    let sections: [(&str, Digest); 4] = [
        ("MD5Sum", |c| hex::encode(c.md5)),
        ("SHA1", |c| hex::encode(c.sha1)),
        ("SHA256", |c| hex::encode(c.sha256)),
        ("SHA512", |c| hex::encode(c.sha512)),
    ];
    for (name, digest) in sections {
        out.push_str(name);
        out.push_str(":\n");
        for entry in entries {
            out.push_str(&format!(
                " {} {:>16} {}\n",
                digest(&entry.checksums),
                entry.size,
                entry.path
            ));
        }
    }
    out
}

/// `Sun, 29 Nov 2026 05:38:40 +0000`: the date format apt expects in `Release`.
pub fn format_rfc2822_utc(time: SystemTime) -> String {
    crate::date::format_utc(time, "+0000")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn formats_dates_like_apt() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_930_720);
        assert_eq!(format_rfc2822_utc(t), "Sun, 29 Nov 2026 05:38:40 +0000");
        assert_eq!(
            format_rfc2822_utc(UNIX_EPOCH),
            "Thu, 01 Jan 1970 00:00:00 +0000"
        );
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(format_rfc2822_utc(leap), "Tue, 29 Feb 2000 00:00:00 +0000");
    }

    #[test]
    fn lists_entries_with_aligned_sizes() {
        let entry = ReleaseEntry {
            path: "Packages".into(),
            size: 665,
            checksums: Checksums {
                md5: [0; 16],
                sha1: [0; 20],
                sha256: [0; 32],
                sha512: [0; 64],
            },
        };
        let fields = ReleaseFields {
            suite: Some("stable".into()),
            date: Some(UNIX_EPOCH),
            ..ReleaseFields::default()
        };
        let text = write_release(&fields, &[entry]);
        assert!(
            text.starts_with("Suite: stable\nDate: Thu, 01 Jan 1970 00:00:00 +0000\nMD5Sum:\n")
        );
        assert!(text.contains(&format!(" {}              665 Packages\n", "0".repeat(32))));
    }
}
