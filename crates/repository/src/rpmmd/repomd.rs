//! `repomd.xml`: the index of a `repodata/` directory, written last and read first by clients.

use std::fmt::Write as _;

use quick_xml::Reader;
use quick_xml::events::Event;

/// One `<data>` entry of repomd.xml.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepomdRecord {
    /// `primary`, `filelists`, `other`, `primary_db`, …
    pub kind: String,
    /// Checksum algorithm, e.g. `sha256`.
    pub checksum_type: String,
    /// Checksum of the file as stored.
    pub checksum: String,
    /// Checksum of the uncompressed content.
    pub open_checksum: Option<String>,
    /// Location relative to the repository root, e.g. `repodata/…-primary.xml.gz`.
    pub href: String,
    /// Time stamp (seconds).
    pub timestamp: i64,
    /// Size as stored.
    pub size: u64,
    /// Uncompressed size.
    pub open_size: Option<u64>,
    /// Schema version, for the sqlite databases.
    pub database_version: Option<u32>,
}

/// Parsed repomd.xml.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Repomd {
    /// The revision (vrepo and createrepo_c write a time stamp).
    pub revision: String,
    /// The data entries.
    pub records: Vec<RepomdRecord>,
}

/// repomd.xml is not what it should be.
#[derive(Debug, thiserror::Error)]
#[error("malformed repomd.xml: {reason}")]
pub struct RepomdError {
    reason: String,
}

impl Repomd {
    /// The entry of type `kind`.
    pub fn record(&self, kind: &str) -> Option<&RepomdRecord> {
        self.records.iter().find(|r| r.kind == kind)
    }

    /// Renders the document.
    pub fn to_xml(&self) -> String {
        let mut out = String::from(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<repomd xmlns=\"http://linux.duke.edu/metadata/repo\" xmlns:rpm=\"http://linux.duke.edu/metadata/rpm\">\n",
        );
        let _ = writeln!(out, "  <revision>{}</revision>", self.revision);
        for r in &self.records {
            let _ = writeln!(out, "  <data type=\"{}\">", r.kind);
            let _ = writeln!(
                out,
                "    <checksum type=\"{}\">{}</checksum>",
                r.checksum_type, r.checksum
            );
            if let Some(open) = &r.open_checksum {
                let _ = writeln!(
                    out,
                    "    <open-checksum type=\"{}\">{open}</open-checksum>",
                    r.checksum_type
                );
            }
            let _ = writeln!(out, "    <location href=\"{}\"/>", r.href);
            let _ = writeln!(out, "    <timestamp>{}</timestamp>", r.timestamp);
            let _ = writeln!(out, "    <size>{}</size>", r.size);
            if let Some(open) = r.open_size {
                let _ = writeln!(out, "    <open-size>{open}</open-size>");
            }
            if let Some(version) = r.database_version {
                let _ = writeln!(out, "    <database_version>{version}</database_version>");
            }
            out.push_str("  </data>\n");
        }
        out.push_str("</repomd>\n");
        out
    }

    /// Parses a repomd.xml document.
    pub fn parse(xml: &[u8]) -> Result<Repomd, RepomdError> {
        let err = |reason: String| RepomdError { reason };
        let mut reader = Reader::from_reader(xml);
        let mut buf = Vec::new();
        let mut repomd = Repomd::default();
        let mut current: Option<RepomdRecord> = None;
        let mut text_of: Option<Vec<u8>> = None;
        let mut seen_root = false;
        loop {
            let event = reader
                .read_event_into(&mut buf)
                .map_err(|e| err(e.to_string()))?;
            match event {
                Event::Start(e) | Event::Empty(e) => {
                    let name = e.local_name().as_ref().to_vec();
                    let attr = |key: &[u8]| -> Result<Option<String>, RepomdError> {
                        for a in e.attributes() {
                            let a = a.map_err(|x| err(x.to_string()))?;
                            if a.key.local_name().as_ref() == key {
                                let v = a.unescape_value().map_err(|x| err(x.to_string()))?;
                                return Ok(Some(v.into_owned()));
                            }
                        }
                        Ok(None)
                    };
                    match name.as_slice() {
                        b"repomd" => seen_root = true,
                        b"data" => {
                            current = Some(RepomdRecord {
                                kind: attr(b"type")?.unwrap_or_default(),
                                ..RepomdRecord::default()
                            });
                        }
                        b"location" => {
                            if let Some(r) = current.as_mut() {
                                r.href = attr(b"href")?
                                    .ok_or_else(|| err("location without href".into()))?;
                            }
                        }
                        b"checksum" => {
                            if let Some(r) = current.as_mut() {
                                r.checksum_type = attr(b"type")?.unwrap_or_default();
                            }
                            text_of = Some(name);
                        }
                        _ => text_of = Some(name),
                    }
                }
                Event::Text(t) => {
                    let Some(tag) = &text_of else { continue };
                    let value = t
                        .decode()
                        .map_err(|e| err(e.to_string()))?
                        .trim()
                        .to_owned();
                    match (tag.as_slice(), current.as_mut()) {
                        (b"revision", _) => repomd.revision = value,
                        (b"checksum", Some(r)) => r.checksum = value,
                        (b"open-checksum", Some(r)) => r.open_checksum = Some(value),
                        (b"timestamp", Some(r)) => r.timestamp = value.parse().unwrap_or(0),
                        (b"size", Some(r)) => {
                            r.size = value
                                .parse()
                                .map_err(|_| err(format!("bad size `{value}`")))?;
                        }
                        (b"open-size", Some(r)) => r.open_size = value.parse().ok(),
                        (b"database_version", Some(r)) => {
                            r.database_version = value.parse().ok();
                        }
                        _ => {}
                    }
                }
                Event::End(e) => {
                    text_of = None;
                    if e.local_name().as_ref() == b"data" {
                        repomd.records.extend(current.take());
                    }
                }
                Event::Eof => break,
                _ => {}
            }
            buf.clear();
        }
        if !seen_root {
            return Err(err("no <repomd> element".into()));
        }
        Ok(repomd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let repomd = Repomd {
            revision: "1700000000".into(),
            records: vec![RepomdRecord {
                kind: "primary".into(),
                checksum_type: "sha256".into(),
                checksum: "ab".repeat(32),
                open_checksum: Some("cd".repeat(32)),
                href: "repodata/x-primary.xml.gz".into(),
                timestamp: 1_700_000_000,
                size: 10,
                open_size: Some(20),
                database_version: None,
            }],
        };
        let parsed = Repomd::parse(repomd.to_xml().as_bytes()).unwrap();
        assert_eq!(parsed, repomd);
    }

    #[test]
    fn rejects_other_documents() {
        assert!(Repomd::parse(b"<html></html>").is_err());
        assert!(
            Repomd::parse(b"<repomd><data type=\"x\"><size>nan</size></data></repomd>").is_err()
        );
    }
}
