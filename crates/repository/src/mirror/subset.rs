//! `vrepo mirror --packages`: keep only the requested packages and their dependency closure,
//! and publish metadata that describes exactly them.
//!
//! The planners stage the source's metadata as for a full mirror; [`select`] reads the staged
//! package indexes, resolves the closure ([`crate::closure`]) and drops every other package
//! from the plan. After the downloads, [`SubsetPlan::reindex`] builds the subset's metadata
//! with the `vrepo index` code: the chosen packages are hard-linked into a view directory
//! per index (`DEST/.vrepo/subset-view/…`, kept between runs so the indexer's `--update`
//! cache applies), indexed there, and the result is staged for the usual atomic switch. The
//! source's metadata is never published: it names packages the subset does not have.
//!
//! For apt sources the archive's `Priority` and `Section` are carried over through an
//! override file, since bootstrappers select the base system on the archive's priorities
//! rather than the packages' own. Each suite gets one `Release` listing every component and
//! architecture the source's indexes had, with empty indexes where the subset has no package,
//! so the clients' `sources.list` lines stay valid. The subset's metadata is unsigned (it is
//! not the source's).
//!
//! Whether anything changed is decided on a fingerprint of the chosen packages (path, digest
//! and index) and of the root metadata files published, recorded in `DEST/.vrepo/mirror.subset`:
//! the source's metadata may change without the subset changing, and then nothing is
//! rewritten; metadata that another run (a full mirror) wrote since is always replaced.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::{
    Context, MirrorError, Plan, SourceIndex, StagedTree, Wanted, io_err, make_parents, part_name,
};
use crate::apt::{
    AptIndexOptions, AptLayout, ReleaseEntry, ReleaseFields, index_apt, write_release,
};
use crate::closure::{
    DebEntry, Missing, SetMember, SubsetOptions, expand_deb_sets, missing_line, resolve_deb,
    resolve_rpm,
};
use crate::deb::checksum::MultiHasher;
use crate::progress::NoProgress;
use crate::publish::Staging;
use crate::rpmmd::{ReadError, RpmIndexOptions, index_rpm, read_primary};

const VIEW_DIR: &str = "subset-view";
/// Under `DEST/.vrepo/`: the last selection and what it was computed from.
const SELECTION_FILE: &str = "mirror.selection";
/// Under `DEST/.vrepo/`: the source's metadata as last fetched (see
/// [`super::Context::current_metadata`]).
pub(crate) const SOURCE_COPY_DIR: &str = "subset-source";
const FINGERPRINT_FILE: &str = "mirror.subset";

/// Where one group of chosen packages is indexed and published.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    /// `repodata/`.
    RpmMd,
    /// A flat apt repository at the top of DEST.
    AptFlat,
    /// `dists/SUITE/COMPONENT`.
    AptDists { suite: String, component: String },
}

impl Target {
    fn view_name(&self) -> String {
        match self {
            Target::RpmMd => "rpm-md".into(),
            Target::AptFlat => "apt-flat".into(),
            Target::AptDists { suite, component } => {
                format!(
                    "apt-{}-{}",
                    suite.replace('/', "_"),
                    component.replace('/', "_")
                )
            }
        }
    }
}

/// The resolved subset of one run.
pub(crate) struct SubsetPlan {
    /// What could not be resolved (the run goes on only with `skip_missing`).
    pub(crate) missing: Vec<Missing>,
    /// The chosen package paths of each target.
    groups: BTreeMap<Target, BTreeSet<String>>,
    /// `name priority section` lines per target, from the source's indexes (apt only).
    overrides: BTreeMap<Target, BTreeSet<String>>,
    /// The architectures of the source's indexes per target (apt `dists` only), which the
    /// subset keeps even where it has no package of one.
    architectures: BTreeMap<Target, BTreeSet<String>>,
}

fn read_error(file: &str) -> impl Fn(ReadError) -> MirrorError + '_ {
    move |e| match e {
        ReadError::Malformed(reason) => MirrorError::Malformed {
            file: file.to_owned(),
            reason,
        },
        ReadError::Io { path, source } => MirrorError::Io {
            action: "read",
            path,
            source,
        },
    }
}

/// Resolves `wanted` over the staged indexes of `plan` and keeps only the chosen packages.
///
/// The selection is a function of the indexes and the request, so it is cached under
/// `.vrepo/` keyed by both: a run over an unchanged source skips reading and resolving.
pub(crate) fn select(
    context: &Context<'_>,
    plan: &mut Plan,
    wanted: &SubsetOptions,
) -> Result<SubsetPlan, MirrorError> {
    let key = selection_key(plan, wanted);
    let cache = context.state_dir.join(SELECTION_FILE);
    let cached = key.as_deref().and_then(|key| read_selection(&cache, key));
    let subset = match cached {
        Some(subset) => subset,
        None => {
            let subset = resolve(plan, wanted)?;
            if let Some(text) = key.as_deref().and_then(|key| write_selection(key, &subset)) {
                // Only a cache: a failure to write it costs the next run some time.
                let _ = crate::publish::write_file_atomic(&cache, text.as_bytes());
            }
            subset
        }
    };
    if !subset.missing.is_empty() && !wanted.skip_missing {
        return Err(MirrorError::Unresolved {
            count: subset.missing.len(),
            list: missing_line(&subset.missing),
            missing: subset.missing,
        });
    }
    let keep: BTreeSet<&String> = subset.groups.values().flatten().collect();
    plan.packages.retain(|p| keep.contains(&p.rel));
    Ok(subset)
}

/// What identifies a selection: the request and the content of every index read.
fn selection_key(plan: &Plan, wanted: &SubsetOptions) -> Option<String> {
    let mut hasher = Sha256::new();
    hasher.update(format!("selection v1\n{wanted:?}\n"));
    for index in &plan.indexes {
        let (path, label) = match index {
            SourceIndex::Primary(index) => (&index.path, "primary".to_owned()),
            SourceIndex::Packages {
                index,
                suite,
                component,
            } => (&index.path, format!("packages {suite:?} {component}")),
        };
        let mut file = File::open(path).ok()?;
        let mut content = Sha256::new();
        std::io::copy(&mut file, &mut content).ok()?;
        hasher.update(format!("{label} {}\n", hex::encode(content.finalize())));
    }
    Some(hex::encode(hasher.finalize()))
}

/// The cache file: `key K`, then `G TARGET REL`, `O TARGET LINE` and `M NEEDED_BY WHAT` lines,
/// tab-separated (a TARGET is three fields). `None` when a value holds a tab or a newline
/// (metadata can say anything): such a selection is not cached.
fn write_selection(key: &str, subset: &SubsetPlan) -> Option<String> {
    let mut out = format!("key\t{key}\n");
    let mut line = |fields: &[&str]| {
        let clean = fields.iter().all(|f| !f.contains(['\t', '\n', '\r']));
        out.push_str(&fields.join("\t"));
        out.push('\n');
        clean
    };
    let mut clean = true;
    for (kind, map) in [
        ("G", &subset.groups),
        ("O", &subset.overrides),
        ("A", &subset.architectures),
    ] {
        for (target, values) in map {
            let (name, suite, component) = match target {
                Target::RpmMd => ("rpm-md", "", ""),
                Target::AptFlat => ("apt-flat", "", ""),
                Target::AptDists { suite, component } => {
                    ("dists", suite.as_str(), component.as_str())
                }
            };
            for value in values {
                clean &= line(&[kind, name, suite, component, value]);
            }
        }
    }
    for missing in &subset.missing {
        let by = missing.needed_by.as_deref().unwrap_or("");
        clean &= line(&["M", by, &missing.what]);
    }
    clean.then_some(out)
}

fn read_selection(path: &Path, key: &str) -> Option<SubsetPlan> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    if lines.next()? != format!("key\t{key}") {
        return None;
    }
    let mut subset = SubsetPlan {
        missing: Vec::new(),
        groups: BTreeMap::new(),
        overrides: BTreeMap::new(),
        architectures: BTreeMap::new(),
    };
    for line in lines {
        let fields: Vec<&str> = line.split('\t').collect();
        match fields.as_slice() {
            ["M", by, what] => subset.missing.push(Missing {
                needed_by: (!by.is_empty()).then(|| (*by).to_owned()),
                what: (*what).to_owned(),
            }),
            [kind @ ("G" | "O" | "A"), target, suite, component, value] => {
                let target = match *target {
                    "rpm-md" => Target::RpmMd,
                    "apt-flat" => Target::AptFlat,
                    "dists" => Target::AptDists {
                        suite: (*suite).to_owned(),
                        component: (*component).to_owned(),
                    },
                    _ => return None,
                };
                let map = match *kind {
                    "G" => &mut subset.groups,
                    "O" => &mut subset.overrides,
                    _ => &mut subset.architectures,
                };
                map.entry(target).or_default().insert((*value).to_owned());
            }
            _ => return None,
        }
    }
    Some(subset)
}

/// Reads the indexes and resolves the closure.
fn resolve(plan: &Plan, wanted: &SubsetOptions) -> Result<SubsetPlan, MirrorError> {
    let mut groups: BTreeMap<Target, BTreeSet<String>> = BTreeMap::new();
    let mut overrides: BTreeMap<Target, BTreeSet<String>> = BTreeMap::new();
    let mut architectures: BTreeMap<Target, BTreeSet<String>> = BTreeMap::new();
    let missing = if plan.format == "rpm-md" {
        let mut packages = Vec::new();
        for index in &plan.indexes {
            if let SourceIndex::Primary(index) = index {
                let (input, guard) = index.open()?;
                guard.check(
                    read_primary(input, |p| {
                        packages.push(dependency_fields(p));
                        Ok(())
                    })
                    .map_err(read_error("repodata primary")),
                )?;
            }
        }
        let names: BTreeSet<&str> = packages.iter().map(|p| p.name.as_str()).collect();
        let (requested, mut set_missing) = optional_and_sets(&wanted.packages, |name| {
            names.contains(name)
                || packages
                    .iter()
                    .any(|p| p.provides.iter().any(|d| d.name == name))
        });
        // Debian's sets mean nothing to an rpm-md source: say so rather than guess.
        for token in wanted.packages.iter().filter(|t| crate::closure::is_set(t)) {
            set_missing.push(crate::closure::Missing {
                needed_by: None,
                what: format!(
                    "{token} (a Debian package set; an rpm-md source takes names, or a \
                     distribution's lists with @dist:NAME)"
                ),
            });
        }
        let mut selection = resolve_rpm(&packages, &requested, wanted);
        selection.missing.splice(0..0, set_missing);
        let chosen = groups.entry(Target::RpmMd).or_default();
        for i in selection.chosen {
            chosen.insert(packages[i].location_href.clone());
        }
        selection.missing
    } else {
        // Every entry with the index it came from and its file; an entry listed by several
        // indexes (an `all` package in each binary-ARCH) is resolved once per listing, which
        // is harmless, and published in each index that lists it.
        let mut entries = Vec::new();
        let mut origin = Vec::new();
        // (name, Essential, Priority) per entry, for `@minbase` and the other sets.
        let mut set_fields: Vec<(String, bool, String)> = Vec::new();
        for index in &plan.indexes {
            let SourceIndex::Packages {
                index,
                suite,
                component,
            } = index
            else {
                continue;
            };
            let path = &index.path;
            let target = match suite {
                Some(suite) => Target::AptDists {
                    suite: suite.clone(),
                    component: component.clone(),
                },
                None => Target::AptFlat,
            };
            // Every index of the source gets one in the subset, empty if need be, so the
            // clients' sources.list lines stay valid.
            groups.entry(target.clone()).or_default();
            // Staged as `…/COMPONENT/binary-ARCH/Packages*`.
            if let Some(arch) = path
                .parent()
                .and_then(Path::file_name)
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("binary-"))
                && suite.is_some()
            {
                architectures
                    .entry(target.clone())
                    .or_default()
                    .insert(arch.to_owned());
            }
            let name = path.display().to_string();
            let malformed = |reason: String| MirrorError::Malformed {
                file: name.clone(),
                reason,
            };
            let (input, guard) = index.open()?;
            for stanza in crate::apt::read_packages(input) {
                let stanza = guard.check(stanza.map_err(|e| malformed(e.to_string())))?;
                let entry = DebEntry::from_stanza(&stanza).map_err(malformed)?;
                let filename = stanza.get("Filename").unwrap_or("");
                let filename = filename.strip_prefix("./").unwrap_or(filename).to_owned();
                let priority = stanza.get("Priority").unwrap_or("");
                let section = stanza.get("Section").unwrap_or("");
                let override_line = (!priority.is_empty() && !section.is_empty())
                    .then(|| format!("{} {priority} {section}", entry.name));
                set_fields.push((
                    entry.name.clone(),
                    stanza.get("Essential") == Some("yes"),
                    priority.to_owned(),
                ));
                entries.push(entry);
                origin.push((target.clone(), filename, override_line));
            }
        }
        let members: Vec<SetMember<'_>> = set_fields
            .iter()
            .map(|(name, essential, priority)| SetMember {
                name,
                essential: *essential,
                priority,
            })
            .collect();
        let names: BTreeSet<&str> = entries
            .iter()
            .flat_map(|e| {
                std::iter::once(e.name.as_str()).chain(e.provides.iter().map(|p| p.0.as_str()))
            })
            .collect();
        let expanded = expand_deb_sets(&wanted.packages, &members);
        let (requested, _) = optional_and_sets(&expanded, |name| {
            names.contains(name.split(':').next().unwrap_or(name))
        });
        let selection = resolve_deb(&entries, &requested, wanted);
        let chosen: BTreeSet<&str> = selection
            .chosen
            .iter()
            .map(|&i| origin[i].1.as_str())
            .collect();
        for (target, filename, override_line) in &origin {
            if chosen.contains(filename.as_str()) {
                groups
                    .entry(target.clone())
                    .or_default()
                    .insert(filename.clone());
                if let Some(line) = override_line {
                    overrides
                        .entry(target.clone())
                        .or_default()
                        .insert(line.clone());
                }
            }
        }
        selection.missing
    };
    Ok(SubsetPlan {
        missing,
        groups,
        overrides,
        architectures,
    })
}

/// The requested names without their optional marks: a `?NAME` the source lacks (as
/// `exists` tells) is left out, as a distribution's optional packages are at build time.
/// Set tokens are left to the caller; the second value is always empty here and is where a
/// caller adds what it refuses.
fn optional_and_sets(
    requested: &[String],
    exists: impl Fn(&str) -> bool,
) -> (Vec<String>, Vec<crate::closure::Missing>) {
    let mut out = Vec::new();
    for token in requested {
        if crate::closure::is_set(token) {
            continue;
        }
        match token.strip_prefix('?') {
            Some(name) if exists(name) => out.push(name.to_owned()),
            Some(_) => {}
            None => out.push(token.clone()),
        }
    }
    (out, Vec::new())
}

/// Only what the resolver reads: a large primary (Fedora's lists 70,000 packages) then fits
/// in a fraction of the memory.
fn dependency_fields(p: crate::rpmmd::Package) -> crate::rpmmd::Package {
    crate::rpmmd::Package {
        name: p.name,
        arch: p.arch,
        epoch: p.epoch,
        version: p.version,
        release: p.release,
        location_href: p.location_href,
        provides: p.provides,
        requires: p.requires,
        recommends: p.recommends,
        files: p.files,
        ..crate::rpmmd::Package::default()
    }
}

impl SubsetPlan {
    fn fingerprint(&self, packages: &[Wanted]) -> String {
        let digests: BTreeMap<&str, String> = packages
            .iter()
            .map(|p| (p.rel.as_str(), p.digest.to_string()))
            .collect();
        let mut hasher = Sha256::new();
        for (target, rels) in &self.groups {
            hasher.update(format!("{target:?}\n"));
            for rel in rels {
                let digest = digests.get(rel.as_str()).map_or("", String::as_str);
                hasher.update(format!("{rel} {digest}\n"));
            }
            for line in self.overrides.get(target).into_iter().flatten() {
                hasher.update(format!("override {line}\n"));
            }
        }
        format!("subset v1 {}\n", hex::encode(hasher.finalize()))
    }

    /// The digests of the root metadata files now in DEST (`repomd.xml`, `Release`): recorded
    /// with the fingerprint, they tell that DEST still holds what this subset published (and
    /// not, say, a full mirror's metadata written since).
    fn published_roots(&self, context: &Context<'_>) -> String {
        let mut out = String::new();
        for target in self.groups.keys() {
            let root = match target {
                Target::RpmMd => context.dest.join("repodata/repomd.xml"),
                Target::AptFlat => context.dest.join("Release"),
                Target::AptDists { suite, .. } => {
                    context.dest.join("dists").join(suite).join("Release")
                }
            };
            let digest = std::fs::read(&root)
                .map_or_else(|_| "missing".to_owned(), |b| hex::encode(Sha256::digest(b)));
            out.push_str(&format!("root {digest}\n"));
        }
        out
    }

    /// Whether the published metadata must change: another subset than last time, or DEST's
    /// metadata is not the one this subset published.
    pub(crate) fn metadata_changed(&self, context: &Context<'_>, packages: &[Wanted]) -> bool {
        let recorded = std::fs::read_to_string(context.state_dir.join(FINGERPRINT_FILE));
        let now = self.fingerprint(packages) + &self.published_roots(context);
        recorded.ok().as_deref() != Some(now.as_str())
    }

    /// Records the published subset; see [`SubsetPlan::metadata_changed`].
    pub(crate) fn record(
        &self,
        context: &Context<'_>,
        packages: &[Wanted],
    ) -> Result<(), MirrorError> {
        let text = self.fingerprint(packages) + &self.published_roots(context);
        crate::publish::write_file_atomic(
            &context.state_dir.join(FINGERPRINT_FILE),
            text.as_bytes(),
        )?;
        Ok(())
    }

    /// Indexes the subset and stages its metadata trees. `downloaded` are the packages that
    /// are still in `parts`; the others are in DEST already.
    pub(crate) fn reindex(
        &self,
        context: &Context<'_>,
        parts: &Path,
        packages: &[Wanted],
        downloaded: &[&Wanted],
    ) -> Result<Vec<StagedTree>, MirrorError> {
        let by_rel: BTreeMap<&str, &Wanted> =
            packages.iter().map(|p| (p.rel.as_str(), p)).collect();
        let fresh: BTreeSet<&str> = downloaded.iter().map(|w| w.rel.as_str()).collect();
        let views = context.state_dir.join(VIEW_DIR);
        std::fs::create_dir_all(&views).map_err(io_err("create", &views))?;
        // Views of targets no longer chosen go.
        let names: BTreeSet<String> = self.groups.keys().map(Target::view_name).collect();
        if let Ok(entries) = std::fs::read_dir(&views) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !names.contains(&name) && !name.ends_with(".override") {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let mut trees = Vec::new();
        let mut suites: BTreeMap<&str, Vec<IndexedComponent<'_>>> = BTreeMap::new();
        for (target, rels) in &self.groups {
            let view = views.join(target.view_name());
            let files: Vec<(&str, PathBuf)> = rels
                .iter()
                .filter_map(|rel| by_rel.get(rel.as_str()))
                .map(|w| {
                    let from = if fresh.contains(w.rel.as_str()) {
                        parts.join(part_name(&w.digest))
                    } else {
                        context.dest.join(&w.rel)
                    };
                    (w.rel.as_str(), from)
                })
                .collect();
            sync_view(&view, &files)?;
            let reindex_error =
                |source: Box<dyn std::error::Error + Send + Sync>| MirrorError::Reindex {
                    path: view.clone(),
                    source,
                };
            match target {
                Target::RpmMd => {
                    let options = RpmIndexOptions {
                        update: true,
                        ..RpmIndexOptions::default()
                    };
                    index_rpm(&view, &options, &NoProgress)
                        .map_err(|e| reindex_error(Box::new(e)))?;
                    let staging = Staging::new(context.dest, "repodata")?;
                    copy_tree(&view.join("repodata"), staging.path())?;
                    trees.push(StagedTree {
                        staging,
                        kind: super::TreeKind::RpmMd,
                        changed: true,
                        flat_files: None,
                    });
                }
                Target::AptFlat => {
                    index_apt(
                        &view,
                        &self.apt_options(&views, target, AptLayout::Flat)?,
                        &NoProgress,
                    )
                    .map_err(|e| reindex_error(Box::new(e)))?;
                    let staging = Staging::new(&context.state_dir, "subset-flat")?;
                    let mut order = Vec::new();
                    for name in [
                        "Packages.gz",
                        "Packages.xz",
                        "Packages.zst",
                        "Packages",
                        "Release",
                    ] {
                        let from = view.join(name);
                        if from.is_file() {
                            link_or_copy(&from, &staging.path().join(name))?;
                            order.push(name.to_owned());
                        }
                    }
                    trees.push(StagedTree {
                        staging,
                        kind: super::TreeKind::Apt,
                        changed: true,
                        flat_files: Some(order),
                    });
                }
                Target::AptDists { suite, component } => {
                    let layout = AptLayout::Dists {
                        suite: suite.clone(),
                        component: component.clone(),
                    };
                    let report = index_apt(
                        &view,
                        &self.apt_options(&views, target, layout)?,
                        &NoProgress,
                    )
                    .map_err(|e| reindex_error(Box::new(e)))?;
                    suites
                        .entry(suite.as_str())
                        .or_default()
                        .push(IndexedComponent {
                            name: component,
                            tree: view.join("dists").join(suite).join(component),
                            architectures: report
                                .architectures
                                .into_iter()
                                .chain(
                                    self.architectures
                                        .get(target)
                                        .into_iter()
                                        .flatten()
                                        .cloned(),
                                )
                                .collect(),
                        });
                }
            }
        }
        for (suite, components) in suites {
            trees.push(stage_suite(context, suite, &components)?);
        }
        Ok(trees)
    }

    fn apt_options(
        &self,
        views: &Path,
        target: &Target,
        layout: AptLayout,
    ) -> Result<AptIndexOptions, MirrorError> {
        let mut options = AptIndexOptions {
            layout,
            update: true,
            ..AptIndexOptions::default()
        };
        if let Some(lines) = self.overrides.get(target) {
            let path = views.join(format!("{}.override", target.view_name()));
            let mut text = String::new();
            for line in lines {
                text.push_str(line);
                text.push('\n');
            }
            crate::publish::write_file_atomic(&path, text.as_bytes())?;
            options.override_file = Some(path);
        }
        Ok(options)
    }
}

/// Keeps the source's staged metadata under `.vrepo/subset-source/`, so the next run links
/// what did not change instead of fetching it again. Only a cache: failures are ignored.
pub(crate) fn keep_source_metadata(context: &Context<'_>, format: &str, trees: &[StagedTree]) {
    let copy = context.state_dir.join(SOURCE_COPY_DIR);
    let _ = std::fs::create_dir_all(&copy);
    // The planners stage rpm-md's one tree, one tree per suite in order, or one flat tree.
    let names: Vec<String> = if format == "rpm-md" {
        vec!["repodata".to_owned()]
    } else {
        context
            .options
            .suites
            .iter()
            .map(|s| format!("dists/{s}"))
            .collect()
    };
    for (tree, rel) in trees
        .iter()
        .zip(names.iter().map(Some).chain(std::iter::repeat(None)))
    {
        if let Some(files) = &tree.flat_files {
            for name in files {
                let to = copy.join(name);
                let _ = std::fs::remove_file(&to);
                let _ = link_or_copy(&tree.staging.path().join(name), &to);
            }
        } else if let Some(rel) = rel {
            let to = copy.join(rel);
            let _ = std::fs::remove_dir_all(&to);
            if std::fs::create_dir_all(&to).is_ok() {
                let _ = copy_tree(tree.staging.path(), &to);
            }
        }
    }
}

/// Makes `view` hold exactly `files` (relative path, where the verified file is), as hard
/// links where possible; files already linked to the same inode are left alone.
fn sync_view(view: &Path, files: &[(&str, PathBuf)]) -> Result<(), MirrorError> {
    use std::os::unix::fs::MetadataExt;
    std::fs::create_dir_all(view).map_err(io_err("create", view))?;
    let wanted: BTreeSet<&str> = files.iter().map(|(rel, _)| *rel).collect();
    for entry in walkdir::WalkDir::new(view)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| {
            let name = e.file_name().to_string_lossy();
            !(e.depth() == 1 && (name.starts_with('.') || name == "repodata" || name == "dists"))
        })
        .flatten()
    {
        if !entry.file_type().is_file() {
            continue;
        }
        let rel = entry.path().strip_prefix(view).unwrap_or(entry.path());
        let is_package = rel.extension().is_some_and(|e| e == "rpm" || e == "deb");
        if is_package && !rel.to_str().is_some_and(|r| wanted.contains(r)) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    for (rel, from) in files {
        let target = make_parents(view, rel)?;
        let source_meta = std::fs::metadata(from).map_err(io_err("read", from))?;
        if let Ok(meta) = std::fs::symlink_metadata(&target) {
            if meta.ino() == source_meta.ino() && meta.dev() == source_meta.dev() {
                continue;
            }
            std::fs::remove_file(&target).map_err(io_err("remove", &target))?;
        }
        link_or_copy(from, &target)?;
    }
    Ok(())
}

fn link_or_copy(from: &Path, to: &Path) -> Result<(), MirrorError> {
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to).map_err(io_err("copy", from))?;
    }
    Ok(())
}

/// Copies the regular files under `from` into `to`, keeping the relative layout.
fn copy_tree(from: &Path, to: &Path) -> Result<(), MirrorError> {
    for entry in walkdir::WalkDir::new(from).min_depth(1).sort_by_file_name() {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(from).to_owned();
            MirrorError::Io {
                action: "read",
                path,
                source: e
                    .into_io_error()
                    .unwrap_or_else(|| std::io::Error::other("walk failed")),
            }
        })?;
        let rel = entry.path().strip_prefix(from).unwrap_or(entry.path());
        let target = to.join(rel);
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&target).map_err(io_err("create", &target))?;
        } else if entry.file_type().is_file() {
            link_or_copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// One component of a suite, indexed in its view.
struct IndexedComponent<'a> {
    name: &'a str,
    /// `VIEW/dists/SUITE/COMPONENT`.
    tree: PathBuf,
    architectures: Vec<String>,
}

/// Stages `dists/SUITE` from the indexed components, with one `Release` listing them all.
fn stage_suite(
    context: &Context<'_>,
    suite: &str,
    components: &[IndexedComponent<'_>],
) -> Result<StagedTree, MirrorError> {
    let target = make_parents(context.dest, &format!("dists/{suite}"))?;
    let parent = target.parent().unwrap_or(context.dest);
    let final_name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let staging = Staging::new(parent, &final_name)?;
    let mut architectures = BTreeSet::new();
    for component in components {
        let staged = staging.path().join(component.name);
        if component.tree.is_dir() {
            copy_tree(&component.tree, &staged)?;
        }
        // An architecture the subset has no package of still gets its (empty) index.
        for arch in &component.architectures {
            let dir = staged.join(format!("binary-{arch}"));
            if !dir.join("Packages").exists() {
                std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
                super::write_new(&dir.join("Packages"), b"")?;
            }
        }
        architectures.extend(component.architectures.iter().cloned());
    }
    if architectures.len() > 1 {
        architectures.remove("all");
    }
    let mut entries = Vec::new();
    for entry in walkdir::WalkDir::new(staging.path())
        .min_depth(2)
        .sort_by_file_name()
        .into_iter()
        .flatten()
    {
        if !entry.file_type().is_file() {
            continue;
        }
        let path = entry.path();
        let mut hasher = MultiHasher::new();
        let mut file = File::open(path).map_err(io_err("read", path))?;
        let mut buffer = vec![0; 1 << 16];
        loop {
            let n = file.read(&mut buffer).map_err(io_err("read", path))?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
        }
        let size = hasher.len();
        let rel = path.strip_prefix(staging.path()).unwrap_or(path);
        entries.push(ReleaseEntry {
            path: rel.to_string_lossy().into_owned(),
            size,
            checksums: hasher.finish(),
        });
    }
    let fields = ReleaseFields {
        suite: Some(suite.to_owned()),
        architectures: architectures.into_iter().collect(),
        components: components.iter().map(|c| c.name.to_owned()).collect(),
        ..ReleaseFields::default()
    };
    let release = write_release(&fields, &entries);
    super::write_new(&staging.path().join("Release"), release.as_bytes())?;
    Ok(StagedTree {
        staging,
        kind: super::TreeKind::Apt,
        changed: true,
        flat_files: None,
    })
}
