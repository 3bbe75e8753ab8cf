//! Reading primary, filelists and other XML back into [`Package`] records.
//!
//! Used to compare with other producers, by `--update` and by the mirror. The readers stream:
//! each package is handed to a callback as soon as its element closes.
//!
//! # Bounded memory
//!
//! The mirror reads metadata another server wrote, so streaming alone is not enough: quick-xml
//! buffers a whole event (a tag, or a run of text up to the next `<`) before returning it, and
//! a package's lists grow until the package closes. A file of zeros would be one text event
//! as large as the file. So the readers refuse an event or the text of an element longer than
//! 16 MiB, and a package element longer than 16 MiB in primary (64 MiB in filelists): memory
//! stays bounded by those limits whatever the size of the file (which the mirror caps too, see
//! [`crate::compress::Compression::open_capped`]).

use std::collections::HashMap;
use std::io::{self, BufRead, Read};
use std::path::{Path, PathBuf};

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use super::model::{ChangelogEntry, Dependency, FileKind, Package, PackageFile};
use super::repomd::Repomd;
use crate::compress::Compression;

/// Metadata that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A file could not be opened or read.
    #[error("cannot read `{path}`")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The XML is malformed or not the expected document.
    #[error("malformed metadata: {0}")]
    Malformed(String),
}

fn malformed(e: impl std::fmt::Display) -> ReadError {
    ReadError::Malformed(e.to_string())
}

/// What the readers accept; see the module documentation.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// The longest XML event: the largest real ones (a description, a changelog entry, a
    /// `<package>` tag of filelists with its attributes) are a few KiB.
    event: u64,
    /// The most text one element may gather from several text, CDATA and reference events.
    text: usize,
    /// The longest `<package>` element. Its lists are built before the package is handed on,
    /// at up to eight times the size of their XML (a 22-byte `<rpm:entry name="a"/>` becomes a
    /// [`Dependency`] of about 150 bytes).
    package: u64,
}

/// For primary.xml, the file the mirror reads. Its largest real packages (thousands of
/// Provides) take about 1 MiB; 16 MiB keeps one package below about 130 MiB of memory.
const PRIMARY_LIMITS: Limits = Limits {
    event: 16 << 20,
    text: 16 << 20,
    package: 16 << 20,
};

/// For filelists.xml and other.xml, read only from local repositories: a package with
/// 100,000 files takes about 10 MiB of filelists.
const CHILDREN_LIMITS: Limits = Limits {
    package: 64 << 20,
    ..PRIMARY_LIMITS
};

/// Passes on at most `limit` bytes per event: [`Items`] calls [`EventBudget::reset`] after each
/// event, and a read beyond the limit fails, so quick-xml's event buffer cannot grow past it.
struct EventBudget<R> {
    inner: R,
    used: u64,
    limit: u64,
    exhausted: bool,
}

impl<R: BufRead> EventBudget<R> {
    fn reset(&mut self) {
        self.used = 0;
    }
}

impl<R: BufRead> Read for EventBudget<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for EventBudget<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let left = self.limit.saturating_sub(self.used);
        let available = self.inner.fill_buf()?;
        if left == 0 && !available.is_empty() {
            self.exhausted = true;
            return Err(io::Error::other(format!(
                "an XML tag or text longer than {} bytes",
                self.limit
            )));
        }
        let n = available
            .len()
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        Ok(&available[..n])
    }

    fn consume(&mut self, amount: usize) {
        self.used += amount as u64;
        self.inner.consume(amount);
    }
}

fn attrs(e: &BytesStart<'_>) -> Result<HashMap<Vec<u8>, String>, ReadError> {
    let mut map = HashMap::new();
    for a in e.attributes() {
        let a = a.map_err(malformed)?;
        let value = a.unescape_value().map_err(malformed)?.into_owned();
        map.insert(a.key.as_ref().to_vec(), value);
    }
    Ok(map)
}

/// The element events of a document, with text already unescaped and joined.
enum Item {
    Open(Vec<u8>, HashMap<Vec<u8>, String>),
    Close(Vec<u8>, String),
}

struct Items<R: BufRead> {
    reader: Reader<EventBudget<R>>,
    limits: Limits,
    buf: Vec<u8>,
    text: String,
    pending_close: Option<Vec<u8>>,
}

impl<R: BufRead> Items<R> {
    fn new(input: R, limits: Limits) -> Self {
        Items {
            reader: Reader::from_reader(EventBudget {
                inner: input,
                used: 0,
                limit: limits.event,
                exhausted: false,
            }),
            limits,
            buf: Vec::new(),
            text: String::new(),
            pending_close: None,
        }
    }

    /// Bytes read so far.
    fn position(&self) -> u64 {
        self.reader.buffer_position()
    }

    fn next(&mut self) -> Result<Option<Item>, ReadError> {
        if let Some(name) = self.pending_close.take() {
            return Ok(Some(Item::Close(name, String::new())));
        }
        loop {
            if self.text.len() > self.limits.text {
                return Err(malformed(format!(
                    "an element with more than {} bytes of text",
                    self.limits.text
                )));
            }
            self.buf.clear();
            self.reader.get_mut().reset();
            let event = match self.reader.read_event_into(&mut self.buf) {
                Ok(event) => event,
                // Said plainly, not as quick-xml's wrapped I/O error.
                Err(_) if self.reader.get_ref().exhausted => {
                    return Err(malformed(format!(
                        "an XML tag or text longer than {} bytes",
                        self.limits.event
                    )));
                }
                Err(e) => return Err(malformed(e)),
            };
            match event {
                Event::Start(e) => {
                    self.text.clear();
                    let name = e.local_name().as_ref().to_vec();
                    return Ok(Some(Item::Open(name, attrs(&e)?)));
                }
                Event::Empty(e) => {
                    self.text.clear();
                    let name = e.local_name().as_ref().to_vec();
                    self.pending_close = Some(name.clone());
                    return Ok(Some(Item::Open(name, attrs(&e)?)));
                }
                Event::End(e) => {
                    let text = std::mem::take(&mut self.text);
                    return Ok(Some(Item::Close(e.local_name().as_ref().to_vec(), text)));
                }
                Event::Text(t) => self.text.push_str(&t.xml_content().map_err(malformed)?),
                Event::CData(t) => self.text.push_str(&t.decode().map_err(malformed)?),
                Event::GeneralRef(r) => {
                    if let Some(c) = r.resolve_char_ref().map_err(malformed)? {
                        self.text.push(c);
                    } else {
                        let name = r.decode().map_err(malformed)?;
                        let resolved = quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or_else(|| malformed(format!("unknown entity &{name};")))?;
                        self.text.push_str(resolved);
                    }
                }
                Event::Eof => return Ok(None),
                _ => {}
            }
        }
    }
}

fn get(map: &HashMap<Vec<u8>, String>, key: &str) -> String {
    map.get(key.as_bytes()).cloned().unwrap_or_default()
}

fn number<T: std::str::FromStr + Default>(map: &HashMap<Vec<u8>, String>, key: &str) -> T {
    map.get(key.as_bytes())
        .and_then(|v| v.parse().ok())
        .unwrap_or_default()
}

fn file_kind(map: &HashMap<Vec<u8>, String>) -> FileKind {
    match map.get(b"type".as_slice()).map(String::as_str) {
        Some("dir") => FileKind::Dir,
        Some("ghost") => FileKind::Ghost,
        _ => FileKind::File,
    }
}

fn version_into(pkg: &mut Package, map: &HashMap<Vec<u8>, String>) {
    pkg.epoch = number(map, "epoch");
    pkg.version = get(map, "ver");
    pkg.release = get(map, "rel");
}

/// Refuses a package element that has grown past its limit since `start`.
fn check_package_size<R: BufRead>(items: &Items<R>, start: u64) -> Result<(), ReadError> {
    if items.position().saturating_sub(start) > items.limits.package {
        return Err(malformed(format!(
            "a <package> element longer than {} bytes",
            items.limits.package
        )));
    }
    Ok(())
}

/// Streams the packages of primary.xml.
pub fn read_primary(
    input: impl BufRead,
    each: impl FnMut(Package) -> Result<(), ReadError>,
) -> Result<u64, ReadError> {
    read_primary_within(input, PRIMARY_LIMITS, each)
}

fn read_primary_within(
    input: impl BufRead,
    limits: Limits,
    mut each: impl FnMut(Package) -> Result<(), ReadError>,
) -> Result<u64, ReadError> {
    let mut items = Items::new(input, limits);
    let mut pkg: Option<Package> = None;
    let mut dep_list: Option<Vec<u8>> = None;
    let mut file_attrs = HashMap::new();
    let mut count = 0;
    let mut root = false;
    let mut package_start = 0;
    while let Some(item) = items.next()? {
        if pkg.is_some() {
            check_package_size(&items, package_start)?;
        }
        match item {
            Item::Open(name, map) => match name.as_slice() {
                b"metadata" => root = true,
                b"package" => {
                    pkg = Some(Package::default());
                    package_start = items.position();
                }
                _ => {
                    let Some(p) = pkg.as_mut() else { continue };
                    match name.as_slice() {
                        b"version" => version_into(p, &map),
                        b"checksum" => p.checksum_type = get(&map, "type"),
                        b"time" => {
                            p.time_file = number(&map, "file");
                            p.time_build = number(&map, "build");
                        }
                        b"size" => {
                            p.size_package = number(&map, "package");
                            p.size_installed = number(&map, "installed");
                            p.size_archive = number(&map, "archive");
                        }
                        b"location" => {
                            p.location_href = get(&map, "href");
                            p.location_base = map.get(b"xml:base".as_slice()).cloned();
                        }
                        b"header-range" => {
                            p.header_start = number(&map, "start");
                            p.header_end = number(&map, "end");
                        }
                        b"provides" | b"requires" | b"conflicts" | b"obsoletes" | b"suggests"
                        | b"enhances" | b"recommends" | b"supplements" => dep_list = Some(name),
                        b"entry" => {
                            let dep = Dependency {
                                name: get(&map, "name"),
                                flags: map.get(b"flags".as_slice()).cloned(),
                                epoch: map.get(b"epoch".as_slice()).cloned(),
                                version: map.get(b"ver".as_slice()).cloned(),
                                release: map.get(b"rel".as_slice()).cloned(),
                                pre: matches!(
                                    map.get(b"pre".as_slice()).map(String::as_str),
                                    Some("1" | "true")
                                ),
                            };
                            let list = match dep_list.as_deref() {
                                Some(b"provides") => &mut p.provides,
                                Some(b"requires") => &mut p.requires,
                                Some(b"conflicts") => &mut p.conflicts,
                                Some(b"obsoletes") => &mut p.obsoletes,
                                Some(b"suggests") => &mut p.suggests,
                                Some(b"enhances") => &mut p.enhances,
                                Some(b"recommends") => &mut p.recommends,
                                Some(b"supplements") => &mut p.supplements,
                                _ => return Err(malformed("rpm:entry outside a dependency list")),
                            };
                            list.push(dep);
                        }
                        b"file" => file_attrs = map,
                        _ => {}
                    }
                }
            },
            Item::Close(name, text) => {
                if name.as_slice() == b"package" {
                    if let Some(p) = pkg.take() {
                        count += 1;
                        each(p)?;
                    }
                    continue;
                }
                let Some(p) = pkg.as_mut() else { continue };
                match name.as_slice() {
                    b"name" => p.name = text,
                    b"arch" => p.arch = text,
                    b"checksum" => p.pkgid = text,
                    b"summary" => p.summary = text,
                    b"description" => p.description = text,
                    b"packager" => p.packager = text,
                    b"url" => p.url = text,
                    b"license" => p.license = text,
                    b"vendor" => p.vendor = text,
                    b"group" => p.group = text,
                    b"buildhost" => p.buildhost = text,
                    b"sourcerpm" => p.sourcerpm = text,
                    b"file" => p.files.push(PackageFile {
                        path: text,
                        kind: file_kind(&file_attrs),
                    }),
                    b"provides" | b"requires" | b"conflicts" | b"obsoletes" | b"suggests"
                    | b"enhances" | b"recommends" | b"supplements" => dep_list = None,
                    _ => {}
                }
            }
        }
    }
    if !root {
        return Err(malformed("no <metadata> element in primary"));
    }
    Ok(count)
}

/// The identity of a package in filelists.xml and other.xml.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackageRef {
    /// Package checksum.
    pub pkgid: String,
    /// Name.
    pub name: String,
    /// Architecture.
    pub arch: String,
    /// Epoch.
    pub epoch: u64,
    /// Version.
    pub version: String,
    /// Release.
    pub release: String,
}

fn package_ref(map: &HashMap<Vec<u8>, String>) -> PackageRef {
    PackageRef {
        pkgid: get(map, "pkgid"),
        name: get(map, "name"),
        arch: get(map, "arch"),
        ..PackageRef::default()
    }
}

/// Streams the packages of filelists.xml with their files.
pub fn read_filelists(
    input: impl BufRead,
    each: impl FnMut(PackageRef, Vec<PackageFile>) -> Result<(), ReadError>,
) -> Result<u64, ReadError> {
    read_package_children(
        input,
        b"file",
        |attrs, text| PackageFile {
            path: text,
            kind: file_kind(attrs),
        },
        each,
    )
}

/// Streams the packages of other.xml with their changelogs.
pub fn read_other(
    input: impl BufRead,
    each: impl FnMut(PackageRef, Vec<ChangelogEntry>) -> Result<(), ReadError>,
) -> Result<u64, ReadError> {
    read_package_children(
        input,
        b"changelog",
        |attrs, text| ChangelogEntry {
            author: get(attrs, "author"),
            date: number(attrs, "date"),
            text,
        },
        each,
    )
}

/// filelists.xml and other.xml share one shape: `<package pkgid name arch>`, a `<version>`,
/// then a list of one kind of child element.
fn read_package_children<T>(
    input: impl BufRead,
    child: &[u8],
    make_child: impl Fn(&HashMap<Vec<u8>, String>, String) -> T,
    mut each: impl FnMut(PackageRef, Vec<T>) -> Result<(), ReadError>,
) -> Result<u64, ReadError> {
    let mut items = Items::new(input, CHILDREN_LIMITS);
    let mut current: Option<(PackageRef, Vec<T>)> = None;
    let mut child_attrs = HashMap::new();
    let mut count = 0;
    let mut package_start = 0;
    while let Some(item) = items.next()? {
        if current.is_some() {
            check_package_size(&items, package_start)?;
        }
        match item {
            Item::Open(name, map) => match (name.as_slice(), current.as_mut()) {
                (b"package", _) => {
                    current = Some((package_ref(&map), Vec::new()));
                    package_start = items.position();
                }
                (b"version", Some((r, _))) => {
                    r.epoch = number(&map, "epoch");
                    r.version = get(&map, "ver");
                    r.release = get(&map, "rel");
                }
                (name, _) if name == child => child_attrs = map,
                _ => {}
            },
            Item::Close(name, text) => match (name.as_slice(), current.as_mut()) {
                (name, Some((_, children))) if name == child => {
                    children.push(make_child(&child_attrs, text));
                }
                (b"package", _) => {
                    if let Some((r, children)) = current.take() {
                        count += 1;
                        each(r, children)?;
                    }
                }
                _ => {}
            },
        }
    }
    Ok(count)
}

/// Reads a whole repository's metadata into memory, packages in primary order, with the files
/// of filelists (replacing primary's subset) and the changelogs of other.
///
/// For tests, comparisons and small repositories; the indexer itself streams.
pub fn read_repository(dir: &Path) -> Result<Vec<Package>, ReadError> {
    let repomd_path = dir.join("repodata/repomd.xml");
    let bytes = std::fs::read(&repomd_path).map_err(|source| ReadError::Io {
        path: repomd_path.clone(),
        source,
    })?;
    let repomd = Repomd::parse(&bytes).map_err(malformed)?;
    let open = |kind: &str| -> Result<Box<dyn BufRead>, ReadError> {
        let record = repomd
            .record(kind)
            .ok_or_else(|| malformed(format!("repomd.xml lists no {kind}")))?;
        let path = dir.join(&record.href);
        Compression::open(&path).map_err(|source| ReadError::Io { path, source })
    };
    let mut packages = Vec::new();
    read_primary(open("primary")?, |p| {
        packages.push(p);
        Ok(())
    })?;
    let index: HashMap<String, usize> = packages
        .iter()
        .enumerate()
        .map(|(i, p)| (p.pkgid.clone(), i))
        .collect();
    read_filelists(open("filelists")?, |r, files| {
        if let Some(&i) = index.get(&r.pkgid) {
            packages[i].files = files;
        }
        Ok(())
    })?;
    read_other(open("other")?, |r, entries| {
        if let Some(&i) = index.get(&r.pkgid) {
            packages[i].changelogs = entries;
        }
        Ok(())
    })?;
    Ok(packages)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn refuses_endless_events_text_and_packages() {
        // Small limits keep the test fast; the defaults work the same way.
        let limits = Limits {
            event: 1 << 16,
            text: 1 << 16,
            package: 1 << 16,
        };
        let read = |input: &mut dyn BufRead| {
            read_primary_within(input, limits, |_| Ok(()))
                .unwrap_err()
                .to_string()
        };

        // Text without a `<` after it: the event buffer stops at the limit.
        let mut zeros = std::io::BufReader::new(b"<metadata>".chain(std::io::repeat(0)));
        let err = read(&mut zeros);
        assert!(
            err.contains("an XML tag or text longer than 65536 bytes"),
            "{err}"
        );

        // Text split by comments into many events, gathered for one element.
        let chunk = format!("{}<!---->", "x".repeat(1 << 10));
        let many = format!("<metadata><package><name>{}", chunk.repeat(65));
        let err = read(&mut many.as_bytes());
        assert!(err.contains("more than 65536 bytes of text"), "{err}");

        // A package with endless dependencies.
        let entries = "<rpm:entry name=\"a\"/>".repeat(4000);
        let endless = format!("<metadata><package><format><rpm:requires>{entries}");
        let err = read(&mut endless.as_bytes());
        assert!(
            err.contains("a <package> element longer than 65536 bytes"),
            "{err}"
        );

        // Within the limits, the same reader reads.
        let fine = "<metadata><package><name>a</name></package></metadata>";
        assert_eq!(
            read_primary_within(fine.as_bytes(), limits, |_| Ok(())).unwrap(),
            1
        );
    }
}
