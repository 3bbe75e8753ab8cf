//! A strict reader for the `ar` container that holds a .deb's members.
//!
//! A .deb is a plain `ar` archive (see deb(5)): an 8-byte magic, then members, each behind a
//! 60-byte text header naming it and giving its decimal size, padded to an even length.
//! We read it ourselves rather than with a general `ar` library because such libraries also
//! accept GNU and BSD long-name tables whose claimed sizes they allocate before checking them;
//! a .deb never uses those, so refusing them removes a whole class of hostile input. The reader
//! is sequential: members are skipped by reading through them, so every byte of the file passes
//! the caller's reader (which hashes it).

use std::io::{self, Read};

use super::DebFormatError;

const MAGIC: &[u8; 8] = b"!<arch>\n";
const HEADER_LEN: usize = 60;

/// Longest member name accepted; dpkg's own names are at most 15 bytes (`control.tar.zst`).
const MAX_NAME_LEN: usize = 16;

/// One member's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemberHeader {
    /// The member name without padding or the GNU-style trailing `/`.
    pub name: String,
    /// The member's size in bytes as the header claims it.
    pub size: u64,
}

/// Sequential reader over the members of an `ar` archive.
pub(crate) struct ArReader<R> {
    inner: R,
    /// Bytes of the current member not yet consumed.
    remaining: u64,
    /// Whether the current member is followed by one padding byte.
    padded: bool,
}

impl<R: Read> ArReader<R> {
    /// Checks the archive magic and positions the reader before the first member.
    pub(crate) fn new(mut inner: R) -> Result<Self, DebFormatError> {
        let mut magic = [0u8; 8];
        let got = read_full(&mut inner, &mut magic).map_err(DebFormatError::Read)?;
        if got < magic.len() || &magic != MAGIC {
            return Err(DebFormatError::NotAnArchive);
        }
        Ok(ArReader {
            inner,
            remaining: 0,
            padded: false,
        })
    }

    /// Skips what is left of the current member and reads the next header; `None` at the end.
    pub(crate) fn next_member(&mut self) -> Result<Option<MemberHeader>, DebFormatError> {
        self.skip_rest()?;
        let mut header = [0u8; HEADER_LEN];
        let got = read_full(&mut self.inner, &mut header).map_err(DebFormatError::Read)?;
        if got == 0 {
            return Ok(None);
        }
        if got < HEADER_LEN {
            return Err(DebFormatError::Truncated {
                what: "an archive member header".to_owned(),
            });
        }
        if &header[58..60] != b"`\n" {
            return Err(DebFormatError::BadMemberHeader {
                reason: "missing the header terminator".to_owned(),
            });
        }
        let name = parse_name(&header[0..16])?;
        let size = parse_size(&header[48..58])?;
        self.remaining = size;
        self.padded = size % 2 == 1;
        Ok(Some(MemberHeader { name, size }))
    }

    /// A reader over the current member's content, ending at the member's end.
    pub(crate) fn member(&mut self) -> MemberReader<'_, R> {
        MemberReader { archive: self }
    }

    /// Reads everything after the last member (there should be nothing) and returns its length.
    pub(crate) fn drain_trailing(&mut self) -> Result<u64, DebFormatError> {
        self.skip_rest()?;
        io::copy(&mut self.inner, &mut io::sink()).map_err(DebFormatError::Read)
    }

    fn skip_rest(&mut self) -> Result<(), DebFormatError> {
        if self.remaining > 0 {
            let want = self.remaining;
            let copied = io::copy(&mut (&mut self.inner).take(want), &mut io::sink())
                .map_err(DebFormatError::Read)?;
            if copied < want {
                return Err(DebFormatError::Truncated {
                    what: "an archive member".to_owned(),
                });
            }
            self.remaining = 0;
        }
        if self.padded {
            self.padded = false;
            let mut pad = [0u8; 1];
            // A missing final padding byte is tolerated: some writers omit it at the very end.
            read_full(&mut self.inner, &mut pad).map_err(DebFormatError::Read)?;
        }
        Ok(())
    }
}

/// Reader over one member's content; see [`ArReader::member`].
pub(crate) struct MemberReader<'a, R> {
    archive: &'a mut ArReader<R>,
}

impl<R: Read> Read for MemberReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.archive.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let limit = usize::try_from(self.archive.remaining)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let got = self.archive.inner.read(&mut buf[..limit])?;
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the archive member ends early",
            ));
        }
        self.archive.remaining -= got as u64;
        Ok(got)
    }
}

/// Reads until `buf` is full or the input ends; returns the number of bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

fn parse_name(field: &[u8]) -> Result<String, DebFormatError> {
    let trimmed = trim_trailing_spaces(field);
    let name = trimmed.strip_suffix(b"/").unwrap_or(trimmed);
    let printable = name.iter().all(|b| b.is_ascii_graphic());
    if name.is_empty() || name.len() > MAX_NAME_LEN || !printable || name.starts_with(b"/") {
        return Err(DebFormatError::BadMemberHeader {
            reason: format!(
                "unsupported member name {:?}",
                String::from_utf8_lossy(trimmed)
            ),
        });
    }
    // All bytes are ASCII graphic characters, so this conversion is lossless.
    Ok(String::from_utf8_lossy(name).into_owned())
}

fn parse_size(field: &[u8]) -> Result<u64, DebFormatError> {
    let digits = trim_trailing_spaces(field);
    let bad = || DebFormatError::BadMemberHeader {
        reason: format!(
            "bad member size {:?}",
            String::from_utf8_lossy(field).trim_end()
        ),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    // At most 10 decimal digits: always fits in a u64.
    digits
        .iter()
        .try_fold(0u64, |acc, d| {
            acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .ok_or_else(bad)
}

fn trim_trailing_spaces(field: &[u8]) -> &[u8] {
    let end = field.iter().rposition(|&b| b != b' ').map_or(0, |i| i + 1);
    &field[..end]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn member(name: &str, content: &[u8]) -> Vec<u8> {
        let mut out = format!(
            "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
            name,
            0,
            0,
            0,
            100644,
            content.len()
        )
        .into_bytes();
        out.extend_from_slice(content);
        if content.len() % 2 == 1 {
            out.push(b'\n');
        }
        out
    }

    #[test]
    fn reads_members_in_order_and_skips_unread_content() {
        let mut bytes = MAGIC.to_vec();
        bytes.extend(member("debian-binary", b"2.0\n"));
        bytes.extend(member("odd/", b"abc"));
        bytes.extend(member("last", b"xy"));
        let mut ar = ArReader::new(&bytes[..]).unwrap();
        let first = ar.next_member().unwrap().unwrap();
        assert_eq!(first.name, "debian-binary");
        let mut content = Vec::new();
        ar.member().read_to_end(&mut content).unwrap();
        assert_eq!(content, b"2.0\n");
        assert_eq!(ar.next_member().unwrap().unwrap().name, "odd");
        let last = ar.next_member().unwrap().unwrap();
        assert_eq!((last.name.as_str(), last.size), ("last", 2));
        assert!(ar.next_member().unwrap().is_none());
    }

    #[test]
    fn refuses_long_name_tables_and_bad_sizes() {
        let mut bytes = MAGIC.to_vec();
        bytes.extend(member("//", b"x"));
        let mut ar = ArReader::new(&bytes[..]).unwrap();
        assert!(matches!(
            ar.next_member(),
            Err(DebFormatError::BadMemberHeader { .. })
        ));

        let mut bytes = MAGIC.to_vec();
        let mut header = member("control.tar", b"");
        header[48..58].copy_from_slice(b"12x4      ");
        bytes.extend(header);
        let mut ar = ArReader::new(&bytes[..]).unwrap();
        assert!(ar.next_member().is_err());
    }

    #[test]
    fn reports_truncation() {
        let mut bytes = MAGIC.to_vec();
        bytes.extend(member("data.tar", b"0123456789"));
        bytes.truncate(bytes.len() - 4);
        let mut ar = ArReader::new(&bytes[..]).unwrap();
        ar.next_member().unwrap().unwrap();
        assert!(matches!(
            ar.next_member(),
            Err(DebFormatError::Truncated { .. })
        ));
        assert!(matches!(
            ArReader::new(&b"!<ar"[..]),
            Err(DebFormatError::NotAnArchive)
        ));
    }
}
