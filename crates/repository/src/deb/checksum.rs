//! The four digests apt lists for every file (MD5, SHA-1, SHA-256, SHA-512), computed in one pass.
//!
//! apt-ftparchive writes all four into `Packages` and `Release`; computing them while the file
//! is read anyway (to find its control member) means each package is read from disk once.
//! The `sha1` and `sha2` crates pick the CPU's SHA extensions at run time.

use std::io::{self, Read, Write};

use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};

/// MD5, SHA-1, SHA-256 and SHA-512 of one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Checksums {
    /// MD5 digest.
    pub md5: [u8; 16],
    /// SHA-1 digest.
    pub sha1: [u8; 20],
    /// SHA-256 digest.
    pub sha256: [u8; 32],
    /// SHA-512 digest.
    pub sha512: [u8; 64],
}

impl Checksums {
    /// Length of [`Checksums::to_bytes`]'s output.
    pub const ENCODED_LEN: usize = 16 + 20 + 32 + 64;

    /// The four digests back to back (MD5, SHA-1, SHA-256, SHA-512), for caches.
    pub fn to_bytes(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0u8; Self::ENCODED_LEN];
        out[..16].copy_from_slice(&self.md5);
        out[16..36].copy_from_slice(&self.sha1);
        out[36..68].copy_from_slice(&self.sha256);
        out[68..].copy_from_slice(&self.sha512);
        out
    }

    /// The inverse of [`Checksums::to_bytes`]; `None` when `bytes` has the wrong length.
    pub fn from_bytes(bytes: &[u8]) -> Option<Checksums> {
        if bytes.len() != Self::ENCODED_LEN {
            return None;
        }
        let mut sums = Checksums {
            md5: [0; 16],
            sha1: [0; 20],
            sha256: [0; 32],
            sha512: [0; 64],
        };
        sums.md5.copy_from_slice(&bytes[..16]);
        sums.sha1.copy_from_slice(&bytes[16..36]);
        sums.sha256.copy_from_slice(&bytes[36..68]);
        sums.sha512.copy_from_slice(&bytes[68..]);
        Some(sums)
    }
}

/// Feeds bytes to all four digests and counts them.
#[derive(Clone, Default)]
pub struct MultiHasher {
    md5: Md5,
    sha1: Sha1,
    sha256: Sha256,
    sha512: Sha512,
    len: u64,
}

impl MultiHasher {
    /// A hasher that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `bytes` to every digest.
    pub fn update(&mut self, bytes: &[u8]) {
        self.md5.update(bytes);
        self.sha1.update(bytes);
        self.sha256.update(bytes);
        self.sha512.update(bytes);
        self.len += bytes.len() as u64;
    }

    /// How many bytes were hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was hashed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The digests of everything added.
    pub fn finish(self) -> Checksums {
        Checksums {
            md5: self.md5.finalize().into(),
            sha1: self.sha1.finalize().into(),
            sha256: self.sha256.finalize().into(),
            sha512: self.sha512.finalize().into(),
        }
    }
}

/// A reader that hashes everything read through it and remembers whether the source failed.
///
/// The failure flag lets callers tell a disk error (reported as I/O on the file) from bad
/// content (reported as an invalid package), since both surface as `io::Error` further up.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: MultiHasher,
    failed: bool,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: MultiHasher::new(),
            failed: false,
        }
    }

    /// Whether a read from the underlying source returned an error.
    pub(crate) fn source_failed(&self) -> bool {
        self.failed
    }

    pub(crate) fn into_hasher(self) -> MultiHasher {
        self.hasher
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.hasher.update(&buf[..n]);
                Ok(n)
            }
            Err(err) => {
                if err.kind() != io::ErrorKind::Interrupted {
                    self.failed = true;
                }
                Err(err)
            }
        }
    }
}

/// A writer that hashes everything written through it; used for index files listed in `Release`.
pub struct HashingWriter<W> {
    inner: W,
    hasher: MultiHasher,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: MultiHasher::new(),
        }
    }

    /// The wrapped writer, the number of bytes written and their digests.
    pub fn finish(self) -> (W, u64, Checksums) {
        let len = self.hasher.len();
        (self.inner, len, self.hasher.finish())
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn known_digests_of_abc() {
        let mut hasher = MultiHasher::new();
        hasher.update(b"abc");
        let sums = hasher.finish();
        assert_eq!(hex::encode(sums.md5), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            hex::encode(sums.sha1),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            hex::encode(sums.sha256),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(Checksums::from_bytes(&sums.to_bytes()), Some(sums));
    }
}
