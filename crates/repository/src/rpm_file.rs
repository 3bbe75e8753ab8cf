//! Reading RPM package files into the rpm-md model.
//!
//! An RPM file is a 96-byte lead, a signature header (padded to 8 bytes), the main header, and
//! the compressed payload. Only the headers matter for metadata, but the package checksum covers
//! the whole file, so the file is read once, front to back, through the hash.
//!
//! The `rpm` crate parses the headers. Its parser trusts the sizes in the header intro and the
//! offsets in the index (a crafted header makes it overflow or index out of bounds and panic), so
//! both headers are checked here first, against the same limits rpm itself enforces
//! (`hdrchkTags`, `hdrchkData` in rpm's header.c), and the parse runs under `catch_unwind` as a
//! last line of defence.
//!
//! What goes into the model follows createrepo_c: requirements on `rpmlib(…)`, on the package's
//! own primary files and on its own provides are dropped, duplicates are folded, only the highest
//! `libc.so.6(…)` requirement is kept, and at most `changelog_limit` changelog entries are kept.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use rpm::{IndexSignatureTag, IndexTag};
use sha2::{Digest, Sha256};

use crate::rpmmd::{ChangelogEntry, Dependency, FileKind, Package, PackageFile, is_primary_file};
use crate::scan::FoundFile;

const LEAD_SIZE: usize = 96;
const LEAD_MAGIC: [u8; 4] = [0xed, 0xab, 0xee, 0xdb];
const HEADER_MAGIC: [u8; 4] = [0x8e, 0xad, 0xe8, 0x01];
const INTRO_SIZE: usize = 16;
const ENTRY_SIZE: usize = 16;
/// rpm's own limit on index entries in one header.
const MAX_TAGS: u32 = 0xffff;
/// rpm's own limit on the data store of one header (256 MiB).
const MAX_DATA: u32 = 0x0fff_ffff;

const RPMFILE_GHOST: u32 = 1 << 6;
const RPMSENSE_LESS: u32 = 1 << 1;
const RPMSENSE_GREATER: u32 = 1 << 2;
const RPMSENSE_EQUAL: u32 = 1 << 3;
const RPMSENSE_PREREQ: u32 = 1 << 6;
const RPMSENSE_SCRIPT_PRE: u32 = 1 << 9;
const RPMSENSE_SCRIPT_POST: u32 = 1 << 10;
const RPMSENSE_MISSINGOK: u32 = 1 << 19;
/// The comparison bits of dependency flags (createrepo_c compares deps by their rendered flags).
const SENSE_MASK: u32 = RPMSENSE_LESS | RPMSENSE_GREATER | RPMSENSE_EQUAL;
const S_IFMT: u16 = 0o170000;
const S_IFDIR: u16 = 0o040000;

/// Why an RPM file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RpmReadError {
    /// The file could not be read.
    #[error("cannot read `{path}`")]
    Io {
        /// The package file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The file is not a well-formed RPM package.
    #[error("`{path}` is not a valid RPM package: {reason}")]
    Malformed {
        /// The package file.
        path: PathBuf,
        /// What is wrong, in a few words.
        reason: String,
    },
    /// The file changed while it was read.
    #[error("`{path}` changed while it was read (size {expected} became {found}); index again")]
    Changed {
        /// The package file.
        path: PathBuf,
        /// Size when scanned.
        expected: u64,
        /// Bytes actually read.
        found: u64,
    },
}

/// How packages are turned into metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpmReadOptions {
    /// At most this many changelog entries per package (the newest ones).
    pub changelog_limit: usize,
}

impl Default for RpmReadOptions {
    fn default() -> Self {
        // createrepo_c's default.
        RpmReadOptions {
            changelog_limit: 10,
        }
    }
}

/// A reader that hashes everything read through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Reads the package `file` and describes it as rpm-md does.
pub fn read_rpm(file: &FoundFile, options: &RpmReadOptions) -> Result<Package, RpmReadError> {
    let handle = File::open(&file.path).map_err(|source| RpmReadError::Io {
        path: file.path.clone(),
        source,
    })?;
    let mut pkg = read_rpm_from(handle, &file.path, Some(file.size), options)?;
    pkg.time_file = file.mtime_secs();
    pkg.location_href = file.rel.clone();
    Ok(pkg)
}

/// Describes an RPM held in memory (location and file time are left empty).
///
/// This is the entry point of the fuzz target: whatever the bytes, it returns an error rather
/// than panicking or allocating more than the input justifies.
pub fn parse_rpm_bytes(bytes: &[u8], options: &RpmReadOptions) -> Result<Package, RpmReadError> {
    read_rpm_from(bytes, Path::new("<memory>"), None, options)
}

fn read_rpm_from(
    input: impl Read,
    path: &Path,
    expected_size: Option<u64>,
    options: &RpmReadOptions,
) -> Result<Package, RpmReadError> {
    let io_err = |source| RpmReadError::Io {
        path: path.to_owned(),
        source,
    };
    let malformed = |reason: String| RpmReadError::Malformed {
        path: path.to_owned(),
        reason,
    };
    let mut reader = HashingReader {
        inner: input,
        hasher: Sha256::new(),
        count: 0,
    };
    let headers = read_headers(&mut reader).map_err(|e| match e {
        HeaderError::Io(source) if source.kind() == io::ErrorKind::UnexpectedEof => {
            malformed("file ends inside the headers (truncated?)".into())
        }
        HeaderError::Io(source) => io_err(source),
        HeaderError::Invalid(reason) => malformed(reason),
    })?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(e)),
        }
    }
    if let Some(expected) = expected_size.filter(|&size| size != reader.count) {
        return Err(RpmReadError::Changed {
            path: path.to_owned(),
            expected,
            found: reader.count,
        });
    }
    let pkgid = hex::encode(reader.hasher.finalize());

    let metadata = catch_unwind(AssertUnwindSafe(|| {
        rpm::PackageMetadata::parse(&mut headers.bytes.as_slice())
    }))
    .map_err(|_| malformed("header parser failed on malformed data".into()))?
    .map_err(|e| malformed(e.to_string()))?;
    let mut pkg = catch_unwind(AssertUnwindSafe(|| describe(&metadata, options)))
        .map_err(|_| malformed("header parser failed on malformed data".into()))?
        .map_err(|e| malformed(e.to_string()))?;
    pkg.pkgid = pkgid;
    pkg.checksum_type = "sha256".into();
    pkg.size_package = reader.count;
    pkg.header_start = headers.header_start;
    pkg.header_end = headers.header_end;
    Ok(pkg)
}

enum HeaderError {
    Io(io::Error),
    Invalid(String),
}

impl From<io::Error> for HeaderError {
    fn from(e: io::Error) -> Self {
        HeaderError::Io(e)
    }
}

/// The lead and both headers, checked, plus where the main header lies in the file.
struct RawHeaders {
    bytes: Vec<u8>,
    header_start: u64,
    header_end: u64,
}

fn read_headers(reader: &mut impl Read) -> Result<RawHeaders, HeaderError> {
    let mut bytes = vec![0u8; LEAD_SIZE];
    reader.read_exact(&mut bytes)?;
    if bytes[..4] != LEAD_MAGIC {
        return Err(HeaderError::Invalid("no RPM lead magic".into()));
    }
    read_header(reader, &mut bytes, "signature")?;
    let padding = (8 - (bytes.len() - LEAD_SIZE) % 8) % 8;
    let mut pad = [0u8; 8];
    reader.read_exact(&mut pad[..padding])?;
    // The rpm crate reads the padding itself; keep the bytes identical to the file.
    bytes.extend_from_slice(&pad[..padding]);
    let header_start = bytes.len() as u64;
    read_header(reader, &mut bytes, "main")?;
    let header_end = bytes.len() as u64;
    Ok(RawHeaders {
        bytes,
        header_start,
        header_end,
    })
}

/// Appends one header structure to `bytes` after checking its intro and every index entry.
fn read_header(
    reader: &mut impl Read,
    bytes: &mut Vec<u8>,
    which: &str,
) -> Result<(), HeaderError> {
    let mut intro = [0u8; INTRO_SIZE];
    reader.read_exact(&mut intro)?;
    if intro[..4] != HEADER_MAGIC {
        return Err(HeaderError::Invalid(format!("no {which} header magic")));
    }
    let count = u32::from_be_bytes([intro[8], intro[9], intro[10], intro[11]]);
    let data_len = u32::from_be_bytes([intro[12], intro[13], intro[14], intro[15]]);
    if count == 0 || count > MAX_TAGS {
        return Err(HeaderError::Invalid(format!(
            "{which} header claims {count} entries"
        )));
    }
    if data_len > MAX_DATA {
        return Err(HeaderError::Invalid(format!(
            "{which} header claims {data_len} bytes of data"
        )));
    }
    let start = bytes.len();
    bytes.extend_from_slice(&intro);
    let rest = count as usize * ENTRY_SIZE + data_len as usize;
    bytes.resize(start + INTRO_SIZE + rest, 0);
    reader.read_exact(&mut bytes[start + INTRO_SIZE..])?;
    let index = &bytes[start + INTRO_SIZE..start + INTRO_SIZE + count as usize * ENTRY_SIZE];
    for entry in index.chunks_exact(ENTRY_SIZE) {
        let field =
            |i: usize| u32::from_be_bytes([entry[i], entry[i + 1], entry[i + 2], entry[i + 3]]);
        let (tag, kind, offset, items) = (field(0), field(4), field(8), field(12));
        let unit: u64 = match kind {
            0 => 0,
            1 | 2 | 7 => 1,
            3 => 2,
            4 => 4,
            5 => 8,
            // Strings: at least one terminating NUL per item.
            6 | 8 | 9 => 1,
            _ => {
                return Err(HeaderError::Invalid(format!(
                    "{which} header tag {tag} has unknown type {kind}"
                )));
            }
        };
        let end = u64::from(offset) + unit * u64::from(items);
        if offset > data_len || end > u64::from(data_len) {
            return Err(HeaderError::Invalid(format!(
                "{which} header tag {tag} points outside its data"
            )));
        }
    }
    Ok(())
}

fn flags_attr(flags: u32) -> Option<String> {
    let sense = flags & (RPMSENSE_LESS | RPMSENSE_GREATER | RPMSENSE_EQUAL);
    let name = match sense {
        RPMSENSE_EQUAL => "EQ",
        RPMSENSE_LESS => "LT",
        RPMSENSE_GREATER => "GT",
        s if s == RPMSENSE_LESS | RPMSENSE_EQUAL => "LE",
        s if s == RPMSENSE_GREATER | RPMSENSE_EQUAL => "GE",
        _ => return None,
    };
    Some(name.to_owned())
}

/// A dependency's `[epoch:]version[-release]`, split as createrepo_c splits it: the epoch must
/// be numeric (`None` means it is not, and the dependency is dropped), the version ends at the
/// first `-`.
struct Evr {
    epoch: String,
    version: String,
    release: Option<String>,
}

fn split_evr(evr: &str) -> Option<Evr> {
    let (epoch, rest) = match evr.split_once(':') {
        Some(("", rest)) => ("0".to_owned(), rest),
        Some((e, rest)) => {
            let digits = e.trim_start().trim_start_matches(['+', '-']);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (e.to_owned(), rest)
        }
        None => ("0".to_owned(), evr),
    };
    let (version, release) = match rest.split_once('-') {
        Some((v, r)) => (v.to_owned(), (!r.is_empty()).then(|| r.to_owned())),
        None => (rest.to_owned(), None),
    };
    Some(Evr {
        epoch,
        version,
        release,
    })
}

/// Converts a dependency; `None` for one with a malformed epoch, which createrepo_c leaves out.
fn dependency(dep: &rpm::Dependency, pre: bool) -> Option<Dependency> {
    let mut out = Dependency {
        name: dep.name.clone(),
        flags: flags_attr(dep.flags.bits()),
        pre,
        ..Dependency::default()
    };
    if !dep.version.is_empty() {
        let evr = split_evr(&dep.version)?;
        out.epoch = Some(evr.epoch);
        out.version = Some(evr.version);
        out.release = evr.release;
    }
    Some(out)
}

fn optional_string(header: &rpm::Header<IndexTag>, tag: IndexTag) -> Result<String, rpm::Error> {
    match header.get_entry_data_as_string(tag) {
        Ok(s) => Ok(s.to_owned()),
        Err(rpm::Error::TagNotFound(_)) => Ok(String::new()),
        Err(rpm::Error::UnexpectedTagDataType { .. }) => {
            match header.get_entry_data_as_i18n_string(tag) {
                Ok(s) => Ok(s.to_owned()),
                Err(rpm::Error::TagNotFound(_)) => Ok(String::new()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

fn optional_number(header: &rpm::Header<IndexTag>, tag: IndexTag) -> u64 {
    header
        .get_entry_data_as_u64(tag)
        .or_else(|_| header.get_entry_data_as_u32(tag).map(u64::from))
        .unwrap_or(0)
}

fn or_empty<T>(result: Result<Vec<T>, rpm::Error>) -> Result<Vec<T>, rpm::Error> {
    match result {
        Err(rpm::Error::TagNotFound(_)) => Ok(Vec::new()),
        other => other,
    }
}

fn describe(meta: &rpm::PackageMetadata, options: &RpmReadOptions) -> Result<Package, rpm::Error> {
    let header = &meta.header;
    let mut pkg = Package {
        name: meta.get_name()?.to_owned(),
        arch: if header.entry_is_present(IndexTag::RPMTAG_SOURCEPACKAGE) {
            "src".to_owned()
        } else {
            optional_string(header, IndexTag::RPMTAG_ARCH)?
        },
        epoch: optional_number(header, IndexTag::RPMTAG_EPOCH),
        version: meta.get_version()?.to_owned(),
        release: meta.get_release()?.to_owned(),
        summary: optional_string(header, IndexTag::RPMTAG_SUMMARY)?,
        description: optional_string(header, IndexTag::RPMTAG_DESCRIPTION)?,
        packager: optional_string(header, IndexTag::RPMTAG_PACKAGER)?,
        url: optional_string(header, IndexTag::RPMTAG_URL)?,
        time_build: i64::try_from(optional_number(header, IndexTag::RPMTAG_BUILDTIME)).unwrap_or(0),
        size_installed: meta.get_installed_size().unwrap_or(0),
        license: optional_string(header, IndexTag::RPMTAG_LICENSE)?,
        vendor: optional_string(header, IndexTag::RPMTAG_VENDOR)?,
        group: optional_string(header, IndexTag::RPMTAG_GROUP)?,
        buildhost: optional_string(header, IndexTag::RPMTAG_BUILDHOST)?,
        sourcerpm: optional_string(header, IndexTag::RPMTAG_SOURCERPM)?,
        ..Package::default()
    };
    pkg.size_archive = archive_size(meta);

    let dirnames = or_empty(header.get_entry_data_as_string_array(IndexTag::RPMTAG_DIRNAMES))?;
    let basenames = or_empty(header.get_entry_data_as_string_array(IndexTag::RPMTAG_BASENAMES))?;
    let dirindexes = or_empty(header.get_entry_data_as_u32_array(IndexTag::RPMTAG_DIRINDEXES))?;
    let modes = or_empty(header.get_entry_data_as_u16_array(IndexTag::RPMTAG_FILEMODES))?;
    let fileflags = or_empty(header.get_entry_data_as_u32_array(IndexTag::RPMTAG_FILEFLAGS))?;
    for (i, base) in basenames.iter().enumerate() {
        let dir_index = dirindexes.get(i).copied().unwrap_or(u32::MAX) as usize;
        let dir = dirnames.get(dir_index).ok_or(rpm::Error::InvalidTagIndex {
            tag: "RPMTAG_DIRINDEXES".into(),
            index: dir_index as u32,
            bound: dirnames.len() as u32,
        })?;
        let mode = modes.get(i).copied().unwrap_or(0);
        let flags = fileflags.get(i).copied().unwrap_or(0);
        let kind = if mode & S_IFMT == S_IFDIR {
            FileKind::Dir
        } else if flags & RPMFILE_GHOST != 0 {
            FileKind::Ghost
        } else {
            FileKind::File
        };
        pkg.files.push(PackageFile {
            path: format!("{dir}{base}"),
            kind,
        });
    }

    let provides = or_empty(meta.get_provides())?;
    let provided: HashSet<(&str, u32, &str)> = provides.iter().map(provide_key).collect();
    pkg.provides = deps(&provides);
    let (requires, legacy_recommends) =
        requirements(&or_empty(meta.get_requires())?, &provided, &pkg.files);
    pkg.requires = requires;
    pkg.conflicts = deps(&or_empty(meta.get_conflicts())?);
    pkg.obsoletes = deps(&or_empty(meta.get_obsoletes())?);
    pkg.suggests = deps(&or_empty(meta.get_suggests())?);
    pkg.enhances = deps(&or_empty(meta.get_enhances())?);
    pkg.recommends = legacy_recommends;
    pkg.recommends
        .extend(deps(&or_empty(meta.get_recommends())?));
    pkg.supplements = deps(&or_empty(meta.get_supplements())?);
    pkg.changelogs = changelogs(meta, options.changelog_limit)?;
    Ok(pkg)
}

fn deps(list: &[rpm::Dependency]) -> Vec<Dependency> {
    list.iter().filter_map(|d| dependency(d, false)).collect()
}

/// What makes a requirement "the same" as a provide: name, comparison and version string.
fn provide_key(dep: &rpm::Dependency) -> (&str, u32, &str) {
    (
        dep.name.as_str(),
        dep.flags.bits() & SENSE_MASK,
        dep.version.as_str(),
    )
}

fn archive_size(meta: &rpm::PackageMetadata) -> u64 {
    let sig = &meta.signature;
    sig.get_entry_data_as_u64(IndexSignatureTag::RPMSIGTAG_LONGARCHIVESIZE)
        .or_else(|_| {
            sig.get_entry_data_as_u32(IndexSignatureTag::RPMSIGTAG_PAYLOADSIZE)
                .map(u64::from)
        })
        .unwrap_or_else(|_| {
            let header = &meta.header;
            header
                .get_entry_data_as_u64(IndexTag::RPMTAG_LONGARCHIVESIZE)
                .or_else(|_| {
                    header
                        .get_entry_data_as_u32(IndexTag::RPMTAG_ARCHIVESIZE)
                        .map(u64::from)
                })
                .unwrap_or(0)
        })
}

/// Filters requirements as createrepo_c does; also returns the legacy weak dependencies
/// (requirements marked "missing ok"), which belong to recommends.
fn requirements(
    requires: &[rpm::Dependency],
    provided: &HashSet<(&str, u32, &str)>,
    files: &[PackageFile],
) -> (Vec<Dependency>, Vec<Dependency>) {
    let own_primary_files: HashSet<&str> = files
        .iter()
        .map(|f| f.path.as_str())
        .filter(|p| is_primary_file(p))
        .collect();
    // The last requirement kept for each name; a repeat of exactly it is dropped.
    let mut last_kept: HashMap<&str, (u32, &str, bool)> = HashMap::new();
    let mut out = Vec::new();
    let mut legacy_recommends = Vec::new();
    let mut libc_highest: Option<Dependency> = None;
    for req in requires {
        let name = req.name.as_str();
        if name.starts_with("rpmlib(")
            || (name.starts_with('/') && own_primary_files.contains(name))
            || provided.contains(&provide_key(req))
        {
            continue;
        }
        let bits = req.flags.bits();
        let pre = bits & (RPMSENSE_PREREQ | RPMSENSE_SCRIPT_PRE | RPMSENSE_SCRIPT_POST) != 0;
        let identity = (bits & SENSE_MASK, req.version.as_str(), pre);
        if last_kept.get(name) == Some(&identity) {
            continue;
        }
        if bits & RPMSENSE_MISSINGOK != 0 {
            legacy_recommends.extend(dependency(req, false));
            continue;
        }
        let Some(dep) = dependency(req, pre) else {
            continue;
        };
        if name.starts_with("libc.so.6") {
            let keep_new = libc_highest
                .as_ref()
                .is_none_or(|current| libc_version_cmp(&current.name, name).is_lt());
            if keep_new {
                libc_highest = Some(dep);
            }
            continue;
        }
        last_kept.insert(name, identity);
        out.push(dep);
    }
    out.extend(libc_highest);
    (out, legacy_recommends)
}

/// Orders `libc.so.6(GLIBC_2.3)(64bit)`-style names by the version inside the first parentheses.
fn libc_version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn version(name: &str) -> &str {
        let Some(open) = name.find('(') else {
            return "";
        };
        let inner = &name[open + 1..];
        let inner = &inner[..inner.find(')').unwrap_or(inner.len())];
        inner.trim_start_matches(|c: char| !c.is_ascii_digit())
    }
    rpm_version::rpm_evr_compare(version(a), version(b))
}

fn changelogs(
    meta: &rpm::PackageMetadata,
    limit: usize,
) -> Result<Vec<ChangelogEntry>, rpm::Error> {
    let entries = match meta.get_changelog_entries() {
        Ok(entries) => entries,
        Err(rpm::Error::TagNotFound(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    // The header lists the newest entry first. Entries with equal times get distinct ones, newer
    // entries moving up by one second per tie, as createrepo_c does (yum keyed changelogs by
    // time); then the kept entries are listed oldest first.
    let mut kept: Vec<ChangelogEntry> = entries
        .into_iter()
        .take(limit)
        .map(|e| ChangelogEntry {
            author: e.name.trim_end_matches(' ').to_owned(),
            date: i64::try_from(e.timestamp).unwrap_or(i64::MAX),
            text: e.description,
        })
        .collect();
    let mut last_time = 0;
    for i in 0..kept.len() {
        let time = kept[i].date;
        if time != last_time {
            last_time = time;
            continue;
        }
        for (tie, newer) in (time..).zip(kept[..i].iter_mut().rev()) {
            if newer.date != tie {
                break;
            }
            newer.date += 1;
        }
    }
    kept.reverse();
    Ok(kept)
}
