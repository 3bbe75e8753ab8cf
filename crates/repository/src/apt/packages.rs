//! `Packages` stanzas: written exactly as apt-ftparchive writes them, and read back.
//!
//! apt-ftparchive (apt 2.6, `ftparchive/writer.cc`) takes the package's `control` stanza,
//! rewrites `Priority` and `Section` (from the override file when it has the package, else from
//! the control file, trimmed), may rewrite `Maintainer` (override), drops `Status`, adds
//! `Filename`, `Size`, `MD5sum`, `SHA1`, `SHA256` and `SHA512`, and writes the fields in apt's
//! canonical order (`apt-pkg/tagfile-order.c`): known fields first in that order and under
//! their canonical spelling, then unknown fields in their original order. Values are copied
//! byte for byte, so `Description` and other multi-line fields are kept whole. We follow the
//! same rules so that a `Packages` file of ours and one of apt-ftparchive's carry the same
//! fields and values; the equivalence test checks this against the real tool.

use std::io::BufRead;

use super::overrides::OverrideEntry;
use crate::deb::checksum::Checksums;
use crate::deb::control::{Stanza, StanzaReader, write_field};

/// The order in which apt-ftparchive writes the fields it knows, as in apt 2.6.
const FIELD_ORDER: &[&str] = &[
    "Package",
    "Package-Type",
    "Architecture",
    "Subarchitecture",
    "Version",
    "Kernel-Version",
    "Built-Using",
    "Static-Built-Using",
    "Built-For-Profiles",
    "Auto-Built-Package",
    "Multi-Arch",
    "Status",
    "Priority",
    "Build-Essential",
    "Protected",
    "Important",
    "Essential",
    "Installer-Menu-Item",
    "Section",
    "Source",
    "Origin",
    "Phased-Update-Percentage",
    "Maintainer",
    "Original-Maintainer",
    "Bugs",
    "Config-Version",
    "Conffiles",
    "Triggers-Awaited",
    "Triggers-Pending",
    "Installed-Size",
    "Provides",
    "Pre-Depends",
    "Depends",
    "Recommends",
    "Suggests",
    "Conflicts",
    "Breaks",
    "Replaces",
    "Enhances",
    "Filename",
    "MSDOS-Filename",
    "Size",
    "MD5sum",
    "SHA1",
    "SHA256",
    "SHA512",
    "Homepage",
    "Description",
    "Description-md5",
    "Tag",
    "Task",
];

/// Where a package file sits in the repository and what it hashes to.
#[derive(Debug, Clone, Copy)]
pub struct PackageFile<'a> {
    /// The `Filename:` value: the path relative to the repository root (for a flat
    /// repository, relative to the directory holding `Packages`).
    pub filename: &'a str,
    /// The file's size in bytes.
    pub size: u64,
    /// The file's digests.
    pub checksums: &'a Checksums,
}

/// Appends the `Packages` stanza for one package (and the blank line that ends it) to `out`.
///
/// `overrides` is the override file's entry for this package, if it has one.
pub fn write_packages_stanza(
    out: &mut String,
    control: &Stanza,
    file: &PackageFile<'_>,
    overrides: Option<&OverrideEntry>,
) {
    // The values apt-ftparchive rewrites; an empty value means the field is removed.
    let priority = match overrides {
        Some(entry) => entry.priority.as_str(),
        None => control.get("Priority").unwrap_or(""),
    };
    let section = match overrides {
        Some(entry) => entry.section.as_str(),
        None => control.get("Section").unwrap_or(""),
    };
    let maintainer = overrides
        .and_then(|entry| entry.rewrite_maintainer(control.get("Maintainer").unwrap_or("")));
    let size = file.size.to_string();
    let md5 = hex::encode(file.checksums.md5);
    let sha1 = hex::encode(file.checksums.sha1);
    let sha256 = hex::encode(file.checksums.sha256);
    let sha512 = hex::encode(file.checksums.sha512);
    let rewritten = |name: &str| -> Option<&str> {
        Some(match name {
            "Filename" => file.filename,
            "Size" => &size,
            "MD5sum" => &md5,
            "SHA1" => &sha1,
            "SHA256" => &sha256,
            "SHA512" => &sha512,
            "Priority" => priority,
            "Section" => section,
            "Status" => "",
            "Maintainer" => maintainer?,
            _ => return None,
        })
    };

    // Each control field's place in the canonical order, or None for unknown fields.
    let mut known: Vec<(usize, usize)> = Vec::with_capacity(control.fields().len());
    for (index, field) in control.fields().iter().enumerate() {
        if let Some(rank) = FIELD_ORDER
            .iter()
            .position(|name| name.eq_ignore_ascii_case(field.name()))
        {
            known.push((rank, index));
        }
    }
    known.sort_unstable();
    let mut next_known = known.iter().peekable();

    for (rank, name) in FIELD_ORDER.iter().enumerate() {
        let present = next_known.next_if(|(r, _)| *r == rank).map(|(_, i)| *i);
        if let Some(value) = rewritten(name) {
            if !value.is_empty() {
                write_field(out, name, value);
            }
        } else if let Some(index) = present {
            write_field(out, name, control.fields()[index].raw_value());
        }
    }
    for field in control.fields() {
        let is_known = FIELD_ORDER
            .iter()
            .any(|name| name.eq_ignore_ascii_case(field.name()));
        if !is_known {
            field.write_to(out);
        }
    }
    out.push('\n');
}

/// Reads the stanzas of a (decompressed) `Packages` file one by one.
pub fn read_packages<R: BufRead>(input: R) -> StanzaReader<R> {
    StanzaReader::new(input)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sums() -> Checksums {
        Checksums {
            md5: [1; 16],
            sha1: [2; 20],
            sha256: [3; 32],
            sha512: [4; 64],
        }
    }

    #[test]
    fn orders_fields_like_apt_ftparchive() {
        // The control file of the sample .deb used to check apt-ftparchive 2.6.2 by hand.
        let control = Stanza::parse(
            "Package: hello-test\nVersion: 1:1.0-2\nArchitecture: amd64\n\
             Maintainer: Test <t@example.com>\nInstalled-Size: 12\n\
             Depends: libc6 (>= 2.3), foo | bar\nX-Custom: zz\nSection: utils\n\
             Priority: optional\nHomepage: https://example.com\n\
             Description: a test package\n Long description line one.\n .\n Line three.\n\
             Built-Using: x (= 1)\nMulti-Arch: foreign\nStatus: install ok installed\n",
        )
        .unwrap();
        let checksums = sums();
        let file = PackageFile {
            filename: "./hello.deb",
            size: 876,
            checksums: &checksums,
        };
        let mut out = String::new();
        write_packages_stanza(&mut out, &control, &file, None);
        let expected = format!(
            "Package: hello-test\nArchitecture: amd64\nVersion: 1:1.0-2\nBuilt-Using: x (= 1)\n\
             Multi-Arch: foreign\nPriority: optional\nSection: utils\n\
             Maintainer: Test <t@example.com>\nInstalled-Size: 12\n\
             Depends: libc6 (>= 2.3), foo | bar\nFilename: ./hello.deb\nSize: 876\n\
             MD5sum: {}\nSHA1: {}\nSHA256: {}\nSHA512: {}\nHomepage: https://example.com\n\
             Description: a test package\n Long description line one.\n .\n Line three.\n\
             X-Custom: zz\n\n",
            "01".repeat(16),
            "02".repeat(20),
            "03".repeat(32),
            "04".repeat(64)
        );
        assert_eq!(out, expected);
    }

    #[test]
    fn override_sets_priority_and_section_and_canonical_names() {
        let control =
            Stanza::parse("package: a\nversion: 1\narchitecture: all\nSection: misc\n").unwrap();
        let entry = OverrideEntry {
            priority: "required".into(),
            section: "admin".into(),
            maintainer: None,
        };
        let checksums = sums();
        let file = PackageFile {
            filename: "pool/a.deb",
            size: 1,
            checksums: &checksums,
        };
        let mut out = String::new();
        write_packages_stanza(&mut out, &control, &file, Some(&entry));
        assert!(out.starts_with(
            "Package: a\nArchitecture: all\nVersion: 1\nPriority: required\nSection: admin\nFilename: pool/a.deb\n"
        ));
        let back: Vec<_> = read_packages(out.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].get("Priority"), Some("required"));
    }
}
