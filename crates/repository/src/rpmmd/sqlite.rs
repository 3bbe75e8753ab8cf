//! The optional sqlite databases of a repository (`vrepo index --database`).
//!
//! yum and other old clients read `primary_db`, `filelists_db` and `other_db` instead of the
//! XML; dnf ignores them. The schema is the one yum defined (database version 10) and
//! createrepo_c writes, so those clients find what they expect. The databases are built from the
//! XML documents just written, read back as a stream, so they say exactly what the XML says.

use std::io::BufRead;
use std::path::Path;

use rusqlite::{Connection, params};

use super::model::{ChangelogEntry, Dependency, FileKind, Package, PackageFile, is_primary_file};
use super::read::{ReadError, read_filelists, read_other, read_primary};

/// The database version yum's schema declares.
pub const DATABASE_VERSION: u32 = 10;

/// Failure to build a database.
#[derive(Debug, thiserror::Error)]
pub enum SqliteError {
    /// sqlite refused an operation.
    #[error("cannot write sqlite database `{path}`")]
    Sqlite {
        /// The database file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// The XML it is built from could not be read back.
    #[error(transparent)]
    Read(#[from] ReadError),
}

const DEPENDENCY_TABLES: [&str; 8] = [
    "requires",
    "provides",
    "conflicts",
    "obsoletes",
    "suggests",
    "enhances",
    "recommends",
    "supplements",
];

fn open(path: &Path) -> Result<Connection, rusqlite::Error> {
    let db = Connection::open(path)?;
    // The file is private to a staging directory and synced before it is published.
    db.execute_batch(
        "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;
         CREATE TABLE db_info (dbversion INTEGER, checksum TEXT);",
    )?;
    Ok(db)
}

fn finish(db: &Connection, checksum: &str) -> Result<(), rusqlite::Error> {
    db.execute(
        "INSERT INTO db_info (dbversion, checksum) VALUES (?1, ?2)",
        params![DATABASE_VERSION, checksum],
    )?;
    Ok(())
}

/// The readers' callbacks can only fail with a [`ReadError`]: keep the sqlite error aside and
/// stop the stream.
fn stash(slot: &mut Option<rusqlite::Error>, e: rusqlite::Error) -> ReadError {
    *slot = Some(e);
    ReadError::Malformed("stopped: the database refused a row".into())
}

enum Settled {
    Sqlite(rusqlite::Error),
    Read(ReadError),
}

impl Settled {
    fn into_sqlite_error(self, path: &Path) -> SqliteError {
        match self {
            Settled::Sqlite(source) => SqliteError::Sqlite {
                path: path.to_owned(),
                source,
            },
            Settled::Read(e) => SqliteError::Read(e),
        }
    }
}

fn settle(read: Result<u64, ReadError>, failure: Option<rusqlite::Error>) -> Result<u64, Settled> {
    match (read, failure) {
        (_, Some(e)) => Err(Settled::Sqlite(e)),
        (Err(e), None) => Err(Settled::Read(e)),
        (Ok(n), None) => Ok(n),
    }
}

fn empty_to_null(value: &str) -> Option<&str> {
    (!value.is_empty()).then_some(value)
}

/// Writes primary.sqlite at `path` from primary.xml; `xml_checksum` goes into `db_info`.
pub fn write_primary_db(
    path: &Path,
    xml: impl BufRead,
    xml_checksum: &str,
) -> Result<(), SqliteError> {
    let mut schema = String::from(
        "CREATE TABLE packages (pkgKey INTEGER PRIMARY KEY, pkgId TEXT, name TEXT, arch TEXT,
           version TEXT, epoch TEXT, release TEXT, summary TEXT, description TEXT, url TEXT,
           time_file INTEGER, time_build INTEGER, rpm_license TEXT, rpm_vendor TEXT,
           rpm_group TEXT, rpm_buildhost TEXT, rpm_sourcerpm TEXT, rpm_header_start INTEGER,
           rpm_header_end INTEGER, rpm_packager TEXT, size_package INTEGER,
           size_installed INTEGER, size_archive INTEGER, location_href TEXT,
           location_base TEXT, checksum_type TEXT);
         CREATE TABLE files (name TEXT, type TEXT, pkgKey INTEGER);",
    );
    for table in DEPENDENCY_TABLES {
        let pre = if table == "requires" {
            ", pre BOOLEAN DEFAULT FALSE"
        } else {
            ""
        };
        schema.push_str(&format!(
            "CREATE TABLE {table} (name TEXT, flags TEXT, epoch TEXT, version TEXT,
               release TEXT, pkgKey INTEGER {pre});"
        ));
    }
    let mut indexes = String::from(
        "CREATE INDEX packagename ON packages (name);
         CREATE INDEX packageId ON packages (pkgId);
         CREATE INDEX filenames ON files (name);
         CREATE INDEX pkgfiles ON files (pkgKey);",
    );
    for table in DEPENDENCY_TABLES {
        indexes.push_str(&format!(
            "CREATE INDEX pkg{table} ON {table} (pkgKey); CREATE INDEX {table}name ON {table} (name);"
        ));
    }
    indexes.push_str(
        "CREATE TRIGGER removals AFTER DELETE ON packages BEGIN
           DELETE FROM files WHERE pkgKey = old.pkgKey;
           DELETE FROM requires WHERE pkgKey = old.pkgKey;
           DELETE FROM provides WHERE pkgKey = old.pkgKey;
           DELETE FROM conflicts WHERE pkgKey = old.pkgKey;
           DELETE FROM obsoletes WHERE pkgKey = old.pkgKey;
           DELETE FROM suggests WHERE pkgKey = old.pkgKey;
           DELETE FROM enhances WHERE pkgKey = old.pkgKey;
           DELETE FROM recommends WHERE pkgKey = old.pkgKey;
           DELETE FROM supplements WHERE pkgKey = old.pkgKey;
         END;",
    );
    build_database(path, &schema, &indexes, xml_checksum, |db, failure| {
        let mut key: i64 = 0;
        read_primary(xml, |pkg| {
            key += 1;
            insert_primary(db, key, &pkg).map_err(|e| stash(failure, e))
        })
    })
}

/// Creates the database at `path` with `schema`, fills it in one transaction, then adds
/// `indexes` (faster than maintaining them row by row) and the `db_info` row.
fn build_database(
    path: &Path,
    schema: &str,
    indexes: &str,
    xml_checksum: &str,
    fill: impl FnOnce(&Connection, &mut Option<rusqlite::Error>) -> Result<u64, ReadError>,
) -> Result<(), SqliteError> {
    let err = |source| SqliteError::Sqlite {
        path: path.to_owned(),
        source,
    };
    let mut db = open(path).map_err(err)?;
    db.execute_batch(schema).map_err(err)?;
    let tx = db.transaction().map_err(err)?;
    let mut failure = None;
    let read = fill(&tx, &mut failure);
    settle(read, failure).map_err(|e| e.into_sqlite_error(path))?;
    tx.commit().map_err(err)?;
    db.execute_batch(indexes).map_err(err)?;
    finish(&db, xml_checksum).map_err(err)
}

fn insert_primary(db: &Connection, key: i64, p: &Package) -> Result<(), rusqlite::Error> {
    db.prepare_cached(
        "INSERT INTO packages (pkgKey, pkgId, name, arch, version, epoch, release, summary,
           description, url, time_file, time_build, rpm_license, rpm_vendor, rpm_group,
           rpm_buildhost, rpm_sourcerpm, rpm_header_start, rpm_header_end, rpm_packager,
           size_package, size_installed, size_archive, location_href, location_base,
           checksum_type)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
           ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26)",
    )?
    .execute(params![
        key,
        p.pkgid,
        p.name,
        p.arch,
        p.version,
        p.epoch.to_string(),
        p.release,
        p.summary,
        p.description,
        empty_to_null(&p.url),
        p.time_file,
        p.time_build,
        p.license,
        p.vendor,
        p.group,
        p.buildhost,
        p.sourcerpm,
        p.header_start as i64,
        p.header_end as i64,
        empty_to_null(&p.packager),
        p.size_package as i64,
        p.size_installed as i64,
        p.size_archive as i64,
        p.location_href,
        p.location_base.as_deref(),
        p.checksum_type,
    ])?;
    let lists: [&[Dependency]; 8] = [
        &p.requires,
        &p.provides,
        &p.conflicts,
        &p.obsoletes,
        &p.suggests,
        &p.enhances,
        &p.recommends,
        &p.supplements,
    ];
    for (table, deps) in DEPENDENCY_TABLES.iter().zip(lists) {
        for dep in deps {
            let values = params![
                dep.name,
                dep.flags,
                dep.epoch,
                dep.version,
                dep.release,
                key
            ];
            if *table == "requires" {
                db.prepare_cached(
                    "INSERT INTO requires (name, flags, epoch, version, release, pkgKey, pre)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![
                    dep.name,
                    dep.flags,
                    dep.epoch,
                    dep.version,
                    dep.release,
                    key,
                    if dep.pre { "TRUE" } else { "FALSE" }
                ])?;
            } else {
                db.prepare_cached(&format!(
                    "INSERT INTO {table} (name, flags, epoch, version, release, pkgKey)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
                ))?
                .execute(values)?;
            }
        }
    }
    for file in p.files.iter().filter(|f| is_primary_file(&f.path)) {
        db.prepare_cached("INSERT INTO files (name, type, pkgKey) VALUES (?1, ?2, ?3)")?
            .execute(params![
                file.path,
                file.kind.as_attr().unwrap_or("file"),
                key
            ])?;
    }
    Ok(())
}

/// Writes filelists.sqlite at `path` from filelists.xml.
pub fn write_filelists_db(
    path: &Path,
    xml: impl BufRead,
    xml_checksum: &str,
) -> Result<(), SqliteError> {
    let schema = "CREATE TABLE packages (pkgKey INTEGER PRIMARY KEY, pkgId TEXT);
         CREATE TABLE filelist (pkgKey INTEGER, dirname TEXT, filenames TEXT, filetypes TEXT);";
    let indexes = "CREATE INDEX keyfile ON filelist (pkgKey);
         CREATE INDEX pkgId ON packages (pkgId);
         CREATE INDEX dirnames ON filelist (dirname);
         CREATE TRIGGER remove_filelist AFTER DELETE ON packages BEGIN
           DELETE FROM filelist WHERE pkgKey = old.pkgKey;
         END;";
    build_database(path, schema, indexes, xml_checksum, |db, failure| {
        let mut key: i64 = 0;
        read_filelists(xml, |r, files| {
            key += 1;
            insert_filelist(db, key, &r.pkgid, &files).map_err(|e| stash(failure, e))
        })
    })
}

/// Groups a package's files by directory as yum's `filelist` table stores them: names joined by
/// `/`, and one type letter (`f`, `d`, `g`) per name.
fn encode_filelist(files: &[PackageFile]) -> Vec<(String, String, String)> {
    let mut groups: Vec<(String, String, String)> = Vec::new();
    for file in files {
        let (dir, name) = match file.path.rfind('/') {
            Some(i) => (&file.path[..=i], &file.path[i + 1..]),
            None => ("", file.path.as_str()),
        };
        let dir = dir.trim_end_matches('/');
        let dir = if dir.is_empty() { "/" } else { dir };
        let index = match groups.iter().position(|(d, _, _)| d == dir) {
            Some(i) => i,
            None => {
                groups.push((dir.to_owned(), String::new(), String::new()));
                groups.len() - 1
            }
        };
        let (_, names, types) = &mut groups[index];
        if !names.is_empty() {
            names.push('/');
        }
        names.push_str(if name.is_empty() { "/" } else { name });
        types.push(match file.kind {
            FileKind::File => 'f',
            FileKind::Dir => 'd',
            FileKind::Ghost => 'g',
        });
    }
    groups
}

fn insert_filelist(
    db: &Connection,
    key: i64,
    pkgid: &str,
    files: &[PackageFile],
) -> Result<(), rusqlite::Error> {
    db.prepare_cached("INSERT INTO packages (pkgKey, pkgId) VALUES (?1, ?2)")?
        .execute(params![key, pkgid])?;
    for (dir, names, types) in encode_filelist(files) {
        db.prepare_cached(
            "INSERT INTO filelist (pkgKey, dirname, filenames, filetypes) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![key, dir, names, types])?;
    }
    Ok(())
}

/// Writes other.sqlite at `path` from other.xml.
pub fn write_other_db(
    path: &Path,
    xml: impl BufRead,
    xml_checksum: &str,
) -> Result<(), SqliteError> {
    let schema = "CREATE TABLE packages (pkgKey INTEGER PRIMARY KEY, pkgId TEXT);
         CREATE TABLE changelog (pkgKey INTEGER, author TEXT, date INTEGER, changelog TEXT);";
    let indexes = "CREATE INDEX keychange ON changelog (pkgKey);
         CREATE INDEX pkgId ON packages (pkgId);
         CREATE TRIGGER remove_changelogs AFTER DELETE ON packages BEGIN
           DELETE FROM changelog WHERE pkgKey = old.pkgKey;
         END;";
    build_database(path, schema, indexes, xml_checksum, |db, failure| {
        let mut key: i64 = 0;
        read_other(xml, |r, entries| {
            key += 1;
            insert_changelogs(db, key, &r.pkgid, &entries).map_err(|e| stash(failure, e))
        })
    })
}

fn insert_changelogs(
    db: &Connection,
    key: i64,
    pkgid: &str,
    entries: &[ChangelogEntry],
) -> Result<(), rusqlite::Error> {
    db.prepare_cached("INSERT INTO packages (pkgKey, pkgId) VALUES (?1, ?2)")?
        .execute(params![key, pkgid])?;
    for e in entries {
        db.prepare_cached(
            "INSERT INTO changelog (pkgKey, author, date, changelog) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![key, e.author, e.date, e.text])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_grouped_by_directory_in_order() {
        let file = |path: &str, kind| PackageFile {
            path: path.into(),
            kind,
        };
        let groups = encode_filelist(&[
            file("/usr/bin/a", FileKind::File),
            file("/etc/x", FileKind::Ghost),
            file("/usr/bin/b", FileKind::Dir),
            file("/top", FileKind::File),
        ]);
        assert_eq!(
            groups,
            vec![
                ("/usr/bin".into(), "a/b".into(), "fd".into()),
                ("/etc".into(), "x".into(), "g".into()),
                ("/".into(), "top".into(), "f".into()),
            ]
        );
    }
}
