//! A copy of a .deb whose data member is stored uncompressed.
//!
//! Bootstrapping a Debian guest reads the contents of the Essential packages twice: once to
//! extract some of them without dpkg (so that `/bin/sh` exists for the first maintainer
//! scripts), once more when dpkg installs them all. Most of that is xz decompression: 4.3 s of
//! CPU for the 89 packages of bookworm's Essential set (160 MB unpacked), measured. A copy
//! whose `data.tar` is plain costs one decompression, done once per package and in parallel;
//! both later readers then only copy bytes. dpkg records nothing about an archive's
//! compression, so what it installs from the copy is the same.
//!
//! The source is checked exactly as [`super::read_deb`] checks it (same walk, same limits), and
//! the copy keeps `debian-binary` and the control member byte for byte. Members other than
//! those three are left out: dpkg ignores them.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Cursor, Read, Seek, SeekFrom, Write};
use std::path::Path;

use super::control::Stanza;
use super::{DebError, DebFormatError, Limits, MemberSink, READ_BUFFER, read_from};

/// What [`copy_with_plain_data`] learnt about the package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainCopy {
    /// The package's `control` stanza.
    pub control: Stanza,
    /// Whether the data member was decompressed; `false` when it was plain already or uses a
    /// compression we do not decode (bzip2, lzma), in which case it was copied as it was.
    pub decompressed: bool,
}

/// The largest member size an `ar` header can state (ten decimal digits).
const MAX_MEMBER_SIZE: u64 = 9_999_999_999;

/// The largest data member [`plain_copy_from_bytes`] builds in memory.
const MAX_IN_MEMORY: u64 = 64 << 20;

/// Most memory the xz decoder may use: xz's own presets need at most 674 MiB to *compress*
/// (`-9e`), and 65 MiB to decompress; a stream asking for more is not a package.
const XZ_MEMORY_LIMIT: u64 = 256 << 20;

/// Copies the .deb at `source` to `target` (which must not exist) with its data member
/// decompressed. On failure `target` may be left partly written; the caller owns its directory.
pub fn copy_with_plain_data(source: &Path, target: &Path) -> Result<PlainCopy, DebError> {
    let input = File::open(source).map_err(|err| DebError::Io {
        path: source.to_owned(),
        source: err,
    })?;
    let output = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(target)
        .map_err(|err| DebError::Write {
            path: target.to_owned(),
            source: err,
        })?;
    copy_open_with_plain_data(input, source, output, target)
}

/// [`copy_with_plain_data`] between files the caller opened (through a safe-path layer, say);
/// `source` and `target` only name them in errors.
pub fn copy_open_with_plain_data(
    input: File,
    source: &Path,
    output: File,
    target: &Path,
) -> Result<PlainCopy, DebError> {
    let write_err = |err: io::Error| DebError::Write {
        path: target.to_owned(),
        source: err,
    };
    let copied = copy_to(
        BufReader::with_capacity(READ_BUFFER, input),
        output,
        MAX_MEMBER_SIZE,
    );
    copied.map_err(|err| match err {
        DebFormatError::Write(err) => write_err(err),
        DebFormatError::Read(err) => DebError::Io {
            path: source.to_owned(),
            source: err,
        },
        other => DebError::Invalid {
            path: source.to_owned(),
            source: other,
        },
    })
}

/// [`copy_with_plain_data`] in memory, for a data member of at most 64 MiB: returns the copy's
/// bytes. Never panics on any input; the fuzzing entry point.
pub fn plain_copy_from_bytes(bytes: &[u8]) -> Result<(PlainCopy, Vec<u8>), DebFormatError> {
    let mut out = Cursor::new(Vec::new());
    let copy = copy_to(bytes, &mut out, MAX_IN_MEMORY)?;
    Ok((copy, out.into_inner()))
}

/// Writes the copy of the .deb read from `input` to `output`; a data member decompressing to
/// more than `max_data` bytes is refused.
fn copy_to(
    input: impl Read,
    output: impl Write + Seek,
    max_data: u64,
) -> Result<PlainCopy, DebFormatError> {
    let mut sink = CopySink {
        out: BufWriter::with_capacity(READ_BUFFER, output),
        max_data,
        written: 0,
        size_patch: None,
        decompressed: false,
    };
    sink.put(b"!<arch>\n").map_err(DebFormatError::Write)?;
    let control = read_from(input, &Limits::default(), &mut sink)?;
    let decompressed = sink.decompressed;
    sink.finish().map_err(DebFormatError::Write)?;
    Ok(PlainCopy {
        control,
        decompressed,
    })
}

/// Writes the members it hears as a new `ar` archive.
struct CopySink<W: Write + Seek> {
    out: BufWriter<W>,
    /// The largest data member accepted.
    max_data: u64,
    /// Bytes written so far.
    written: u64,
    /// Where the data member's header must get its size, once known, and that size.
    size_patch: Option<(u64, u64)>,
    decompressed: bool,
}

impl<W: Write + Seek> CopySink<W> {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// A member header in the form dpkg-deb writes; `size` `None` leaves the field blank.
    fn header(&mut self, name: &str, size: Option<u64>) -> io::Result<()> {
        let size = size.map(|s| s.to_string()).unwrap_or_default();
        let header = format!(
            "{name:<16}{:<12}{:<6}{:<6}{:<8}{size:<10}`\n",
            0, 0, 0, 100644
        );
        self.put(header.as_bytes())
    }

    fn member(&mut self, name: &str, content: &[u8]) -> io::Result<()> {
        self.header(name, Some(content.len() as u64))?;
        self.put(content)?;
        self.pad()
    }

    fn pad(&mut self) -> io::Result<()> {
        if self.written % 2 == 1 {
            self.put(b"\n")?;
        }
        Ok(())
    }

    /// Streams `reader` (the source's member `name`, decoded or not) into a member called
    /// `copy_name`, whose size is written in afterwards.
    fn streamed_member(
        &mut self,
        copy_name: &str,
        name: &str,
        reader: &mut dyn Read,
    ) -> Result<(), DebFormatError> {
        let header_at = self.written;
        self.header(copy_name, None)
            .map_err(DebFormatError::Write)?;
        let start = self.written;
        let mut buffer = vec![0u8; READ_BUFFER];
        loop {
            let got = match reader.read(&mut buffer) {
                Ok(0) => break,
                Ok(got) => got,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(DebFormatError::Truncated {
                        what: format!("member `{name}`"),
                    });
                }
                Err(source) => {
                    return Err(DebFormatError::CorruptData {
                        member: name.to_owned(),
                        source,
                    });
                }
            };
            self.put(&buffer[..got]).map_err(DebFormatError::Write)?;
            if self.written - start > self.max_data {
                return Err(DebFormatError::TooLarge {
                    what: format!("decompressed `{name}`"),
                    size: self.written - start,
                    limit: self.max_data,
                });
            }
        }
        self.size_patch = Some((header_at + 48, self.written - start));
        self.pad().map_err(DebFormatError::Write)
    }

    fn finish(self) -> io::Result<()> {
        let mut out = self.out.into_inner().map_err(|err| err.into_error())?;
        if let Some((at, size)) = self.size_patch {
            out.seek(SeekFrom::Start(at))?;
            out.write_all(size.to_string().as_bytes())?;
        }
        out.flush()
    }
}

impl<W: Write + Seek> MemberSink for CopySink<W> {
    fn format(&mut self, content: &[u8]) -> Result<(), DebFormatError> {
        self.member("debian-binary", content)
            .map_err(DebFormatError::Write)
    }

    fn control(&mut self, name: &str, content: &[u8]) -> Result<(), DebFormatError> {
        self.member(name, content).map_err(DebFormatError::Write)
    }

    fn data(&mut self, name: &str, member: &mut dyn Read) -> Result<(), DebFormatError> {
        let corrupt = |source| DebFormatError::CorruptData {
            member: name.to_owned(),
            source,
        };
        let mut decoder: Box<dyn Read + '_> = match name {
            "data.tar.xz" => {
                let stream = liblzma::stream::Stream::new_stream_decoder(XZ_MEMORY_LIMIT, 0)
                    .map_err(|err| corrupt(err.into()))?;
                Box::new(liblzma::read::XzDecoder::new_stream(member, stream))
            }
            "data.tar.gz" => Box::new(flate2::read::MultiGzDecoder::new(member)),
            "data.tar.zst" => Box::new(zstd::stream::read::Decoder::new(member).map_err(corrupt)?),
            _ => return self.streamed_member(name, name, member),
        };
        self.decompressed = true;
        self.streamed_member("data.tar", name, &mut decoder)
    }
}
