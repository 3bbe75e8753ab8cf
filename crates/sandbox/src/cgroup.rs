//! Control groups: find what the host offers, freeze and thaw a guest's cgroup, and give each
//! sandbox a cgroup of its own that can be killed as a whole.
//!
//! Hosts differ: a pure cgroup v2 host has one tree at `/sys/fs/cgroup`; a hybrid host (these
//! machines) has v1 hierarchies for the resource controllers and a v2 tree, often at
//! `/sys/fs/cgroup/unified`, without them. Freezing works on both (`cgroup.freeze` in v2,
//! `freezer.state` in v1); killing a whole group at once (`cgroup.kill`) exists only in v2, so the
//! sandbox's own cgroup is a v2 one when there is a v2 tree, and otherwise the pid namespace alone
//! takes care of leftovers (reported as a note, not an error).
//!
//! The functions used by the thaw guardian in `process` read and write files with plain system
//! calls only.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// What the host offers, read from `/proc/self/mountinfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupSupport {
    /// Where the v2 tree is mounted, if anywhere.
    pub unified: Option<PathBuf>,
    /// Controllers enabled in the v2 root (`cgroup.controllers`).
    pub unified_controllers: Vec<String>,
    /// v1 hierarchies: controller name and mount point.
    pub v1: Vec<(String, PathBuf)>,
}

impl CgroupSupport {
    /// Reads the host's cgroup mounts.
    pub fn detect() -> Result<Self> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| Error::host("read", "/proc/self/mountinfo", e))?;
        let mut support = CgroupSupport::default();
        for line in mountinfo.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let Some(dash) = fields.iter().position(|f| *f == "-") else {
                continue;
            };
            let (Some(mount_point), Some(fstype), Some(options)) =
                (fields.get(4), fields.get(dash + 1), fields.get(dash + 3))
            else {
                continue;
            };
            let mount_point = PathBuf::from(unescape(mount_point));
            match *fstype {
                "cgroup2" if support.unified.is_none() => {
                    support.unified_controllers =
                        fs::read_to_string(mount_point.join("cgroup.controllers"))
                            .unwrap_or_default()
                            .split_whitespace()
                            .map(str::to_string)
                            .collect();
                    support.unified = Some(mount_point);
                }
                "cgroup" => {
                    for option in options.split(',') {
                        if !matches!(
                            option,
                            "rw" | "ro" | "relatime" | "nosuid" | "nodev" | "noexec"
                        ) && !option.starts_with("release_agent")
                        {
                            support.v1.push((option.to_string(), mount_point.clone()));
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(support)
    }

    /// The v1 hierarchy for `controller`, if mounted.
    pub fn v1_hierarchy(&self, controller: &str) -> Option<&Path> {
        self.v1
            .iter()
            .find(|(name, _)| name == controller)
            .map(|(_, path)| path.as_path())
    }

    /// Whether the v2 tree has `controller` (memory, pids, cpu…).
    pub fn unified_has(&self, controller: &str) -> bool {
        self.unified_controllers.iter().any(|c| c == controller)
    }
}

/// Undoes the octal escapes of `/proc/self/mountinfo` (`\040` for a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4].iter().all(u8::is_ascii_digit)
        {
            let value =
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn write_file(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).map_err(|e| Error::host("write", path, e))
}

fn read_file(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|e| Error::host("read", path, e))
}

/// Waits until `done` says yes, or fails with `ETIMEDOUT` naming `path`.
fn wait_for(path: &Path, timeout: Duration, mut done: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if done()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::host(
                "wait for",
                path,
                io::Error::from_raw_os_error(libc::ETIMEDOUT),
            ));
        }
        sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Which interface a cgroup directory freezes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FreezerKind {
    /// cgroup v2: `cgroup.freeze` and the `frozen` line of `cgroup.events`.
    V2,
    /// cgroup v1 freezer hierarchy: `freezer.state`.
    V1,
}

/// The freezer of one cgroup (a running guest's).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Freezer {
    dir: PathBuf,
    kind: FreezerKind,
}

impl Freezer {
    /// The freezer of the cgroup directory `dir` (v2 if it has `cgroup.freeze`, else v1 if it has
    /// `freezer.state`).
    pub fn for_cgroup(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        let kind = if dir.join("cgroup.freeze").exists() {
            FreezerKind::V2
        } else if dir.join("freezer.state").exists() {
            FreezerKind::V1
        } else {
            return Err(Error::host(
                "find a freezer (cgroup.freeze or freezer.state) in",
                dir,
                io::Error::from_raw_os_error(libc::ENOENT),
            ));
        };
        Ok(Freezer { dir, kind })
    }

    /// The cgroup directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Which interface it uses.
    pub fn kind(&self) -> FreezerKind {
        self.kind
    }

    /// Whether the cgroup is completely frozen now.
    pub fn is_frozen(&self) -> Result<bool> {
        Ok(match self.kind {
            FreezerKind::V2 => {
                let events = self.dir.join("cgroup.events");
                read_file(&events)?.lines().any(|l| l == "frozen 1")
            }
            FreezerKind::V1 => read_file(&self.dir.join("freezer.state"))?.trim() == "FROZEN",
        })
    }

    /// Freezes the cgroup and waits (up to `timeout`) until every task in it is frozen.
    pub fn freeze(&self, timeout: Duration) -> Result<()> {
        match self.kind {
            FreezerKind::V2 => write_file(&self.dir.join("cgroup.freeze"), "1")?,
            FreezerKind::V1 => write_file(&self.dir.join("freezer.state"), "FROZEN")?,
        }
        wait_for(&self.dir, timeout, || self.is_frozen())
    }

    /// Thaws the cgroup.
    pub fn thaw(&self) -> Result<()> {
        match self.kind {
            FreezerKind::V2 => write_file(&self.dir.join("cgroup.freeze"), "0"),
            FreezerKind::V1 => write_file(&self.dir.join("freezer.state"), "THAWED"),
        }
    }
}

/// A cgroup v2 directory created for one sandbox, killed and removed as a whole.
///
/// ```text
/// <unified>/vserver-sandbox/<pid>-<start time>/           the sandbox's init
/// <unified>/vserver-sandbox/<pid>-<start time>/program/   the program and all it starts
/// ```
///
/// The name is the sandbox process's pid and start time: while that process lives the cgroup is
/// in use; once it is gone the cgroup is an orphan that [`SandboxCgroup::remove_orphans`] may
/// kill and remove. The program has a child cgroup of its own so that the init, a child
/// subreaper, can kill everything the program started (`cgroup.kill` on the child) and still be
/// there to reap it: what dies after its parent went to the init, not to a running guest's pid 1
/// (which may never reap, leaving zombies that keep their pids, and dnf's lock files, alive).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SandboxCgroup {
    dir: PathBuf,
}

/// The program's child cgroup below a [`SandboxCgroup`].
pub(crate) const PROGRAM_CGROUP: &str = "program";

/// The directory below the v2 tree that holds the sandboxes' cgroups.
const SANDBOX_PARENT: &str = "vserver-sandbox";

impl SandboxCgroup {
    /// Creates `<unified>/vserver-sandbox/<name>` and its program cgroup.
    pub fn create(unified: &Path, name: &str) -> Result<Self> {
        let parent = unified.join(SANDBOX_PARENT);
        match fs::create_dir(&parent) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::host("create cgroup", parent, e)),
        }
        let dir = parent.join(name);
        fs::create_dir(&dir).map_err(|e| Error::host("create cgroup", &dir, e))?;
        let program = dir.join(PROGRAM_CGROUP);
        fs::create_dir(&program).map_err(|e| Error::host("create cgroup", &program, e))?;
        Ok(SandboxCgroup { dir })
    }

    /// The name [`SandboxCgroup::create`] is given for the calling process: its pid and start
    /// time, which together name one process for the whole uptime (a pid alone is reused).
    pub(crate) fn name_for_this_process() -> String {
        let pid = std::process::id();
        match crate::process_start_time(pid) {
            Some(start) => format!("{pid}-{start}"),
            None => pid.to_string(),
        }
    }

    /// Kills and removes every sandbox cgroup whose sandbox process is gone: what is left of an
    /// operation whose clean-up did not run (its guardian was killed too, say by a SIGKILL to
    /// the whole process group). Best effort: a cgroup that cannot be removed now is tried again
    /// by the next sandbox.
    pub fn remove_orphans(unified: &Path) {
        let Ok(entries) = fs::read_dir(unified.join(SANDBOX_PARENT)) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if owner_is_alive(name) {
                continue;
            }
            let cgroup = SandboxCgroup { dir: entry.path() };
            let _ = cgroup.kill_and_remove(Duration::from_secs(1));
        }
    }

    /// The cgroup directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The program's child cgroup directory.
    pub(crate) fn program_dir(&self) -> PathBuf {
        self.dir.join(PROGRAM_CGROUP)
    }

    /// Moves the calling process into the cgroup.
    pub fn join(&self) -> Result<()> {
        write_file(&self.dir.join("cgroup.procs"), "0")
    }

    /// Whether any process is left in it (or in its program cgroup).
    pub fn is_populated(&self) -> Result<bool> {
        Ok(read_file(&self.dir.join("cgroup.events"))?
            .lines()
            .any(|l| l == "populated 1"))
    }

    /// Kills every process in the cgroup and below (`cgroup.kill`), waits until it is empty,
    /// removes it. A cgroup already removed (by a concurrent clean-up) is not an error.
    pub fn kill_and_remove(&self, timeout: Duration) -> Result<()> {
        match self.is_populated() {
            Ok(true) => {
                write_file(&self.dir.join("cgroup.kill"), "1")?;
                wait_for(&self.dir, timeout, || self.is_populated().map(|p| !p))?;
            }
            Ok(false) => {}
            Err(_) if !self.dir.exists() => return Ok(()),
            Err(e) => return Err(e),
        }
        for dir in [self.program_dir(), self.dir.clone()] {
            match fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::host("remove cgroup", &dir, e)),
            }
        }
        Ok(())
    }
}

/// Whether the sandbox process a cgroup is named after (`PID-START` or, from older versions,
/// `PID`) still runs. A name of neither form is left alone, as if alive.
fn owner_is_alive(name: &str) -> bool {
    let (pid, start) = match name.split_once('-') {
        Some((pid, start)) => (pid, Some(start)),
        None => (name, None),
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return true;
    };
    match start {
        Some(start) => {
            let Ok(start) = start.parse::<u64>() else {
                return true;
            };
            crate::process_start_time(pid) == Some(start)
        }
        None => Path::new(&format!("/proc/{pid}")).exists(),
    }
}

/// Resource limits for a guest's cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuestLimits {
    /// Memory limit in bytes.
    pub memory: Option<u64>,
    /// Most processes (and threads) at once.
    pub pids: Option<u64>,
    /// CPU time in thousandths of one CPU (`500` is half a CPU), enforced as a CFS quota per
    /// period of [`CPU_PERIOD_MICROS`]: `cpu.max` in v2, `cpu.cfs_quota_us` in v1.
    pub cpu_millis: Option<u64>,
}

/// The CFS period a CPU limit is enforced over (the kernel's default, 100 ms).
pub const CPU_PERIOD_MICROS: u64 = 100_000;

/// A guest's cgroups: one in the v2 tree (freezing, killing, counting processes) and, on a hybrid
/// host, one in each v1 hierarchy that holds a controller the limits need. Paths are
/// `<hierarchy>/vserver/<guest>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestCgroup {
    /// Every directory made, v2 first.
    pub dirs: Vec<PathBuf>,
    /// The v2 directory, if there is a v2 tree.
    pub unified: Option<PathBuf>,
    /// Limits that could not be applied, with the reason (for the user).
    pub notes: Vec<String>,
}

impl GuestCgroup {
    /// Where guest `name`'s cgroups are (or would be) on this host.
    pub fn locate(support: &CgroupSupport, name: &str) -> GuestCgroup {
        let mut cgroup = GuestCgroup::default();
        if let Some(unified) = &support.unified {
            let dir = unified.join("vserver").join(name);
            cgroup.unified = Some(dir.clone());
            cgroup.dirs.push(dir);
        }
        for controller in ["memory", "pids", "cpu", "freezer"] {
            if support.unified_has(controller) {
                continue;
            }
            // Without a v2 tree, package operations freeze the guest through the v1 freezer.
            if controller == "freezer" && support.unified.is_some() {
                continue;
            }
            if let Some(hierarchy) = support.v1_hierarchy(controller) {
                cgroup.dirs.push(hierarchy.join("vserver").join(name));
            }
        }
        cgroup
    }

    /// Creates the directories and writes the limits. A limit whose controller exists nowhere is
    /// left out and noted in [`GuestCgroup::notes`].
    pub fn create(support: &CgroupSupport, name: &str, limits: GuestLimits) -> Result<GuestCgroup> {
        let mut cgroup = Self::locate(support, name);
        for dir in &cgroup.dirs {
            match fs::create_dir_all(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::host("create cgroup", dir, e)),
            }
        }
        let limit_file = |controller: &str, v2: &str, v1: &str| -> Option<PathBuf> {
            if support.unified_has(controller) {
                return cgroup.unified.as_ref().map(|d| d.join(v2));
            }
            let hierarchy = support.v1_hierarchy(controller)?;
            Some(hierarchy.join("vserver").join(name).join(v1))
        };
        let mut notes = Vec::new();
        if let Some(bytes) = limits.memory {
            match limit_file("memory", "memory.max", "memory.limit_in_bytes") {
                Some(file) => write_file(&file, &bytes.to_string())?,
                None => notes.push("memory limit not applied: no memory controller".to_string()),
            }
        }
        if let Some(count) = limits.pids {
            match limit_file("pids", "pids.max", "pids.max") {
                Some(file) => write_file(&file, &count.to_string())?,
                None => notes.push("pids limit not applied: no pids controller".to_string()),
            }
        }
        if let Some(millis) = limits.cpu_millis {
            // At least 1 ms per period: the kernel refuses a smaller quota.
            let quota = (millis.saturating_mul(CPU_PERIOD_MICROS) / 1000).max(1000);
            if support.unified_has("cpu") {
                if let Some(dir) = &cgroup.unified {
                    write_file(
                        &dir.join("cpu.max"),
                        &format!("{quota} {CPU_PERIOD_MICROS}"),
                    )?;
                }
            } else if let Some(hierarchy) = support.v1_hierarchy("cpu") {
                let dir = hierarchy.join("vserver").join(name);
                write_file(
                    &dir.join("cpu.cfs_period_us"),
                    &CPU_PERIOD_MICROS.to_string(),
                )?;
                write_file(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
            } else {
                notes.push("cpu limit not applied: no cpu controller".to_string());
            }
        }
        cgroup.notes = notes;
        Ok(cgroup)
    }

    /// The processes in the guest's cgroup (v2 if present, else the first hierarchy).
    pub fn processes(&self) -> Vec<u32> {
        let Some(dir) = self.unified.as_ref().or(self.dirs.first()) else {
            return Vec::new();
        };
        subtree(dir).iter().flat_map(|dir| procs_of(dir)).collect()
    }

    /// Gives the guest a cgroup of its own to manage (systemd's delegation): creates
    /// `<v2 dir>/payload`, caps how many cgroups the guest may make below it, and returns the
    /// directories its init joins — the payload instead of the v2 directory, then the v1 ones.
    /// Joined before the cgroup namespace is made, the payload is the root of the guest's view;
    /// the guest's own v2 directory (its freezer, its kill switch) and the v1 hierarchies (its
    /// limits) stay out of its reach.
    pub fn delegate(&self) -> Result<Vec<PathBuf>> {
        let Some(unified) = &self.unified else {
            return Ok(self.dirs.clone());
        };
        write_file(
            &unified.join("cgroup.max.descendants"),
            &MAX_GUEST_CGROUPS.to_string(),
        )?;
        write_file(
            &unified.join("cgroup.max.depth"),
            &MAX_GUEST_CGROUP_DEPTH.to_string(),
        )?;
        let payload = unified.join(PAYLOAD);
        match fs::create_dir(&payload) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::host("create cgroup", &payload, e)),
        }
        Ok(self.delegated_dirs())
    }

    /// The directories a process joins to become part of a guest made with
    /// [`GuestCgroup::delegate`]: the payload cgroup instead of the v2 directory (the root of the
    /// guest's cgroup namespace), then the v1 ones.
    pub fn delegated_dirs(&self) -> Vec<PathBuf> {
        let Some(unified) = &self.unified else {
            return self.dirs.clone();
        };
        std::iter::once(unified.join(PAYLOAD))
            .chain(self.dirs.iter().filter(|d| *d != unified).cloned())
            .collect()
    }

    /// Memory in use (bytes), where a memory controller counts it.
    pub fn memory_usage(&self) -> Option<u64> {
        self.dirs.iter().find_map(|dir| {
            ["memory.current", "memory.usage_in_bytes"]
                .iter()
                .find_map(|file| fs::read_to_string(dir.join(file)).ok())
                .and_then(|text| text.trim().parse().ok())
        })
    }

    /// Kills every process left (`cgroup.kill` in v2, else `SIGKILL` to each listed process in
    /// a loop), waits up to `timeout` for the cgroups to empty, and removes them.
    pub fn kill_and_remove(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        if let Some(dir) = &self.unified
            && dir.exists()
        {
            let _ = write_file(&dir.join("cgroup.kill"), "1");
        }
        for dir in &self.dirs {
            if !dir.exists() {
                continue;
            }
            loop {
                let procs: Vec<i32> = subtree(dir)
                    .iter()
                    .flat_map(|dir| procs_of(dir))
                    .filter_map(|pid| i32::try_from(pid).ok())
                    .collect();
                if procs.is_empty() {
                    break;
                }
                for pid in procs {
                    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                    }
                }
                if Instant::now() >= deadline {
                    return Err(Error::host(
                        "empty cgroup",
                        dir,
                        io::Error::from_raw_os_error(libc::ETIMEDOUT),
                    ));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            // A cgroup whose last process just died can stay busy for a moment.
            for dir in subtree(dir) {
                loop {
                    match fs::remove_dir(&dir) {
                        Ok(()) => break,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                        Err(e)
                            if e.raw_os_error() == Some(libc::EBUSY)
                                && Instant::now() < deadline =>
                        {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        Err(e) => return Err(Error::host("remove cgroup", &dir, e)),
                    }
                }
            }
        }
        Ok(())
    }
}

/// The name of the cgroup a guest manages itself, below its own (see [`GuestCgroup::delegate`]).
const PAYLOAD: &str = "payload";
/// Most cgroups a guest may create below its own (`cgroup.max.descendants`).
const MAX_GUEST_CGROUPS: u32 = 4096;
/// Deepest nesting below the guest's own cgroup (`cgroup.max.depth`).
const MAX_GUEST_CGROUP_DEPTH: u32 = 16;

/// `dir` and every cgroup below it, children before their parent. A cgroup file system holds
/// only directories and files (no symlinks), and the guest's nesting is capped.
fn subtree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(subtree(&entry.path()));
            }
        }
    }
    out.push(dir.to_path_buf());
    out
}

/// The processes directly in cgroup `dir`.
fn procs_of(dir: &Path) -> Vec<u32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}
