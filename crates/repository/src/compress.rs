//! The compressions repository metadata uses, behind one writer and one reader type.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;

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
        Ok(match self {
            Compression::None => Box::new(BufReader::new(inner)),
            Compression::Gzip => Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(inner))),
            Compression::Xz => Box::new(BufReader::new(liblzma::read::XzDecoder::new(inner))),
            Compression::Zstd => Box::new(BufReader::new(zstd::stream::read::Decoder::new(inner)?)),
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
