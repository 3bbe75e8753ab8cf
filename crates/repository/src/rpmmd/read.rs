//! Reading primary, filelists and other XML back into [`Package`] records.
//!
//! Used to compare with other producers, by `--update` and by the mirror. The readers stream:
//! each package is handed to a callback as soon as its element closes.

use std::collections::HashMap;
use std::io::BufRead;
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
    reader: Reader<R>,
    buf: Vec<u8>,
    text: String,
    pending_close: Option<Vec<u8>>,
}

impl<R: BufRead> Items<R> {
    fn new(input: R) -> Self {
        Items {
            reader: Reader::from_reader(input),
            buf: Vec::new(),
            text: String::new(),
            pending_close: None,
        }
    }

    fn next(&mut self) -> Result<Option<Item>, ReadError> {
        if let Some(name) = self.pending_close.take() {
            return Ok(Some(Item::Close(name, String::new())));
        }
        loop {
            self.buf.clear();
            match self
                .reader
                .read_event_into(&mut self.buf)
                .map_err(malformed)?
            {
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

/// Streams the packages of primary.xml.
pub fn read_primary(
    input: impl BufRead,
    mut each: impl FnMut(Package) -> Result<(), ReadError>,
) -> Result<u64, ReadError> {
    let mut items = Items::new(input);
    let mut pkg: Option<Package> = None;
    let mut dep_list: Option<Vec<u8>> = None;
    let mut file_attrs = HashMap::new();
    let mut count = 0;
    let mut root = false;
    while let Some(item) = items.next()? {
        match item {
            Item::Open(name, map) => match name.as_slice() {
                b"metadata" => root = true,
                b"package" => pkg = Some(Package::default()),
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
    let mut items = Items::new(input);
    let mut current: Option<(PackageRef, Vec<T>)> = None;
    let mut child_attrs = HashMap::new();
    let mut count = 0;
    while let Some(item) = items.next()? {
        match item {
            Item::Open(name, map) => match (name.as_slice(), current.as_mut()) {
                (b"package", _) => current = Some((package_ref(&map), Vec::new())),
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
