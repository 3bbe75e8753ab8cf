//! The kinds of guest init, and what each needs: one place, so that adding an init is adding one
//! arm to [`InitKind::needs`] (and its checks to [`plan`]).
//!
//! | kind | pid 1 | view beyond the basics | ready when | stopped by |
//! |---|---|---|---|---|
//! | `plain` | the guest's `/sbin/init` | — | it runs | `stop_signal` (`TERM`) |
//! | `sysv` | a shell loop around `rc RUNLEVEL` | `/run` tmpfs | `rc` finished | `TERM`: `rc 0` |
//! | `systemd` | `/usr/lib/systemd/systemd` | nspawn's container interface | `READY=1` | `RTMIN+3` |
//! | command | the configured command | — | it runs | `stop_signal` (`TERM`) |
//!
//! systemd gets what systemd-nspawn gives it (systemd's "Container Interface"): `container=` in
//! its environment and in `/run/systemd/container`, a fresh `/run` tmpfs, a read-only `/sys`, a
//! writable cgroup2 on `/sys/fs/cgroup` rooted at a cgroup delegated to it inside its own cgroup
//! namespace ([`vserver_sandbox::GuestCgroup::delegate`]), and `NOTIFY_SOCKET` leading to a
//! host socket through which it says `READY=1` when the boot is done. `/proc` stays read-only
//! (the guest's root is the host's uid 0), so a runtime drop-in tells every service not to
//! apply an `OOMScoreAdjust=`, which systemd would otherwise fail with `EROFS`.
//!
//! `init = "plain"` (the default) becomes `systemd` when the guest's `/sbin/init` is systemd:
//! resolved inside the guest root (`RESOLVE_IN_ROOT`, so the guest's links never lead to the
//! host) and compared by device and inode with the guest's systemd binary.

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::PathBuf;

use vserver_sandbox::{CapabilityProfile, GuestRoot, InitSetup};

use crate::config::GuestConfig;
use crate::lifecycle::{LifecycleError, LifecycleResult};
use crate::runtime::{DEFAULT_RUNLEVEL, InitConfig};

/// Where systemd keeps its binary, newest layout first.
const SYSTEMD_PATHS: &[&str] = &["/usr/lib/systemd/systemd", "/lib/systemd/systemd"];
/// The rc scripts of `init = "sysv"`: Red Hat's and Debian's.
const RC_PATHS: &[&str] = &["/etc/rc.d/rc", "/etc/init.d/rc"];
/// What the `sysv` pid 1 creates once `rc RUNLEVEL` has finished.
pub(crate) const SYSV_READY_FILE: &str = "/run/.vserver-rc-done";
/// A runtime drop-in for every service of a systemd guest: its `/proc` is read-only (the
/// guest's root is the host's uid 0, and much of `/proc` obeys only file modes), so no unit can
/// apply an `OOMScoreAdjust=`, and systemd fails a unit that asks for one with `EROFS`
/// (journald asks for -250) where it ignores `EPERM`.
const SYSTEMD_SERVICE_DROP_IN: &str = "# Written by vserver at start: /proc is read-only in this guest.\n[Service]\nOOMScoreAdjust=\n";
/// The socket file inside [`vserver_sandbox::NOTIFY_DIR_IN_GUEST`].
pub(crate) const NOTIFY_SOCKET_NAME: &str = "notify";

/// The pid 1 of `init = "sysv"`: `$1` is the runlevel. On the stop signal it runs `rc 0` (the
/// `K` scripts of runlevel 0) and ends.
const SYSV_INIT: &str = r#"rc=/etc/rc.d/rc
[ -x "$rc" ] || rc=/etc/init.d/rc
trap '"$rc" 0; exit 0' TERM
"$rc" "$1"
: > /run/.vserver-rc-done
while :; do sleep 3600 & wait $!; done"#;

/// A kind of init.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitKind {
    /// The guest's `/sbin/init`, whatever it is.
    Plain,
    /// The guest's `rc` scripts.
    Sysv,
    /// systemd, booted as systemd-nspawn boots it.
    Systemd,
    /// A configured command.
    Command,
}

/// How `start` knows an init is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Readiness {
    /// It still runs a moment after it started.
    Running,
    /// It wrote `READY=1` to its `NOTIFY_SOCKET`.
    Notify,
    /// This file exists in its view.
    File(&'static str),
}

/// What an init kind needs.
pub(crate) struct Needs {
    pub setup: InitSetup,
    pub capabilities: CapabilityProfile,
    pub delegate_cgroup: bool,
    pub readiness: Readiness,
    pub stop_signal: &'static str,
    pub env: Vec<(OsString, OsString)>,
}

impl InitKind {
    /// The one table of what each init needs.
    pub(crate) fn needs(self) -> Needs {
        let container = ("container".into(), "vserver".into());
        match self {
            InitKind::Plain | InitKind::Command => Needs {
                setup: InitSetup::default(),
                capabilities: CapabilityProfile::Confined,
                delegate_cgroup: false,
                readiness: Readiness::Running,
                stop_signal: "TERM",
                env: vec![container],
            },
            InitKind::Sysv => Needs {
                setup: InitSetup {
                    run_tmpfs: true,
                    ..InitSetup::default()
                },
                capabilities: CapabilityProfile::Confined,
                delegate_cgroup: false,
                readiness: Readiness::File(SYSV_READY_FILE),
                stop_signal: "TERM",
                env: vec![container],
            },
            InitKind::Systemd => Needs {
                setup: InitSetup {
                    run_tmpfs: true,
                    cgroup_fs: true,
                    notify_dir: None,
                    tmpfs: vec![
                        (PathBuf::from("/run/lock"), 0o1777),
                        (PathBuf::from("/dev/shm"), 0o1777),
                    ],
                    run_files: vec![
                        (PathBuf::from("systemd/container"), "vserver\n".into()),
                        (
                            PathBuf::from("systemd/system/service.d/50-vserver.conf"),
                            SYSTEMD_SERVICE_DROP_IN.into(),
                        ),
                    ],
                },
                capabilities: CapabilityProfile::ServiceManager,
                delegate_cgroup: true,
                readiness: Readiness::Notify,
                stop_signal: "RTMIN+3",
                env: vec![
                    container,
                    (
                        "NOTIFY_SOCKET".into(),
                        format!(
                            "{}/{NOTIFY_SOCKET_NAME}",
                            vserver_sandbox::NOTIFY_DIR_IN_GUEST
                        )
                        .into(),
                    ),
                ],
            },
        }
    }
}

/// The init a start runs: its kind, command line, and the files of this start in its fresh
/// `/run` (beside [`Needs::setup`]'s).
pub(crate) struct InitPlan {
    pub kind: InitKind,
    pub command: Vec<OsString>,
    pub run_files: Vec<(PathBuf, Vec<u8>)>,
}

/// Decides what runs as pid 1 of `config`'s guest (`command` overrides the configuration), and
/// refuses, before anything starts, an init whose pieces the guest lacks.
pub(crate) fn plan(config: &GuestConfig, command: &[OsString]) -> LifecycleResult<InitPlan> {
    if !command.is_empty() {
        return Ok(InitPlan {
            kind: InitKind::Command,
            command: command.to_vec(),
            run_files: Vec::new(),
        });
    }
    let guest = &config.name;
    let sandbox = |op: &'static str| {
        move |source| LifecycleError::Sandbox {
            guest: guest.clone(),
            op,
            source,
        }
    };
    let root = GuestRoot::open(&config.root).map_err(sandbox("open the guest root"))?;
    let missing = |problem: String| LifecycleError::BadSetting {
        guest: guest.clone(),
        setting: "init",
        problem,
    };
    match &config.init {
        InitConfig::Command(command) => Ok(InitPlan {
            kind: InitKind::Command,
            command: command.iter().map(OsString::from).collect(),
            run_files: Vec::new(),
        }),
        InitConfig::Sysv => {
            if !RC_PATHS.iter().any(|p| is_file(&root, p)) {
                return Err(missing(
                    "\"sysv\" runs /etc/init.d/rc (Debian: package sysv-rc) or /etc/rc.d/rc, and \
                     the guest has neither; install it or set another init"
                        .into(),
                ));
            }
            let runlevel = config.runlevel.unwrap_or(DEFAULT_RUNLEVEL);
            Ok(InitPlan {
                kind: InitKind::Sysv,
                command: vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    SYSV_INIT.into(),
                    "vserver-sysv-init".into(),
                    runlevel.to_string().into(),
                ],
                // As sysvinit records entering the runlevel: `runlevel` reads it, and
                // invoke-rc.d starts a service only when its link is in the current runlevel.
                run_files: utmp_runlevel_record(runlevel)
                    .map(|record| (PathBuf::from("utmp"), record))
                    .into_iter()
                    .collect(),
            })
        }
        InitConfig::Systemd => match systemd_binary(&root) {
            Some(path) => Ok(systemd_plan(path)),
            None => Err(missing(format!(
                "\"systemd\" needs {} in the guest (Debian: package systemd)",
                SYSTEMD_PATHS[0]
            ))),
        },
        InitConfig::Plain => {
            if let Some(path) = systemd_binary(&root)
                && same_file(&root, "/sbin/init", path)
            {
                return Ok(systemd_plan(path));
            }
            Ok(InitPlan {
                kind: InitKind::Plain,
                command: vec!["/sbin/init".into()],
                run_files: Vec::new(),
            })
        }
    }
}

fn systemd_plan(path: &str) -> InitPlan {
    InitPlan {
        kind: InitKind::Systemd,
        command: vec![path.into()],
        run_files: Vec::new(),
    }
}

/// A `/run/utmp` holding the record sysvinit writes when it enters `runlevel` (type `RUN_LVL`,
/// pid `level + 256 * previous`, previous `N`): glibc's `struct utmp` of x86_64, 384 bytes.
/// Elsewhere none, and `runlevel` says `unknown` in the guest.
fn utmp_runlevel_record(runlevel: u8) -> Option<Vec<u8>> {
    if !cfg!(target_arch = "x86_64") || runlevel > 9 {
        return None;
    }
    const RUN_LVL: i16 = 1;
    let mut record = vec![0u8; 384];
    record[0..2].copy_from_slice(&RUN_LVL.to_le_bytes());
    let level = i32::from(b'0' + runlevel) + 256 * i32::from(b'N');
    record[4..8].copy_from_slice(&level.to_le_bytes());
    record[8..9].copy_from_slice(b"~"); // ut_line
    record[40..42].copy_from_slice(b"~~"); // ut_id
    record[44..52].copy_from_slice(b"runlevel"); // ut_user
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // ut_tv.tv_sec is 32 bits wide in this layout.
    record[340..344].copy_from_slice(&(now as u32).to_le_bytes());
    Some(record)
}

fn is_file(root: &GuestRoot, path: &str) -> bool {
    root.metadata(path)
        .is_ok_and(|info| info.kind == vserver_sandbox::FileKind::File)
}

/// The guest's systemd binary, if it has one.
fn systemd_binary(root: &GuestRoot) -> Option<&'static str> {
    SYSTEMD_PATHS.iter().copied().find(|p| is_file(root, p))
}

/// Whether `a` and `b`, each resolved inside the guest root (its links followed there, never
/// on the host), are the same file.
fn same_file(root: &GuestRoot, a: &str, b: &str) -> bool {
    let identity = |path: &str| {
        let file = root.open_file(path).ok()?;
        let stat = rustix::fs::fstat(file.as_fd()).ok()?;
        Some((stat.st_dev, stat.st_ino))
    };
    matches!((identity(a), identity(b)), (Some(x), Some(y)) if x == y)
}
