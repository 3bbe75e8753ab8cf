//! What the trusted database says each packaged file should be: from rpm's headers (a query
//! run by the host's rpm in the sandbox) or from dpkg's `md5sums` files and the `Conffiles` of
//! its status file (read from `.pkg/G` through the safe-path layer: a sandbox wrote them).

use std::path::{Path, PathBuf};

use vserver_sandbox::GuestRoot;

/// How a digest was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Algo {
    Md5,
    Sha1,
    Sha256,
    Sha384,
    Sha512,
    Sha224,
}

impl Algo {
    /// rpm's `FILEDIGESTALGO` numbers (RFC 4880's hash ids); none recorded means MD5.
    fn from_rpm(text: &str) -> Option<Algo> {
        match text {
            "1" | "(none)" | "" => Some(Algo::Md5),
            "2" => Some(Algo::Sha1),
            "8" => Some(Algo::Sha256),
            "9" => Some(Algo::Sha384),
            "10" => Some(Algo::Sha512),
            "11" => Some(Algo::Sha224),
            _ => None,
        }
    }
}

/// rpm's per-file verify bits (`RPMVERIFY_*`), also used for dpkg (digest only).
pub(crate) mod checks {
    pub(crate) const DIGEST: u32 = 1;
    pub(crate) const SIZE: u32 = 1 << 1;
    pub(crate) const LINKTO: u32 = 1 << 2;
    pub(crate) const USER: u32 = 1 << 3;
    pub(crate) const GROUP: u32 = 1 << 4;
    pub(crate) const MTIME: u32 = 1 << 5;
    pub(crate) const MODE: u32 = 1 << 6;
}

/// One packaged file as the database records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Expected {
    /// Its path in the guest.
    pub(crate) path: PathBuf,
    /// The package that owns it.
    pub(crate) package: String,
    /// A configuration file (`%config`, a conffile).
    pub(crate) config: bool,
    /// A `%ghost` (rpm): may be missing, and its content is not the package's.
    pub(crate) ghost: bool,
    /// Only whether it exists is checked (rpm: a file another package replaced).
    pub(crate) exists_only: bool,
    /// `st_mode` (type and permission bits), when recorded.
    pub(crate) mode: u32,
    /// The digest, hex, and how it was made.
    pub(crate) digest: Option<(Algo, String)>,
    pub(crate) size: u64,
    pub(crate) user: String,
    pub(crate) group: String,
    pub(crate) mtime: i64,
    pub(crate) link_to: String,
    /// Which of [`checks`] apply.
    pub(crate) checks: u32,
}

/// rpm's query format for [`parse_rpm`]: one line per file, tab-separated.
pub(crate) const RPM_QUERY_FORMAT: &str = "[%{FILENAMES}\\t%{FILEDIGESTS}\\t%{FILESIZES}\\t%{FILEMODES}\\t%{FILEUSERNAME}\\t%{FILEGROUPNAME}\\t%{FILEMTIMES}\\t%{FILEFLAGS}\\t%{FILEVERIFYFLAGS}\\t%{FILESTATES}\\t%{FILELINKTOS}\\t%{=NEVRA}\\t%{=FILEDIGESTALGO}\\n]";

const RPMFILE_CONFIG: u32 = 1;
const RPMFILE_GHOST: u32 = 1 << 6;
const STATE_REPLACED: &str = "1";
const STATE_NOT_INSTALLED: &str = "2";
const STATE_NETSHARED: &str = "3";
const STATE_WRONG_COLOR: &str = "4";

/// Parses the output of `rpm -qa --qf RPM_QUERY_FORMAT`; lines that do not parse (a file name
/// with a tab or a line break) are counted in the second value and left out.
pub(crate) fn parse_rpm(output: &[u8]) -> (Vec<Expected>, usize) {
    let text = String::from_utf8_lossy(output);
    let mut files = Vec::new();
    let mut unparsed = 0;
    for line in text.lines().filter(|l| !l.is_empty()) {
        match parse_rpm_line(line) {
            Some(Some(expected)) => files.push(expected),
            Some(None) => {}
            None => unparsed += 1,
        }
    }
    (files, unparsed)
}

/// `Some(None)`: a file rpm does not verify (not installed, net-shared).
fn parse_rpm_line(line: &str) -> Option<Option<Expected>> {
    let fields: Vec<&str> = line.split('\t').collect();
    let [
        path,
        digest,
        size,
        mode,
        user,
        group,
        mtime,
        flags,
        verify,
        state,
        link_to,
        package,
        algo,
    ] = fields.as_slice()
    else {
        return None;
    };
    if !path.starts_with('/') {
        return None;
    }
    if *state == STATE_NOT_INSTALLED || *state == STATE_NETSHARED {
        return Some(None);
    }
    let flags: u32 = flags.parse().ok()?;
    // rpm prints the verify mask as a signed number (-1: everything).
    let mut checks = verify
        .parse::<i64>()
        .ok()
        .map(|v| v as u32)
        .unwrap_or(u32::MAX);
    if *state == STATE_WRONG_COLOR {
        checks &= !(checks::DIGEST | checks::SIZE | checks::MTIME);
    }
    let ghost = flags & RPMFILE_GHOST != 0;
    if ghost {
        checks &= !(checks::DIGEST | checks::SIZE | checks::MTIME | checks::LINKTO);
    }
    let algo = Algo::from_rpm(algo)?;
    Some(Some(Expected {
        path: PathBuf::from(path),
        package: (*package).to_owned(),
        config: flags & RPMFILE_CONFIG != 0,
        ghost,
        exists_only: *state == STATE_REPLACED,
        mode: mode.parse().ok()?,
        digest: (!digest.is_empty()).then(|| (algo, digest.to_ascii_lowercase())),
        size: size.parse().ok()?,
        user: (*user).to_owned(),
        group: (*group).to_owned(),
        mtime: mtime.parse().ok()?,
        link_to: (*link_to).to_owned(),
        checks,
    }))
}

/// Largest `md5sums` or status file read from the package state.
const MAX_STATE_FILE: u64 = 64 << 20;

fn read_state(state: &GuestRoot, path: &Path) -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    let file = state.open_file(path).ok()?;
    file.take(MAX_STATE_FILE).read_to_string(&mut text).ok()?;
    Some(text)
}

/// dpkg's record: every `info/*.md5sums` entry (digest only) and every conffile of the status
/// file, below the admin directory `admin` of the package state `state`.
pub(crate) fn dpkg_files(state: &GuestRoot, admin: &Path) -> Vec<Expected> {
    let md5 = |path: &str, package: &str, sum: &str, config: bool| Expected {
        path: Path::new("/").join(path.trim_start_matches('/')),
        package: package.to_owned(),
        config,
        ghost: false,
        exists_only: false,
        mode: 0,
        digest: Some((Algo::Md5, sum.to_ascii_lowercase())),
        size: 0,
        user: String::new(),
        group: String::new(),
        mtime: 0,
        link_to: String::new(),
        checks: checks::DIGEST,
    };
    let mut files = Vec::new();
    let info = admin.join("info");
    for entry in state.read_dir(&info).unwrap_or_default() {
        let name = entry.name.to_string_lossy().into_owned();
        let Some(package) = name.strip_suffix(".md5sums") else {
            continue;
        };
        let package = package.split(':').next().unwrap_or(package);
        let Some(text) = read_state(state, &info.join(&entry.name)) else {
            continue;
        };
        for line in text.lines() {
            if let Some((sum, path)) = line.split_once("  ")
                && sum.len() == 32
                && sum.bytes().all(|b| b.is_ascii_hexdigit())
            {
                files.push(md5(path, package, sum, false));
            }
        }
    }
    // Conffiles: ` /etc/x MD5 [obsolete|remove-on-upgrade]` lines of an installed stanza.
    let Some(status) = read_state(state, &admin.join("status")) else {
        return files;
    };
    for stanza in status.split("\n\n") {
        let mut package = "";
        let mut installed = false;
        let mut in_conffiles = false;
        let mut conffiles = Vec::new();
        for line in stanza.lines() {
            if let Some(rest) = line.strip_prefix(' ') {
                if in_conffiles {
                    let words: Vec<&str> = rest.split_whitespace().collect();
                    if let [path, sum] = words.as_slice()
                        && sum.len() == 32
                        && sum.bytes().all(|b| b.is_ascii_hexdigit())
                    {
                        conffiles.push((path.to_string(), sum.to_string()));
                    }
                }
                continue;
            }
            in_conffiles = line.starts_with("Conffiles:");
            if let Some(name) = line.strip_prefix("Package: ") {
                package = name.trim();
            } else if let Some(status) = line.strip_prefix("Status: ") {
                installed = status.trim().ends_with(" installed");
            }
        }
        if installed {
            for (path, sum) in conffiles {
                files.push(md5(&path, package, &sum, true));
            }
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpm_lines_parse_with_their_states_and_flags() {
        let line = |state: &str, flags: &str| {
            format!(
                "/etc/x\tabc\t3\t33188\troot\troot\t100\t{flags}\t-1\t{state}\t\tp-1-1.x86_64\t8\n"
            )
        };
        let text = [
            line("0", "1"),
            line("2", "0"),
            line("1", "64"),
            "broken line\n".to_owned(),
        ]
        .concat();
        let (files, unparsed) = parse_rpm(text.as_bytes());
        assert_eq!(unparsed, 1);
        assert_eq!(files.len(), 2);
        assert!(files[0].config && files[0].checks == u32::MAX);
        assert_eq!(files[0].digest, Some((Algo::Sha256, "abc".into())));
        assert!(files[1].exists_only && files[1].ghost);
        assert_eq!(files[1].checks & checks::DIGEST, 0);
    }
}
