//! The apt side of the mirror: `dists/SUITE/{InRelease,Release,Release.gpg}`, the `Packages`
//! indexes the Release lists for the chosen components and architectures, and their
//! `Filename`/`Size`/digest fields.
//!
//! A Release lists index files that need not exist (the Debian archive lists an uncompressed
//! `Packages` it does not serve), so a listed index the source lacks is skipped; each chosen
//! component and architecture still needs one `Packages` variant.

use std::collections::{BTreeMap, BTreeSet};

use super::check::{Algorithm, Digest};
use super::signature::{
    SignatureError, SignaturePolicy, strip_clearsign, verify_clearsigned, verify_detached,
};
use super::{
    Context, MAX_ROOT_FILE, MAX_SIGNATURE, MirrorError, Plan, StagedIndex, StagedTree, Wanted,
    make_parents, write_new,
};
use crate::deb::control::Stanza;
use crate::publish::Staging;

/// Stages `dists/SUITE` of every suite and lists the packages of the chosen indexes.
pub(crate) fn plan(context: &Context<'_>) -> Result<Plan, MirrorError> {
    if context.options.suites.is_empty() {
        return Err(MirrorError::NotARepository {
            source_name: context.fetcher.source().display(""),
            expected: "an apt repository without a suite: name one with --suite".into(),
        });
    }
    let mut trees = Vec::new();
    let mut packages = Vec::new();
    let mut indexes = Vec::new();
    for suite in &context.options.suites {
        let (tree, mut found) = plan_suite(context, suite, &mut indexes)?;
        trees.push(tree);
        packages.append(&mut found);
    }
    Ok(Plan {
        format: "apt",
        trees,
        packages,
        indexes,
    })
}

/// An index file listed in a Release.
struct Listed {
    size: u64,
    digest: Digest,
}

/// The parts of a Release the mirror needs.
struct Release {
    components: Vec<String>,
    architectures: Vec<String>,
    files: BTreeMap<String, Listed>,
}

fn parse_release(text: &[u8], file: &str) -> Result<Release, MirrorError> {
    let malformed = |reason: String| MirrorError::Malformed {
        file: file.to_owned(),
        reason,
    };
    let stanza = Stanza::parse_bytes(text).map_err(|e| malformed(e.to_string()))?;
    let words = |name: &str| -> Vec<String> {
        stanza
            .get(name)
            .unwrap_or_default()
            .split_ascii_whitespace()
            .map(str::to_owned)
            .collect()
    };
    // The strongest digest the Release offers decides; weaker ones are ignored.
    let sections = [
        ("SHA512", Algorithm::Sha512),
        ("SHA256", Algorithm::Sha256),
        ("SHA1", Algorithm::Sha1),
        ("MD5Sum", Algorithm::Md5),
    ];
    let (section, algorithm) = sections
        .iter()
        .find(|(name, _)| stanza.get(name).is_some())
        .ok_or_else(|| malformed("it lists no checksums".into()))?;
    let mut files = BTreeMap::new();
    for line in stanza
        .field(section)
        .map(|f| f.raw_value())
        .unwrap_or("")
        .lines()
    {
        let parts: Vec<&str> = line.split_ascii_whitespace().collect();
        let [hex, size, path] = parts[..] else {
            if parts.is_empty() {
                continue;
            }
            return Err(malformed(format!("bad {section} line `{}`", line.trim())));
        };
        let digest = Digest::new(*algorithm, hex)
            .ok_or_else(|| malformed(format!("bad digest for `{path}`")))?;
        let size = size
            .parse()
            .map_err(|_| malformed(format!("bad size for `{path}`")))?;
        files.insert(path.to_owned(), Listed { size, digest });
    }
    Ok(Release {
        components: words("Components"),
        architectures: words("Architectures"),
        files,
    })
}

/// The root files of one suite as fetched, and the Release text they vouch for.
struct Root {
    files: Vec<(&'static str, Vec<u8>)>,
    release: Vec<u8>,
}

fn fetch_root(context: &Context<'_>, base: &str) -> Result<Root, MirrorError> {
    let fetcher = context.fetcher;
    let get = |name: &str, max| fetcher.get_bytes(&join(base, name), max);
    let display = |name: &str| fetcher.source().display(&join(base, name));
    let in_release = get("InRelease", MAX_ROOT_FILE)?;
    let release = get("Release", MAX_ROOT_FILE)?;
    let release_gpg = match &release {
        Some(_) => get("Release.gpg", MAX_SIGNATURE)?,
        None => None,
    };
    match &context.options.signature {
        SignaturePolicy::Keyring(keyring) => {
            let mut files = Vec::new();
            let mut vouched = None;
            if let Some(doc) = in_release {
                let text =
                    verify_clearsigned(keyring, &context.state_dir, &display("InRelease"), &doc)?;
                files.push(("InRelease", doc));
                vouched = Some(text);
            }
            if let (Some(release), Some(signature)) = (release, release_gpg) {
                verify_detached(
                    keyring,
                    &context.state_dir,
                    &display("Release"),
                    &release,
                    &signature,
                )?;
                vouched.get_or_insert_with(|| release.clone());
                files.push(("Release", release));
                files.push(("Release.gpg", signature));
            }
            let release = vouched.ok_or_else(|| SignatureError::Missing {
                file: display("Release"),
                looked_for: "InRelease, Release.gpg".into(),
            })?;
            Ok(Root { files, release })
        }
        SignaturePolicy::Unverified => {
            let text = match (&release, &in_release) {
                (Some(release), _) => release.clone(),
                (None, Some(doc)) => strip_clearsign(doc),
                (None, None) => {
                    return Err(MirrorError::NotARepository {
                        source_name: fetcher.source().display(""),
                        expected: format!(
                            "an apt repository with suite `{base}` (no InRelease or Release)"
                        ),
                    });
                }
            };
            let mut files = Vec::new();
            files.extend(in_release.map(|d| ("InRelease", d)));
            files.extend(release.map(|d| ("Release", d)));
            files.extend(release_gpg.map(|d| ("Release.gpg", d)));
            Ok(Root {
                files,
                release: text,
            })
        }
    }
}

const PACKAGES_VARIANTS: [&str; 4] = ["Packages", "Packages.gz", "Packages.xz", "Packages.zst"];

fn plan_suite(
    context: &Context<'_>,
    suite: &str,
    indexes: &mut Vec<super::SourceIndex>,
) -> Result<(StagedTree, Vec<Wanted>), MirrorError> {
    let hostile = |path: &str, named_by: &str, reason: &str| MirrorError::HostilePath {
        path: path.to_owned(),
        named_by: named_by.to_owned(),
        reason: reason.to_owned(),
    };
    super::check::check_relative_path(suite).map_err(|r| hostile(suite, "--suite", r))?;
    let base = format!("dists/{suite}");
    let root = fetch_root(context, &base)?;
    let release_name = format!("{base}/Release");
    let release = parse_release(&root.release, &release_name)?;

    let current = context.current_metadata(&base);
    let changed = root_changed(context, &root, &current);
    let target = make_parents(context.dest, &base)?;
    let parent = target.parent().unwrap_or(context.dest);
    let final_name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let staging = Staging::new(parent, &final_name)?;
    for (name, bytes) in &root.files {
        write_new(&staging.path().join(name), bytes)?;
    }
    if context.options.signer.is_some() && !root.files.iter().any(|(n, _)| *n == "Release") {
        // We sign the Release the source vouched for; a source with only InRelease gets one.
        write_new(&staging.path().join("Release"), &root.release)?;
    }

    let components = if context.options.components.is_empty() {
        release.components.clone()
    } else {
        context.options.components.clone()
    };
    let explicit_arches = !context.options.architectures.is_empty();
    let mut architectures: BTreeSet<String> = if explicit_arches {
        context.options.architectures.iter().cloned().collect()
    } else {
        release.architectures.iter().cloned().collect()
    };
    architectures.insert("all".into());
    if components.is_empty() {
        return Err(MirrorError::Malformed {
            file: release_name,
            reason: "it names no components; pass --component".into(),
        });
    }

    let mut packages = Vec::new();
    for component in &components {
        for arch in &architectures {
            let dir = format!("{component}/binary-{arch}");
            let mut best: Option<StagedIndex> = None;
            for name in PACKAGES_VARIANTS.iter().chain(&["Release"]) {
                let rel = format!("{dir}/{name}");
                let Some(listed) = release.files.get(&rel) else {
                    continue;
                };
                super::check::check_relative_path(&rel)
                    .map_err(|r| hostile(&rel, &release_name, r))?;
                let staged = make_parents(staging.path(), &rel)?;
                let source_rel = format!("{base}/{rel}");
                let found = context.stage_file(
                    &source_rel,
                    &current.join(&rel),
                    &staged,
                    listed.size,
                    &listed.digest,
                )?;
                if found && *name != "Release" && best.is_none() {
                    best = Some(StagedIndex {
                        limit: context.inflate_limit(&staged, None),
                        url: context.fetcher.source().display(&source_rel),
                        path: staged,
                    });
                }
            }
            match best {
                Some(index) => {
                    read_index(
                        context,
                        &index,
                        &format!("{base}/{dir}/Packages"),
                        &mut packages,
                    )?;
                    indexes.push(super::SourceIndex::Packages {
                        index,
                        suite: Some(suite.to_owned()),
                        component: component.clone(),
                    });
                }
                None => {
                    let asked = arch != "all"
                        && (explicit_arches || !context.options.components.is_empty());
                    if asked {
                        return Err(MirrorError::Malformed {
                            file: release_name,
                            reason: format!(
                                "it lists no Packages index for {component}/{arch} that the source has"
                            ),
                        });
                    }
                }
            }
        }
    }
    crate::by_hash::link_by_hash(staging.path(), &current, &root.release).map_err(|source| {
        MirrorError::Io {
            action: "link by hash in",
            path: staging.path().to_owned(),
            source,
        }
    })?;
    Ok((
        StagedTree {
            staging,
            kind: super::TreeKind::Apt,
            changed,
            flat_files: None,
        },
        packages,
    ))
}

/// Whether the root files differ from those published in `current`. A mirror we sign
/// publishes our signatures, not the source's: then only the Release text counts.
fn root_changed(context: &Context<'_>, root: &Root, current: &std::path::Path) -> bool {
    if context.options.signer.is_some() {
        return std::fs::read(current.join("Release")).ok().as_deref() != Some(&root.release[..]);
    }
    root.files
        .iter()
        .any(|(name, bytes)| std::fs::read(current.join(name)).ok().as_deref() != Some(&bytes[..]))
}

/// `base/name`, or `name` at the top of the repository.
fn join(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_owned()
    } else {
        format!("{base}/{name}")
    }
}

/// A flat repository (`deb URL ./`): `Release` and `Packages*` at the top, beside the packages.
pub(crate) fn plan_flat(context: &Context<'_>) -> Result<Plan, MirrorError> {
    let root = fetch_root(context, "")?;
    let release = parse_release(&root.release, "Release")?;
    let changed = root_changed(context, &root, context.dest);
    let staging = Staging::new(&context.state_dir, "flat-metadata")?;
    let mut order = Vec::new();
    let mut best = None;
    for name in PACKAGES_VARIANTS {
        let Some(listed) = release.files.get(name) else {
            continue;
        };
        let staged = staging.path().join(name);
        if context.stage_file(
            name,
            &context.current_metadata(name),
            &staged,
            listed.size,
            &listed.digest,
        )? {
            order.push(name.to_owned());
            if best.is_none() {
                best = Some(StagedIndex {
                    limit: context.inflate_limit(&staged, None),
                    url: context.fetcher.source().display(name),
                    path: staged,
                });
            }
        }
    }
    let Some(index) = best else {
        return Err(MirrorError::Malformed {
            file: "Release".into(),
            reason: "it lists no Packages index that the source has".into(),
        });
    };
    // The root files go last, so a client never sees a Release naming indexes not yet there.
    for (name, bytes) in &root.files {
        write_new(&staging.path().join(name), bytes)?;
        order.push((*name).to_owned());
    }
    if context.options.signer.is_some() && !order.iter().any(|n| n == "Release") {
        write_new(&staging.path().join("Release"), &root.release)?;
        order.push("Release".to_owned());
    }
    if let Some(pos) = order.iter().position(|n| n == "InRelease") {
        let in_release = order.remove(pos);
        order.push(in_release);
    }
    let mut packages = Vec::new();
    read_index(context, &index, "Packages", &mut packages)?;
    Ok(Plan {
        format: "apt",
        trees: vec![StagedTree {
            staging,
            kind: super::TreeKind::Apt,
            changed,
            flat_files: Some(order),
        }],
        packages,
        indexes: vec![super::SourceIndex::Packages {
            index,
            suite: None,
            component: String::new(),
        }],
    })
}

fn read_index(
    context: &Context<'_>,
    index: &StagedIndex,
    name: &str,
    packages: &mut Vec<Wanted>,
) -> Result<(), MirrorError> {
    let (input, guard) = index.open()?;
    guard.check(read_stanzas(context, input, name, packages))
}

fn read_stanzas(
    context: &Context<'_>,
    input: impl std::io::BufRead,
    name: &str,
    packages: &mut Vec<Wanted>,
) -> Result<(), MirrorError> {
    let malformed = |reason: String| MirrorError::Malformed {
        file: name.to_owned(),
        reason,
    };
    for stanza in crate::apt::read_packages(input) {
        let stanza = stanza.map_err(|e| malformed(e.to_string()))?;
        let package = stanza.get("Package").unwrap_or("?");
        let filename = stanza
            .get("Filename")
            .ok_or_else(|| malformed(format!("package `{package}` has no Filename")))?;
        // Flat repositories (apt-ftparchive, `vrepo index`) write `./NAME.deb`.
        let filename = filename.strip_prefix("./").unwrap_or(filename);
        context.check_path(filename, name)?;
        let size = stanza
            .get("Size")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| malformed(format!("`{filename}` has no valid Size")))?;
        let digest = [
            ("SHA512", Algorithm::Sha512),
            ("SHA256", Algorithm::Sha256),
            ("SHA1", Algorithm::Sha1),
            ("MD5sum", Algorithm::Md5),
        ]
        .iter()
        .find_map(|(field, algorithm)| stanza.get(field).map(|hex| (hex, *algorithm)))
        .ok_or_else(|| malformed(format!("`{filename}` has no checksum")))
        .and_then(|(hex, algorithm)| {
            Digest::new(algorithm, hex)
                .ok_or_else(|| malformed(format!("`{filename}` has a bad checksum")))
        })?;
        packages.push(Wanted {
            rel: filename.to_owned(),
            size,
            digest,
        });
    }
    Ok(())
}
