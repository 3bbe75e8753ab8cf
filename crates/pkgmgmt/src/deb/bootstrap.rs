//! Our own Debian bootstrap, with the host's apt and dpkg (no debootstrap, no mmdebstrap).
//!
//! An empty guest has no `/bin/sh`, so dpkg cannot run the first maintainer scripts. The way
//! out, as debootstrap and mmdebstrap take it, is to extract packages without dpkg first; we
//! extract fewer of them, and decompress each only once:
//!
//! 1. `apt-get update` with the guest's sources; apt verifies `Release` files with the keyrings
//!    in `.pkg/G/apt/etc/trusted.gpg.d` (a line marked `[trusted=yes]` skips that, explicitly).
//! 2. The merged-`/usr` links (`/bin` → `usr/bin`, …), so that unpacking keeps them.
//! 3. apt resolves and downloads the Essential set (`?essential` and what it depends on) against
//!    the empty database.
//! 4. Each of those packages is copied, in parallel, into `.pkg/G/apt/cache/bootstrap/` with
//!    its data member decompressed ([`copy_with_plain_data`]): the two readers below then only
//!    copy bytes (xz decompression is most of the CPU time of a bootstrap).
//! 5. The toolbox ([`super::toolbox`]: Essential packages and Pre-Depends, what maintainer
//!    scripts may rely on) is extracted into the guest (`dpkg-deb --fsys-tarfile | tar
//!    --keep-directory-symlink`), inside the sandbox: now `/bin/sh`, the C library and the
//!    tools the scripts call exist, though no database knows them yet.
//! 6. `dpkg --install --force-depends` of all the copies, the toolbox last (its files exist and
//!    are replaced; replacing them after the rest is created keeps the inode allocator of a
//!    journal-less ext4 from scanning the freed ones at every creation). dpkg records them and
//!    configures them in the order their dependencies need, running every maintainer script
//!    chrooted in the guest. The copies are deleted.
//! 7. The variant's remaining packages through apt (which drives the host's dpkg):
//!    `minbase` adds `Priority: required` as the archive's index says (`?priority(required)`),
//!    plus `apt`; `buildd` adds `build-essential` too.
//!
//! The sandbox holds every step that unpacks package content (5, 6, 7): the host is read-only
//! there, so a hostile path in a package can only reach the guest and its own `.pkg` state.
//! Step 4 runs on the host but only parses (with the checks and limits of the indexer's reader)
//! and writes into `.pkg/G`.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use vserver_repository::deb::control::Stanza;
use vserver_repository::deb::{DebError, PlainCopy, copy_open_with_plain_data};
use vserver_sandbox::CapabilityProfile;

use super::toolbox::script_toolbox;
use super::{DebBackend, DebTool, Streams};
use crate::error::{Error, Result};
use crate::host_fs;
use crate::layout::PkgLayout;

/// Which packages a bootstrap installs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Variant {
    /// The Essential set and its dependencies only.
    Essential,
    /// Essential, `Priority: required`, and `apt` (debootstrap's and mmdebstrap's `minbase`).
    #[default]
    Minbase,
    /// `minbase` plus `build-essential`.
    Buildd,
}

impl Variant {
    /// The variant's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Essential => "essential",
            Variant::Minbase => "minbase",
            Variant::Buildd => "buildd",
        }
    }

    /// What apt installs after the Essential set (package names and apt patterns).
    pub fn packages(self) -> &'static [&'static str] {
        match self {
            Variant::Essential => &[],
            Variant::Minbase => &["?priority(required)", "apt"],
            Variant::Buildd => &["?priority(required)", "apt", "build-essential"],
        }
    }
}

impl std::str::FromStr for Variant {
    type Err = String;
    fn from_str(text: &str) -> std::result::Result<Self, String> {
        match text {
            "essential" => Ok(Variant::Essential),
            "minbase" => Ok(Variant::Minbase),
            "buildd" => Ok(Variant::Buildd),
            other => Err(format!(
                "unknown variant `{other}` (expected essential, minbase or buildd)"
            )),
        }
    }
}

/// The merged-`/usr` links debootstrap creates on amd64 (others get the first three).
const MERGED_USR: &[(&str, &str)] = &[
    ("/bin", "usr/bin"),
    ("/sbin", "usr/sbin"),
    ("/lib", "usr/lib"),
    ("/lib64", "usr/lib64"),
];

/// The script that extracts package contents without dpkg: `$1` is the guest root, `$2` a file
/// listing the package files, one per line (the list stays out of the command line, which every
/// error message shows). One package per job, as many jobs at a time as CPUs: the packages of
/// the Essential set do not share files, and dpkg unpacks them all again in the next step.
const EXTRACT_SCRIPT: &str = "set -eu -o pipefail\n\
     xargs --delimiter='\\n' --no-run-if-empty --max-args=1 --max-procs=\"$(nproc 2>/dev/null || echo 1)\" \
     bash -c 'set -o pipefail; dpkg-deb --fsys-tarfile \"$1\" | tar --extract --file=- --directory=\"$0\" \
     --keep-directory-symlink --same-owner --preserve-permissions --no-overwrite-dir' \"$1\" \
     < \"$2\"\n";

/// At most this many packages are decompressed at a time: each xz decoder may take up to 256 MiB
/// for a hostile stream (real packages need at most 65 MiB, Debian's about 9 MiB).
const MAX_COPY_THREADS: usize = 16;

/// `-o APT::Install-Recommends=false`: a bootstrap installs what the variant names.
const NO_RECOMMENDS: &str = "-oAPT::Install-Recommends=false";

impl DebBackend {
    /// Bootstraps the guest from nothing; see the module documentation. `on_phase` hears each
    /// step's name. [`crate::PackageBackend::prepare`] and
    /// [`crate::PackageBackend::initialize_database`] must have run.
    pub fn bootstrap(&self, variant: Variant, on_phase: &mut dyn FnMut(&str)) -> Result<()> {
        on_phase("apt update");
        self.apt_get(&[OsStr::new("-q"), OsStr::new("update")])?;
        if self.settings.merged_usr {
            self.make_merged_usr()?;
        }
        on_phase("download the Essential set");
        self.clean_archives()?;
        let essential = self.download(&["?essential"])?;
        if essential.is_empty() {
            return Err(Error::Bootstrap {
                guest: self.guest(),
                problem:
                    "the repositories hold no Essential package; check the guest's sources.list"
                        .into(),
            });
        }
        on_phase(&format!(
            "decompress {} Essential packages",
            essential.len()
        ));
        let copies = BootstrapCopies::make(self, &essential)?;
        let (mut toolbox, mut others) = (Vec::new(), Vec::new());
        for (file, chosen) in copies.files.iter().zip(script_toolbox(&copies.controls)) {
            if chosen {
                toolbox.push(file)
            } else {
                others.push(file)
            }
        }
        on_phase(&format!(
            "extract {} packages for the maintainer scripts",
            toolbox.len()
        ));
        self.extract(&toolbox)?;
        on_phase(&format!("install {} Essential packages", essential.len()));
        let mut args = vec![OsString::from("--install"), "--force-depends".into()];
        args.extend(
            others
                .iter()
                .chain(&toolbox)
                .map(|file| self.in_sandbox(file).into_os_string()),
        );
        let mut command = self.tool_command(DebTool::Dpkg, &args)?;
        if let Some(sink) = &self.progress {
            command.observe_stdout_lines(crate::progress::dpkg_observer(
                sink.clone(),
                Some(essential.len() as u64),
            ));
        }
        let installed = self.run_checked("dpkg", &mut command, Streams::Quiet);
        let removed = copies.remove(self);
        installed?;
        removed?;
        if !variant.packages().is_empty() {
            on_phase(&format!("install the {} packages", variant.as_str()));
            let mut args: Vec<&OsStr> = vec![
                OsStr::new("-y"),
                OsStr::new(NO_RECOMMENDS),
                OsStr::new("install"),
            ];
            args.extend(variant.packages().iter().map(OsStr::new));
            self.apt_get_install(&args)?;
        }
        Ok(())
    }

    fn make_merged_usr(&self) -> Result<()> {
        let root = self.guest_root()?;
        for (link, target) in MERGED_USR {
            if root.exists(link).map_err(self.guest_err())? {
                continue;
            }
            root.mkdir_all(format!("/{target}"), 0o755)
                .map_err(self.guest_err())?;
            root.symlink(target, link).map_err(self.guest_err())?;
        }
        Ok(())
    }

    fn clean_archives(&self) -> Result<()> {
        crate::PackageBackend::clean_cache(self)
    }

    /// Resolves `packages` against the current database, downloads them, and returns the package
    /// files: apt leaves those of `file:` repositories where they are (it copies only from
    /// `copy:`), so `--print-uris` says where each one is.
    fn download(&self, packages: &[&str]) -> Result<Vec<PathBuf>> {
        let mut args: Vec<&OsStr> = vec![
            OsStr::new("-y"),
            OsStr::new(NO_RECOMMENDS),
            OsStr::new("--print-uris"),
            OsStr::new("-qq"),
            OsStr::new("install"),
        ];
        args.extend(packages.iter().map(OsStr::new));
        let listing = self.apt_get_output(&args)?;
        args.retain(|a| *a != "--print-uris" && *a != "-qq");
        args.insert(0, OsStr::new("--download-only"));
        self.apt_get(&args)?;
        let archives = self.layout.host("apt/cache/archives");
        let mut files = Vec::new();
        for line in String::from_utf8_lossy(&listing).lines() {
            let Some(uri) = line.strip_prefix('\'').and_then(|l| l.split('\'').next()) else {
                continue;
            };
            let file_name = line.split_whitespace().nth(1).unwrap_or_default();
            let path = match uri.strip_prefix("file:") {
                Some(path) => PathBuf::from(percent_decode(path.trim_start_matches("//"))),
                None if !file_name.is_empty() && !file_name.contains('/') => {
                    archives.join(file_name)
                }
                None => continue,
            };
            files.push(path);
        }
        files.sort();
        Ok(files)
    }

    /// Step 5: package contents into the guest, in the sandbox, without dpkg.
    fn extract(&self, debs: &[&PathBuf]) -> Result<()> {
        let list = "apt/cache/essential.list";
        let mut text = String::new();
        for deb in debs {
            text.push_str(&self.in_sandbox(deb).to_string_lossy());
            text.push('\n');
        }
        let state = self.layout.open_state()?;
        self.layout.write_trusted(&state, list, text.as_bytes())?;
        let mut command = self.command("/bin/bash", CapabilityProfile::Confined)?;
        // base-files ships `/proc` and `/sys` as directories; tar would try to change the modes
        // of the mounts on them.
        command
            .guest_proc(false)
            .guest_dev(false)
            .args(["-c", EXTRACT_SCRIPT, "vserver-extract"])
            .arg(&self.root)
            .arg(PkgLayout::in_sandbox(list));
        self.run_checked("tar", &mut command, Streams::Quiet)
            .map(drop)
    }
}

/// Step 4: the downloaded Essential packages, copied with their data members decompressed.
struct BootstrapCopies {
    /// The copies, in the order of the downloaded files.
    files: Vec<PathBuf>,
    /// Their control stanzas, in the same order.
    controls: Vec<Stanza>,
    dir: &'static str,
}

impl BootstrapCopies {
    /// Copies `debs` into a fresh `.pkg/G/apt/cache/bootstrap/`, as many at a time as CPUs,
    /// largest first so that no thread is left with a big one at the end.
    fn make(backend: &DebBackend, debs: &[PathBuf]) -> Result<BootstrapCopies> {
        // Host code reading and writing apt's cache, which the sandbox can write: through the
        // safe-path layer, regular files only, nothing followed out of `.pkg/G`.
        let dir = "apt/cache/bootstrap";
        let state = backend.layout.open_state()?;
        remove_dir_if_present(backend, &state, dir)?;
        state.mkdir(dir, 0o700).map_err(backend.state_err())?;
        let files: Vec<PathBuf> = (0..debs.len())
            .map(|i| backend.layout.host(dir).join(format!("{i:04}.deb")))
            .collect();
        let mut order: Vec<usize> = (0..debs.len()).collect();
        let size = |i: &usize| match debs[*i].strip_prefix(backend.layout.dir()) {
            Ok(rel) => state.metadata(rel).map_or(0, |m| m.size),
            Err(_) => host_fs::metadata(&debs[*i]).map_or(0, |m| m.len()),
        };
        order.sort_by_cached_key(|i| std::cmp::Reverse(size(i)));

        let next = AtomicUsize::new(0);
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_COPY_THREADS);
        let mut outcomes: Vec<(usize, Result<PlainCopy, DebError>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers.min(debs.len()))
                .map(|_| {
                    scope.spawn(|| {
                        let mut done = Vec::new();
                        while let Some(&i) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
                            let result = copy_safely(backend, &state, &debs[i], &files[i]);
                            let failed = result.is_err();
                            done.push((i, result));
                            if failed {
                                // The others stop at their next package.
                                next.store(order.len(), Ordering::Relaxed);
                            }
                        }
                        done
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|handle| handle.join().unwrap_or_default())
                .collect()
        });
        outcomes.sort_by_key(|(i, _)| *i);
        let mut controls = Vec::with_capacity(debs.len());
        let mut failure = None;
        for (i, result) in outcomes {
            match result {
                Ok(copy) if i == controls.len() => controls.push(copy.control),
                Ok(_) => {
                    // A package before this one was never copied: the workers stopped after an
                    // error (found further on, and reported instead) or one of them panicked.
                    failure.get_or_insert_with(|| uncopied(&debs[controls.len()]));
                }
                Err(err) => {
                    failure = Some(err);
                    break;
                }
            }
        }
        if failure.is_none() && controls.len() < debs.len() {
            failure = Some(uncopied(&debs[controls.len()]));
        }
        if let Some(source) = failure {
            // The failure matters more than a failed clean-up.
            let _ = remove_dir_if_present(backend, &state, dir);
            return Err(Error::Package {
                guest: backend.guest(),
                source: Box::new(source),
            });
        }
        Ok(BootstrapCopies {
            files,
            controls,
            dir,
        })
    }

    fn remove(self, backend: &DebBackend) -> Result<()> {
        let state = backend.layout.open_state()?;
        remove_dir_if_present(backend, &state, self.dir)
    }
}

/// [`copy_open_with_plain_data`] with both files opened through `state` when they lie below
/// `.pkg/G` (a downloaded package; the copy), or as a trusted host path otherwise (a `file:`
/// mirror).
fn copy_safely(
    backend: &DebBackend,
    state: &vserver_sandbox::GuestRoot,
    deb: &Path,
    copy: &Path,
) -> Result<PlainCopy, DebError> {
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |e: vserver_sandbox::Error| DebError::Io {
            path,
            source: std::io::Error::other(e.to_string()),
        }
    };
    let input = match deb.strip_prefix(backend.layout.dir()) {
        Ok(rel) => state.open_file(rel).map_err(io_err(deb))?,
        Err(_) => host_fs::open(deb).map_err(|source| DebError::Io {
            path: deb.to_owned(),
            source,
        })?,
    };
    let rel = copy
        .strip_prefix(backend.layout.dir())
        .map_err(|_| DebError::Io {
            path: copy.to_owned(),
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        })?;
    let output = state.create_new(rel, 0o644).map_err(io_err(copy))?;
    copy_open_with_plain_data(input, deb, output, copy)
}

/// The error for a package a panicked copying thread left behind.
fn uncopied(deb: &Path) -> DebError {
    DebError::Io {
        path: deb.to_owned(),
        source: std::io::Error::other("the copying thread failed"),
    }
}

fn remove_dir_if_present(
    backend: &DebBackend,
    state: &vserver_sandbox::GuestRoot,
    dir: &str,
) -> Result<()> {
    state.remove_all_if_exists(dir).map_err(backend.state_err())
}

/// Decodes `%XX` escapes (apt writes `+` in versions as `%2b`).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(byte) = text
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::percent_decode;

    #[test]
    fn decodes_apt_uris() {
        assert_eq!(
            percent_decode("/m/pool/libc6_2.36-9%2bdeb12u14_amd64.deb"),
            "/m/pool/libc6_2.36-9+deb12u14_amd64.deb"
        );
        assert_eq!(percent_decode("/a%2"), "/a%2");
        assert_eq!(percent_decode("/a%zz"), "/a%zz");
    }
}
