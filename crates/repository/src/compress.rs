//! The compressions repository metadata uses, behind one writer and one reader type.
//!
//! Metadata from another server is read through [`Compression::open_capped`]: a small file
//! can inflate to any size (a gzip of zeros inflates about 1,000 times, xz and zstd far more),
//! so the decompressed stream is cut off at a limit the caller chooses and the caller is told
//! that the limit, and not the data, ended the read.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A compression format for metadata files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Plain bytes.
    None,
    /// gzip (`.gz`), what every client reads.
    Gzip,
    /// xz (`.xz`).
    Xz,
    /// zstd (`.zst`).
    Zstd,
}

impl Compression {
    /// The file-name suffix, with its dot (empty for [`Compression::None`]).
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => ".gz",
            Compression::Xz => ".xz",
            Compression::Zstd => ".zst",
        }
    }

    /// Guesses the compression of a file from its name.
    pub fn from_file_name(name: &str) -> Compression {
        if name.ends_with(".gz") {
            Compression::Gzip
        } else if name.ends_with(".xz") {
            Compression::Xz
        } else if name.ends_with(".zst") || name.ends_with(".zstd") {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// Wraps `inner` in a compressing writer; call [`CompressWriter::finish`] at the end.
    pub fn writer<W: Write>(self, inner: W) -> io::Result<CompressWriter<W>> {
        Ok(match self {
            Compression::None => CompressWriter::Plain(inner),
            Compression::Gzip => CompressWriter::Gzip(flate2::write::GzEncoder::new(
                inner,
                flate2::Compression::new(6),
            )),
            Compression::Xz => CompressWriter::Xz(liblzma::write::XzEncoder::new(inner, 6)),
            Compression::Zstd => {
                CompressWriter::Zstd(zstd::stream::write::Encoder::new(inner, 10)?)
            }
        })
    }

    /// Wraps `inner` in a decompressing reader.
    pub fn reader<'a, R: Read + 'a>(self, inner: R) -> io::Result<Box<dyn BufRead + 'a>> {
        Ok(Box::new(BufReader::new(self.decoder(inner)?)))
    }

    /// The decompressing reader itself (the decoders buffer their input themselves).
    fn decoder<'a, R: Read + 'a>(self, inner: R) -> io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Compression::None => Box::new(inner),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(inner)),
            Compression::Xz => Box::new(liblzma::read::XzDecoder::new(inner)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(inner)?),
        })
    }

    /// Opens a metadata file and decompresses it according to its name.
    pub fn open(path: &Path) -> io::Result<Box<dyn BufRead>> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        let file = std::fs::File::open(path)?;
        Compression::from_file_name(&name).reader(file)
    }

    /// Like [`Compression::open`], but the decompressed stream ends in an error of kind
    /// `Other` (carrying [`InflateLimitExceeded`]) once it would go past `limit` bytes; exactly
    /// `limit` bytes are fine.
    ///
    /// The parsers on top of the reader wrap that error in their own ones, so the returned
    /// [`CapTripped`] tells afterwards whether the limit was what stopped them.
    pub fn open_capped(path: &Path, limit: u64) -> io::Result<(Box<dyn BufRead>, CapTripped)> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        let file = std::fs::File::open(path)?;
        let tripped = CapTripped::default();
        let capped = Capped {
            inner: Compression::from_file_name(&name).decoder(file)?,
            left: limit,
            limit,
            tripped: tripped.clone(),
        };
        Ok((Box::new(BufReader::new(capped)), tripped))
    }
}

/// A decompressed stream went past its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("inflates to more than {limit} bytes")]
pub struct InflateLimitExceeded {
    /// The limit, in decompressed bytes.
    pub limit: u64,
}

/// Whether a reader from [`Compression::open_capped`] stopped at its limit.
#[derive(Debug, Clone, Default)]
pub struct CapTripped(Arc<AtomicBool>);

impl CapTripped {
    /// True once the reader refused to go past its limit.
    pub fn tripped(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Passes on at most `limit` bytes of `inner`, then fails if `inner` has more.
struct Capped<R> {
    inner: R,
    left: u64,
    limit: u64,
    tripped: CapTripped,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            // The limit is reached: one more byte tells a file of exactly the limit (fine)
            // from a longer one.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => {
                    self.tripped.0.store(true, Ordering::Relaxed);
                    Err(io::Error::other(InflateLimitExceeded { limit: self.limit }))
                }
            };
        }
        let max = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// A writer that compresses into an inner writer.
pub enum CompressWriter<W: Write> {
    /// No compression.
    Plain(W),
    /// gzip.
    Gzip(flate2::write::GzEncoder<W>),
    /// xz.
    Xz(liblzma::write::XzEncoder<W>),
    /// zstd.
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> CompressWriter<W> {
    /// Writes the format's trailer and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            CompressWriter::Plain(w) => Ok(w),
            CompressWriter::Gzip(w) => w.finish(),
            CompressWriter::Xz(w) => w.finish(),
            CompressWriter::Zstd(w) => w.finish(),
        }
    }
}

impl<W: Write> Write for CompressWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            CompressWriter::Plain(w) => w.write(buf),
            CompressWriter::Gzip(w) => w.write(buf),
            CompressWriter::Xz(w) => w.write(buf),
            CompressWriter::Zstd(w) => w.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            CompressWriter::Plain(w) => w.write_all(buf),
            CompressWriter::Gzip(w) => w.write_all(buf),
            CompressWriter::Xz(w) => w.write_all(buf),
            CompressWriter::Zstd(w) => w.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            CompressWriter::Plain(w) => w.flush(),
            CompressWriter::Gzip(w) => w.flush(),
            CompressWriter::Xz(w) => w.flush(),
            CompressWriter::Zstd(w) => w.flush(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn gzip_file(dir: &Path, content: &[u8]) -> std::path::PathBuf {
        let path = dir.join("x.gz");
        let mut writer = Compression::Gzip
            .writer(std::fs::File::create(&path).unwrap())
            .unwrap();
        writer.write_all(content).unwrap();
        writer.finish().unwrap();
        path
    }

    #[test]
    fn capped_reader_allows_exactly_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = gzip_file(dir.path(), &[7u8; 1000]);
        let (mut input, tripped) = Compression::open_capped(&path, 1000).unwrap();
        let mut out = Vec::new();
        input.read_to_end(&mut out).unwrap();
        assert_eq!(out.len(), 1000);
        assert!(!tripped.tripped());

        let (mut input, tripped) = Compression::open_capped(&path, 999).unwrap();
        let err = input.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(tripped.tripped());
        let inner = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<InflateLimitExceeded>());
        assert_eq!(inner, Some(&InflateLimitExceeded { limit: 999 }));
    }
}
