//! deb822 stanzas: the `Field: value` paragraphs of a .deb's `control` file and of `Packages`.
//!
//! Values are kept exactly as written (the text after the colon, continuation lines included,
//! trailing whitespace dropped) because apt-ftparchive copies them byte for byte into
//! `Packages`; field order is kept too. Lookups ignore ASCII case, as dpkg and apt do.
//! See deb822(5).

use std::fmt;
use std::io::{BufRead, Read};

/// Why a stanza could not be parsed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ControlError {
    /// A line that is neither `Name: value` nor a continuation line.
    #[error("line {line}: expected `Field: value`")]
    NotAField {
        /// 1-based line number within the parsed text.
        line: usize,
    },
    /// A continuation line (starting with a space or tab) before any field.
    #[error("line {line}: continuation line before the first field")]
    OrphanContinuation {
        /// 1-based line number within the parsed text.
        line: usize,
    },
    /// A field name with characters deb822 does not allow.
    #[error("line {line}: invalid field name {name:?}")]
    BadFieldName {
        /// 1-based line number within the parsed text.
        line: usize,
        /// The offending name.
        name: String,
    },
    /// The same field twice in one stanza.
    #[error("line {line}: duplicate field `{name}`")]
    DuplicateField {
        /// 1-based line number within the parsed text.
        line: usize,
        /// The repeated field name.
        name: String,
    },
    /// A control file holding more than one stanza.
    #[error("line {line}: more than one stanza")]
    ExtraStanza {
        /// 1-based line number where the second stanza starts.
        line: usize,
    },
    /// No fields at all.
    #[error("no fields")]
    Empty,
    /// The text is not UTF-8.
    #[error("not valid UTF-8")]
    NotUtf8,
    /// A stanza longer than [`MAX_STANZA`] bytes (see [`StanzaReader`]).
    #[error("line {line}: a stanza longer than {limit} bytes")]
    StanzaTooLarge {
        /// 1-based line number where the stanza starts.
        line: usize,
        /// The limit.
        limit: usize,
    },
    /// Reading the underlying stream failed.
    #[error("failed to read")]
    Read(#[source] std::sync::Arc<std::io::Error>),
}

/// One field of a stanza.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    name: String,
    raw: String,
}

impl Field {
    /// Creates a field; `raw` is the text after the colon as it should be written (a leading
    /// space is added on output unless `raw` starts with whitespace).
    pub fn new(name: impl Into<String>, raw: impl Into<String>) -> Field {
        Field {
            name: name.into(),
            raw: raw.into(),
        }
    }

    /// The field name as written.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The value exactly as written after the colon, continuation lines included, trailing
    /// whitespace removed.
    pub fn raw_value(&self) -> &str {
        &self.raw
    }

    /// The value with leading and trailing whitespace removed (apt's `Find`).
    pub fn value(&self) -> &str {
        self.raw.trim_matches(is_deb822_space)
    }

    /// Appends `Name: value\n` the way apt writes a field.
    pub fn write_to(&self, out: &mut String) {
        write_field(out, &self.name, &self.raw);
    }
}

/// Appends one field as apt's tag writer does: `Name:` then a space unless the value already
/// starts with whitespace (a multi-line value with an empty first line keeps its newline).
pub(crate) fn write_field(out: &mut String, name: &str, raw: &str) {
    out.push_str(name);
    if raw.starts_with(is_deb822_space) || raw.is_empty() {
        out.push(':');
    } else {
        out.push_str(": ");
    }
    out.push_str(raw);
    out.push('\n');
}

fn is_deb822_space(c: char) -> bool {
    c == ' ' || c == '\t' || c == '\n' || c == '\r'
}

/// A deb822 paragraph: fields in their original order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stanza {
    fields: Vec<Field>,
}

impl Stanza {
    /// Parses text holding exactly one stanza (blank lines around it are allowed), as in a
    /// .deb's `control` file.
    pub fn parse(text: &str) -> Result<Stanza, ControlError> {
        let mut lines = text.split_inclusive('\n').enumerate().peekable();
        let stanza = parse_one(&mut lines)?.ok_or(ControlError::Empty)?;
        for (index, line) in lines {
            if !is_blank(line) {
                return Err(ControlError::ExtraStanza { line: index + 1 });
            }
        }
        Ok(stanza)
    }

    /// Parses bytes holding exactly one stanza; see [`Stanza::parse`].
    pub fn parse_bytes(bytes: &[u8]) -> Result<Stanza, ControlError> {
        let text = std::str::from_utf8(bytes).map_err(|_| ControlError::NotUtf8)?;
        Stanza::parse(text)
    }

    /// Builds a stanza from fields (no checks).
    pub fn from_fields(fields: Vec<Field>) -> Stanza {
        Stanza { fields }
    }

    /// The fields in order.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// The trimmed value of the field `name` (ASCII case ignored).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.field(name).map(Field::value)
    }

    /// The field `name` (ASCII case ignored).
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
    }

    /// Appends the fields as `Name: value` lines (no blank line after them).
    pub fn write_to(&self, out: &mut String) {
        for field in &self.fields {
            field.write_to(out);
        }
    }
}

impl fmt::Display for Stanza {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        self.write_to(&mut out);
        f.write_str(&out)
    }
}

fn is_blank(line: &str) -> bool {
    line.trim_matches(|c| c == '\n' || c == '\r').is_empty()
}

/// Parses the next stanza from numbered lines, skipping blank lines before it; `None` when
/// only blank lines remain.
fn parse_one<'a, I>(lines: &mut std::iter::Peekable<I>) -> Result<Option<Stanza>, ControlError>
where
    I: Iterator<Item = (usize, &'a str)>,
{
    let mut fields: Vec<Field> = Vec::new();
    for (index, line) in lines.by_ref() {
        let number = index + 1;
        if is_blank(line) {
            if fields.is_empty() {
                continue;
            }
            break;
        }
        if line.starts_with([' ', '\t']) {
            let Some(last) = fields.last_mut() else {
                return Err(ControlError::OrphanContinuation { line: number });
            };
            last.raw.push('\n');
            last.raw.push_str(line.strip_suffix('\n').unwrap_or(line));
            continue;
        }
        let Some((name, rest)) = line.split_once(':') else {
            return Err(ControlError::NotAField { line: number });
        };
        if !is_valid_field_name(name) {
            return Err(ControlError::BadFieldName {
                line: number,
                name: name.to_owned(),
            });
        }
        if fields.iter().any(|f| f.name.eq_ignore_ascii_case(name)) {
            return Err(ControlError::DuplicateField {
                line: number,
                name: name.to_owned(),
            });
        }
        fields.push(Field {
            name: name.to_owned(),
            raw: rest.strip_suffix('\n').unwrap_or(rest).to_owned(),
        });
    }
    // Like apt, keep whitespace inside a multi-line value and trim only the end of the whole.
    for field in &mut fields {
        let trimmed = field.raw.trim_end_matches(is_deb822_space).len();
        field.raw.truncate(trimmed);
    }
    Ok((!fields.is_empty()).then_some(Stanza { fields }))
}

/// deb822(5): printable US-ASCII except colon, not starting with `#` or `-`.
fn is_valid_field_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(['#', '-'])
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

/// The longest stanza [`StanzaReader`] accepts. The largest real ones (a `Packages` entry
/// with a long description, `Conffiles` or `Provides`) are tens of KiB.
pub const MAX_STANZA: usize = 16 << 20;

/// Reads the stanzas of a `Packages`-style file one at a time, without loading it whole.
///
/// A stanza, and so each of its lines, is refused past [`MAX_STANZA`] bytes: the file may come
/// from another server, and one line of a few GiB (a decompression bomb of zeros has no line
/// ends at all) must not be read into memory whole.
pub struct StanzaReader<R> {
    input: R,
    line_number: usize,
    buffer: String,
    done: bool,
}

impl<R: BufRead> StanzaReader<R> {
    /// Reads stanzas from `input`.
    pub fn new(input: R) -> Self {
        StanzaReader {
            input,
            line_number: 0,
            buffer: String::new(),
            done: false,
        }
    }

    fn next_stanza(&mut self) -> Result<Option<Stanza>, ControlError> {
        // Collect the lines of one paragraph, then parse them; line numbers stay file-relative.
        self.buffer.clear();
        let mut first_line = 0;
        let mut raw = Vec::new();
        loop {
            raw.clear();
            // Two bytes more than may still come: room for a blank `\r\n` line that ends a
            // stanza of exactly the limit, and for telling a longer line.
            let left = MAX_STANZA - self.buffer.len();
            let got = (&mut self.input)
                .take(left as u64 + 2)
                .read_until(b'\n', &mut raw)
                .map_err(|err| ControlError::Read(std::sync::Arc::new(err)))?;
            if got == 0 {
                break;
            }
            self.line_number += 1;
            if got > left && !raw.iter().all(|b| matches!(b, b'\r' | b'\n')) {
                return Err(ControlError::StanzaTooLarge {
                    line: if self.buffer.is_empty() {
                        self.line_number
                    } else {
                        first_line
                    },
                    limit: MAX_STANZA,
                });
            }
            let line = std::str::from_utf8(&raw).map_err(|_| ControlError::NotUtf8)?;
            if is_blank(line) {
                if self.buffer.is_empty() {
                    continue;
                }
                break;
            }
            if self.buffer.is_empty() {
                first_line = self.line_number;
            }
            self.buffer.push_str(line);
        }
        if self.buffer.is_empty() {
            return Ok(None);
        }
        let mut lines = self
            .buffer
            .split_inclusive('\n')
            .enumerate()
            .map(|(i, l)| (i + first_line - 1, l))
            .peekable();
        parse_one(&mut lines)
    }
}

impl<R: BufRead> Iterator for StanzaReader<R> {
    type Item = Result<Stanza, ControlError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_stanza() {
            Ok(Some(stanza)) => Some(Ok(stanza)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(err) => {
                self.done = true;
                Some(Err(err))
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_raw_values_and_continuations() {
        let text = "Package:  foo\nVersion: 1.0\nDescription: short\n line one\n .\n line three  \nX-Custom:zz\n\n";
        let stanza = Stanza::parse(text).unwrap();
        let names: Vec<_> = stanza.fields().iter().map(Field::name).collect();
        assert_eq!(names, ["Package", "Version", "Description", "X-Custom"]);
        assert_eq!(stanza.field("package").unwrap().raw_value(), "  foo");
        assert_eq!(stanza.get("PACKAGE"), Some("foo"));
        assert_eq!(
            stanza.get("description"),
            Some("short\n line one\n .\n line three")
        );
        let mut out = String::new();
        stanza.write_to(&mut out);
        assert_eq!(
            out,
            "Package:  foo\nVersion: 1.0\nDescription: short\n line one\n .\n line three\nX-Custom: zz\n"
        );
    }

    #[test]
    fn multi_line_value_with_empty_first_line() {
        let stanza = Stanza::parse("Package: a\nConffiles:\n /etc/a 123\n").unwrap();
        let mut out = String::new();
        stanza.write_to(&mut out);
        assert_eq!(out, "Package: a\nConffiles:\n /etc/a 123\n");
    }

    #[test]
    fn rejects_malformed_stanzas() {
        assert!(matches!(
            Stanza::parse(" orphan\n"),
            Err(ControlError::OrphanContinuation { line: 1 })
        ));
        assert!(matches!(
            Stanza::parse("Package: a\nno colon\n"),
            Err(ControlError::NotAField { line: 2 })
        ));
        assert!(matches!(
            Stanza::parse("Package: a\npackage: b\n"),
            Err(ControlError::DuplicateField { line: 2, .. })
        ));
        assert!(matches!(
            Stanza::parse("Package: a\n\nPackage: b\n"),
            Err(ControlError::ExtraStanza { line: 3 })
        ));
        assert!(matches!(Stanza::parse("\n\n"), Err(ControlError::Empty)));
        assert!(matches!(
            Stanza::parse_bytes(b"P: \xff\n"),
            Err(ControlError::NotUtf8)
        ));
    }

    #[test]
    fn reads_many_stanzas() {
        let text = "\nPackage: a\nVersion: 1\n\n\nPackage: b\nDescription: x\n y\n";
        let stanzas: Vec<_> = StanzaReader::new(text.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(stanzas.len(), 2);
        assert_eq!(stanzas[1].get("description"), Some("x\n y"));
        let err = StanzaReader::new("Package: a\n\nbad line\n".as_bytes())
            .nth(1)
            .unwrap();
        assert!(matches!(err, Err(ControlError::NotAField { line: 3 })));
    }

    #[test]
    fn refuses_a_stanza_past_the_limit_without_reading_it_whole() {
        // Exactly the limit is fine.
        let value = "a".repeat(MAX_STANZA - "X: \n".len());
        let text = format!("X: {value}\n\nY: b\n");
        let stanzas: Vec<_> = StanzaReader::new(text.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(stanzas.len(), 2);
        // One byte more is not, in one line or spread over several.
        let text = format!("A: 1\n\nX: {value}b\n");
        let err = StanzaReader::new(text.as_bytes()).nth(1).unwrap();
        assert!(matches!(
            err,
            Err(ControlError::StanzaTooLarge { line: 3, .. })
        ));
        let text = format!("X: {value}\nY: 1\n");
        let err = StanzaReader::new(text.as_bytes()).next().unwrap();
        assert!(matches!(
            err,
            Err(ControlError::StanzaTooLarge { line: 1, .. })
        ));
        // An endless line stops at the limit: the reader asks for at most one byte more.
        let mut endless = std::io::BufReader::new(std::io::repeat(0));
        let err = StanzaReader::new(&mut endless).next().unwrap();
        assert!(matches!(err, Err(ControlError::StanzaTooLarge { .. })));
    }
}
