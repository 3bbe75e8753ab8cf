//! Reading .deb packages: the `control` stanza, the file size and its four digests.
//!
//! A .deb (deb(5)) is an `ar` archive holding `debian-binary` (`2.0\n`), `control.tar[.gz|.xz|.zst]`
//! and `data.tar.*`. An index needs only the `control` file from the second member plus the
//! digests of the whole file, so [`read_deb`] reads each file exactly once, front to back,
//! hashing every byte while it picks the control file out of the stream; the data member is
//! never decompressed.
//!
//! Packages are untrusted input: every size is checked against a limit before anything is
//! read or allocated ([`Limits`]), decompressed control data is capped, and malformed input
//! gives a [`DebFormatError`] instead of a panic. [`read_control_from_bytes`] is the entry point
//! for fuzzing.

mod ar;
pub mod checksum;
pub mod control;
mod plain_copy;

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use self::ar::ArReader;
use self::checksum::{Checksums, HashingReader};
use self::control::{ControlError, Stanza};

pub use self::plain_copy::{
    PlainCopy, copy_open_with_plain_data, copy_with_plain_data, plain_copy_from_bytes,
};

/// Size limits applied while reading a .deb; the defaults are far above any real package.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest `control.tar*` member accepted (compressed size).
    pub control_member: u64,
    /// Most bytes the decompressed `control.tar` may have.
    pub control_tar: u64,
    /// Largest `control` file accepted.
    pub control_file: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            control_member: 64 << 20,
            control_tar: 256 << 20,
            control_file: 4 << 20,
        }
    }
}

/// What an index needs to know about one .deb.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebInfo {
    /// The package's `control` stanza, fields in their original order.
    pub control: Stanza,
    /// The file's size in bytes.
    pub size: u64,
    /// Digests of the whole file.
    pub checksums: Checksums,
}

/// Failure to read a .deb file.
#[derive(Debug, thiserror::Error)]
pub enum DebError {
    /// The file could not be opened or read.
    #[error("failed to read `{}`", path.display())]
    Io {
        /// The package file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The file is not a well-formed .deb.
    #[error("`{}` is not a valid .deb", path.display())]
    Invalid {
        /// The package file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: DebFormatError,
    },
    /// A copy of the file could not be written.
    #[error("failed to write `{}`", path.display())]
    Write {
        /// The copy.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl DebError {
    /// The package file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            DebError::Io { path, .. }
            | DebError::Invalid { path, .. }
            | DebError::Write { path, .. } => path,
        }
    }
}

/// What is wrong with a .deb's content.
#[derive(Debug, thiserror::Error)]
pub enum DebFormatError {
    /// The file does not start with the `ar` magic.
    #[error("not an ar archive")]
    NotAnArchive,
    /// The file ends in the middle of something.
    #[error("truncated: the file ends inside {what}")]
    Truncated {
        /// What was being read.
        what: String,
    },
    /// An `ar` member header that a .deb cannot have.
    #[error("bad archive member header: {reason}")]
    BadMemberHeader {
        /// Why it was refused.
        reason: String,
    },
    /// A member .debs must have is missing.
    #[error("no `{member}` member")]
    MissingMember {
        /// The missing member.
        member: &'static str,
    },
    /// Members in an order dpkg refuses.
    #[error("unexpected member `{member}` {context}")]
    UnexpectedMember {
        /// The member found.
        member: String,
        /// Where it was found.
        context: &'static str,
    },
    /// `debian-binary` does not announce format 2.x.
    #[error("unsupported format version {found:?} in `debian-binary`")]
    BadFormatVersion {
        /// The member's content, lossily decoded.
        found: String,
    },
    /// A size claimed by the file exceeds what we accept.
    #[error("{what} claims {size} bytes, more than the limit of {limit}")]
    TooLarge {
        /// What claimed the size.
        what: String,
        /// The claimed size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The control tarball could not be decompressed or unpacked.
    #[error("corrupt `{member}`")]
    CorruptControl {
        /// The member name.
        member: String,
        /// The decoder's or tar reader's error.
        #[source]
        source: io::Error,
    },
    /// The data member could not be decompressed.
    #[error("corrupt `{member}`")]
    CorruptData {
        /// The member name.
        member: String,
        /// The decoder's error.
        #[source]
        source: io::Error,
    },
    /// The control tarball has no `./control` file.
    #[error("no `control` file in `{member}`")]
    NoControlFile {
        /// The member name.
        member: String,
    },
    /// The `control` file is not a valid stanza.
    #[error("malformed `control` file")]
    Control(#[source] ControlError),
    /// A field every package must have is missing.
    #[error("the `control` file has no `{field}` field")]
    MissingField {
        /// The missing field.
        field: &'static str,
    },
    /// Reading the bytes failed.
    #[error("read error")]
    Read(#[source] io::Error),
    /// Writing what was read elsewhere failed (see [`copy_with_plain_data`]).
    #[error("write error")]
    Write(#[source] io::Error),
}

/// Read buffer per package: most .debs are smaller, and a buffer under glibc's mmap threshold
/// (128 KiB) is recycled by malloc instead of being mapped and unmapped for every file.
const READ_BUFFER: usize = 64 << 10;

/// Fields without which an index entry is useless (apt drops such entries).
const REQUIRED_FIELDS: [&str; 3] = ["Package", "Version", "Architecture"];

/// Reads a .deb file: its `control` stanza, size and digests, in one pass over the file.
pub fn read_deb(path: &Path) -> Result<DebInfo, DebError> {
    read_deb_with_limits(path, &Limits::default())
}

/// [`read_deb`] with explicit size limits.
pub fn read_deb_with_limits(path: &Path, limits: &Limits) -> Result<DebInfo, DebError> {
    let file = File::open(path).map_err(|source| DebError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut hashing = HashingReader::new(file);
    let result = read_from(
        BufReader::with_capacity(READ_BUFFER, &mut hashing),
        limits,
        &mut IgnoreMembers,
    );
    match result {
        Ok(control) => {
            let hasher = hashing.into_hasher();
            Ok(DebInfo {
                control,
                size: hasher.len(),
                checksums: hasher.finish(),
            })
        }
        Err(DebFormatError::Read(source)) if hashing.source_failed() => Err(DebError::Io {
            path: path.to_owned(),
            source,
        }),
        Err(source) => Err(DebError::Invalid {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Parses a .deb held in memory and returns its `control` stanza; never panics on any input.
///
/// This is the fuzzing entry point: it runs the same code as [`read_deb`].
pub fn read_control_from_bytes(bytes: &[u8]) -> Result<Stanza, DebFormatError> {
    read_from(bytes, &Limits::default(), &mut IgnoreMembers)
}

/// Hears the members of a .deb while [`read_from`] checks its structure.
trait MemberSink {
    /// `debian-binary`, already checked.
    fn format(&mut self, content: &[u8]) -> Result<(), DebFormatError>;
    /// The control member as stored (compressed).
    fn control(&mut self, name: &str, content: &[u8]) -> Result<(), DebFormatError>;
    /// The data member; whatever the sink leaves unread is skipped.
    fn data(&mut self, name: &str, member: &mut dyn Read) -> Result<(), DebFormatError>;
}

/// The sink of an index, which needs only the control stanza.
struct IgnoreMembers;

impl MemberSink for IgnoreMembers {
    fn format(&mut self, _: &[u8]) -> Result<(), DebFormatError> {
        Ok(())
    }
    fn control(&mut self, _: &str, _: &[u8]) -> Result<(), DebFormatError> {
        Ok(())
    }
    fn data(&mut self, _: &str, _: &mut dyn Read) -> Result<(), DebFormatError> {
        Ok(())
    }
}

/// Walks the whole archive, so that a hashing reader under `input` sees every byte, hands the
/// members to `sink`, and returns the control stanza.
fn read_from(
    input: impl Read,
    limits: &Limits,
    sink: &mut dyn MemberSink,
) -> Result<Stanza, DebFormatError> {
    let mut archive = ArReader::new(input)?;

    let first = archive
        .next_member()?
        .ok_or(DebFormatError::MissingMember {
            member: "debian-binary",
        })?;
    if first.name != "debian-binary" {
        return Err(DebFormatError::UnexpectedMember {
            member: first.name,
            context: "where `debian-binary` must come first",
        });
    }
    sink.format(&check_format_version(&mut archive, first.size)?)?;

    let mut control = None;
    let mut have_data = false;
    while let Some(member) = archive.next_member()? {
        if let Some(compression) = member.name.strip_prefix("control.tar") {
            if control.is_some() || have_data {
                return Err(DebFormatError::UnexpectedMember {
                    member: member.name,
                    context: "after the control member",
                });
            }
            if member.size > limits.control_member {
                return Err(DebFormatError::TooLarge {
                    what: format!("member `{}`", member.name),
                    size: member.size,
                    limit: limits.control_member,
                });
            }
            // Grows with what is actually read (at most the size checked above), not with
            // what the header claims.
            let mut stored = Vec::with_capacity(member.size.min(READ_BUFFER as u64) as usize);
            archive
                .member()
                .read_to_end(&mut stored)
                .map_err(|err| truncation_or_read(err, &format!("member `{}`", member.name)))?;
            let stanza = read_control_member(&stored[..], &member.name, compression, limits)?;
            sink.control(&member.name, &stored)?;
            control = Some(stanza);
        } else if member.name.starts_with("data.tar") {
            if control.is_none() {
                return Err(DebFormatError::UnexpectedMember {
                    member: member.name,
                    context: "before the control member",
                });
            }
            if have_data {
                return Err(DebFormatError::UnexpectedMember {
                    member: member.name,
                    context: "after the data member",
                });
            }
            have_data = true;
            sink.data(&member.name, &mut archive.member())?;
        } else if !member.name.starts_with('_') && !have_data {
            // deb(5): only members starting with `_` may be added before the data member.
            return Err(DebFormatError::UnexpectedMember {
                member: member.name,
                context: "between the format and data members",
            });
        }
    }
    let control = control.ok_or(DebFormatError::MissingMember {
        member: "control.tar",
    })?;
    if !have_data {
        return Err(DebFormatError::MissingMember { member: "data.tar" });
    }
    archive.drain_trailing()?;
    for field in REQUIRED_FIELDS {
        if control.get(field).is_none_or(str::is_empty) {
            return Err(DebFormatError::MissingField { field });
        }
    }
    Ok(control)
}

/// Reads and checks `debian-binary`, returning its content.
fn check_format_version<R: Read>(
    archive: &mut ArReader<R>,
    size: u64,
) -> Result<Vec<u8>, DebFormatError> {
    const MAX: u64 = 64;
    if size > MAX {
        return Err(DebFormatError::TooLarge {
            what: "member `debian-binary`".to_owned(),
            size,
            limit: MAX,
        });
    }
    let mut content = Vec::with_capacity(MAX as usize);
    archive
        .member()
        .read_to_end(&mut content)
        .map_err(|err| truncation_or_read(err, "member `debian-binary`"))?;
    // dpkg accepts any 2.x; the version line ends with a newline.
    if !content.starts_with(b"2.") || !content.ends_with(b"\n") {
        return Err(DebFormatError::BadFormatVersion {
            found: String::from_utf8_lossy(&content).into_owned(),
        });
    }
    Ok(content)
}

fn truncation_or_read(err: io::Error, what: &str) -> DebFormatError {
    if err.kind() == io::ErrorKind::UnexpectedEof {
        DebFormatError::Truncated {
            what: what.to_owned(),
        }
    } else {
        DebFormatError::Read(err)
    }
}

/// Decompresses a control member and returns its `control` stanza.
fn read_control_member(
    member: impl Read,
    name: &str,
    compression: &str,
    limits: &Limits,
) -> Result<Stanza, DebFormatError> {
    let decoder: Box<dyn Read + '_> = match compression {
        "" => Box::new(member),
        ".gz" => Box::new(flate2::read::GzDecoder::new(member)),
        ".xz" => Box::new(liblzma::read::XzDecoder::new(member)),
        ".zst" => Box::new(zstd::stream::read::Decoder::new(member).map_err(|source| {
            DebFormatError::CorruptControl {
                member: name.to_owned(),
                source,
            }
        })?),
        _ => {
            return Err(DebFormatError::UnexpectedMember {
                member: name.to_owned(),
                context: "(unknown compression)",
            });
        }
    };
    let limited = CappedReader {
        inner: decoder,
        left: limits.control_tar,
        limit: limits.control_tar,
    };
    let corrupt = |source: io::Error| {
        if let Some(over) = source
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<OverLimit>())
        {
            return DebFormatError::TooLarge {
                what: format!("decompressed `{name}`"),
                size: over.0,
                limit: over.0,
            };
        }
        if source.kind() == io::ErrorKind::UnexpectedEof {
            return DebFormatError::Truncated {
                what: format!("member `{name}`"),
            };
        }
        DebFormatError::CorruptControl {
            member: name.to_owned(),
            source,
        }
    };
    let mut tar = tar::Archive::new(limited);
    for entry in tar.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let is_control = {
            let path = entry.path_bytes();
            let path = path.strip_prefix(b"./").unwrap_or(&path);
            path == b"control"
        };
        if !is_control {
            continue;
        }
        if !entry.header().entry_type().is_file() {
            return Err(DebFormatError::NoControlFile {
                member: name.to_owned(),
            });
        }
        let size = entry.size();
        if size > limits.control_file {
            return Err(DebFormatError::TooLarge {
                what: format!("`control` in `{name}`"),
                size,
                limit: limits.control_file,
            });
        }
        // Bounded by the check above, so the allocation is too.
        let mut bytes = Vec::with_capacity(size as usize);
        entry.read_to_end(&mut bytes).map_err(corrupt)?;
        return Stanza::parse_bytes(&bytes).map_err(DebFormatError::Control);
    }
    Err(DebFormatError::NoControlFile {
        member: name.to_owned(),
    })
}

/// Marker error for [`CappedReader`]: the decompressed data exceeded the limit.
#[derive(Debug)]
struct OverLimit(u64);

impl std::fmt::Display for OverLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "more than {} bytes", self.0)
    }
}

impl std::error::Error for OverLimit {}

/// Fails once more than `limit` bytes were read: a defence against decompression bombs.
struct CappedReader<R> {
    inner: R,
    left: u64,
    limit: u64,
}

impl<R: Read> Read for CappedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let got = self.inner.read(buf)?;
        if got as u64 > self.left {
            return Err(io::Error::other(OverLimit(self.limit)));
        }
        self.left -= got as u64;
        Ok(got)
    }
}
