//! What the mirror accepts from a source: safe relative paths and well-formed digests.
//!
//! A source is untrusted. A `location href` or `Filename:` becomes a path under DEST, and a
//! checksum becomes a file name in the download area, so both are checked before any file is
//! named after them: a path must be relative, `/`-separated, free of `..`, `.` and empty
//! components, of hidden components (DEST keeps its state in `.vrepo/` and stages metadata in
//! hidden directories) and of control characters; a digest must be hexadecimal of the length
//! its algorithm produces.

use std::fmt;
use std::io::{self, Read};

use md5::Md5;
use sha1::Sha1;
use sha2::{Digest as _, Sha256, Sha512};

/// Why a path from the source is refused.
pub(crate) fn check_relative_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("it is empty");
    }
    if path.len() > 4096 {
        return Err("it is longer than 4096 bytes");
    }
    if path.starts_with('/') {
        return Err("it is absolute");
    }
    if path.chars().any(|c| c.is_control() || c == '\\') {
        return Err("it contains a control character or a backslash");
    }
    for component in path.split('/') {
        match component {
            "" => return Err("it has an empty component"),
            ".." => return Err("it leads out of the repository (`..`)"),
            "." => return Err("it has a `.` component"),
            c if c.starts_with('.') => return Err("it has a hidden component"),
            c if c.len() > 255 => return Err("a component is longer than 255 bytes"),
            _ => {}
        }
    }
    Ok(())
}

/// A checksum algorithm that repository metadata uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// MD5 (apt's `MD5sum`; never trusted alone when a stronger one is given).
    Md5,
    /// SHA-1 (rpm-md's `sha`/`sha1`, apt's `SHA1`).
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-512.
    Sha512,
}

impl Algorithm {
    /// Parses rpm-md's `type` attribute (`sha256`, `sha`, `sha1`, `sha512`, `md5`).
    pub fn from_rpm_md(name: &str) -> Option<Algorithm> {
        match name {
            "md5" => Some(Algorithm::Md5),
            "sha" | "sha1" => Some(Algorithm::Sha1),
            "sha256" => Some(Algorithm::Sha256),
            "sha512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }

    /// The name used in file names and messages.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "md5",
            Algorithm::Sha1 => "sha1",
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Md5 => 32,
            Algorithm::Sha1 => 40,
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A checksum the metadata declares for a file: algorithm plus lower-case hex digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    /// Checks and normalises a declared digest; `None` if it is not hex of the right length.
    pub fn new(algorithm: Algorithm, hex: &str) -> Option<Digest> {
        let hex = hex.trim().to_ascii_lowercase();
        (hex.len() == algorithm.hex_len() && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then_some(Digest { algorithm, hex })
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The lower-case hex digest.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), self.hex)
    }
}

/// An incremental hash of one algorithm.
#[derive(Clone)]
pub(crate) enum Hasher {
    Md5(Md5),
    Sha1(Sha1),
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    pub(crate) fn new(algorithm: Algorithm) -> Hasher {
        match algorithm {
            Algorithm::Md5 => Hasher::Md5(Md5::new()),
            Algorithm::Sha1 => Hasher::Sha1(Sha1::new()),
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(bytes),
            Hasher::Sha1(h) => h.update(bytes),
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    pub(crate) fn finish_hex(self) -> String {
        match self {
            Hasher::Md5(h) => hex::encode(h.finalize()),
            Hasher::Sha1(h) => hex::encode(h.finalize()),
            Hasher::Sha256(h) => hex::encode(h.finalize()),
            Hasher::Sha512(h) => hex::encode(h.finalize()),
        }
    }
}

/// Hashes everything `reader` yields; returns the hex digest and the byte count.
pub(crate) fn hash_reader(
    algorithm: Algorithm,
    mut reader: impl Read,
) -> io::Result<(String, u64)> {
    let mut hasher = Hasher::new(algorithm);
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hasher.finish_hex(), total))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn refuses_paths_that_leave_the_repository() {
        for bad in [
            "",
            "/etc/passwd",
            "../x.rpm",
            "a/../../x.rpm",
            "a//b.rpm",
            "./a.rpm",
            ".vrepo/lock",
            "a/.hidden/b.rpm",
            "a\nb.rpm",
            "a\\..\\b",
        ] {
            assert!(check_relative_path(bad).is_err(), "{bad:?} accepted");
        }
        for good in [
            "a.rpm",
            "Packages/a/a-1.0-1.x86_64.rpm",
            "pool/main/libc++_1~2.deb",
        ] {
            check_relative_path(good).unwrap();
        }
    }

    #[test]
    fn digests_must_be_hex_of_the_right_length() {
        assert!(Digest::new(Algorithm::Sha256, "../../etc").is_none());
        assert!(Digest::new(Algorithm::Sha256, &"a".repeat(63)).is_none());
        let d = Digest::new(Algorithm::Sha256, &"AB".repeat(32)).unwrap();
        assert_eq!(d.hex(), "ab".repeat(32));
        let (hex, n) = hash_reader(Algorithm::Sha256, &b"abc"[..]).unwrap();
        assert_eq!(n, 3);
        assert_eq!(
            hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
