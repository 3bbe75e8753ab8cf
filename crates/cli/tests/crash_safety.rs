//! Guest operations killed at every step and at random times: `build`, `build --force`,
//! `build -m clone`, `delete`, `pkgmgmt internalize` and `pkgmgmt externalize` on an RPM guest built from
//! generated fixtures with the real rpm and dnf.
//!
//! Each trial sends the operation `SIGKILL` — at its N-th checkpoint (the debug build's
//! `VSERVER_TEST_KILL_AT` hook: after each journal or log entry, so N = 1, 2, … reaches every
//! step) or after a seeded random delay — then runs one ordinary command (`vserver --list`) and
//! asserts: every guest that exists lists its full package set and verifies as before, `--list`
//! shows exactly the guests that exist (no set-aside copy, no guest without a configuration),
//! nothing set aside remains, no journal or log is left, and no process or mount of the
//! operation survives. A separate test proves `delete` cannot remove another guest's files
//! however the configurations are edited.
//!
//! Needs root, rpm, dnf and busybox; skips with a reason otherwise, fails instead when
//! VSERVER_TEST_REQUIRE_ALL=1.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// The kill-hook tests are debug-only (see below): their helpers are unused in release builds.
#![cfg_attr(not(debug_assertions), allow(dead_code, unused_imports))]

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::TestHost;

/// Trials per operation at least: one per checkpoint, then random-time ones up to this count
/// (and at least five). `VSERVER_CRASH_TRIALS` raises it (`bench/crash.sh`).
const MIN_TRIALS: usize = 20;

fn min_trials() -> usize {
    std::env::var("VSERVER_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(MIN_TRIALS)
        .max(MIN_TRIALS)
}

struct World {
    host: TestHost,
    /// `vrpm -qa` of a complete guest.
    packages: Vec<String>,
    /// `vrpm -Va` of a complete guest.
    verify: Vec<String>,
    /// Trials run and recovery lines seen, per operation.
    counts: Vec<(String, usize, usize)>,
    seed: u64,
}

fn sorted_lines(bytes: &[u8]) -> Vec<String> {
    let mut lines: Vec<String> = String::from_utf8_lossy(bytes)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

impl World {
    fn new() -> Option<World> {
        let host = TestHost::with_rpm_fixture(
            "vserver-crash",
            14,
            6,
            "fx-shell fx-00001 fx-00003 fx-00004",
        )?;
        let mut world = World {
            host,
            packages: Vec::new(),
            verify: Vec::new(),
            counts: Vec::new(),
            seed: 0x5eed_0014,
        };
        world.build("g");
        world.packages = world.vrpm_qa("g");
        assert!(world.packages.len() >= 4, "{:?}", world.packages);
        world.verify = world.vrpm_va("g");
        Some(world)
    }

    fn build_args(name: &str, force: bool) -> Vec<String> {
        let mut args = vec![name.to_owned(), "build".to_owned()];
        if force {
            args.push("--force".to_owned());
        }
        args.extend(["-m", "yum", "--", "-d", "fixture"].map(str::to_owned));
        args
    }

    fn build(&self, name: &str) {
        let args = Self::build_args(name, false);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.host.ok(&args);
    }

    fn vrpm_qa(&self, name: &str) -> Vec<String> {
        let out = self
            .host
            .vserver(&["vrpm", name, "--", "-qa", "--qf", "%{NVRA}\n"]);
        assert!(out.status.success(), "vrpm -qa: {}", text(&out));
        sorted_lines(&out.stdout)
    }

    fn vrpm_va(&self, name: &str) -> Vec<String> {
        let out = self
            .host
            .vserver(&["vrpm", name, "--", "-Va", "--noscripts"]);
        sorted_lines(&out.stdout)
    }

    fn config(&self, name: &str) -> PathBuf {
        self.host.dir.join("etc").join(name).join("config.toml")
    }

    fn mode(&self, name: &str) -> String {
        let config = std::fs::read_to_string(self.config(name)).unwrap();
        if config.contains("package_management = \"internal\"") {
            "internal".into()
        } else {
            "external".into()
        }
    }

    /// Runs `vserver ARGS` killed at checkpoint `at`; `None` when it finished before.
    fn killed_at(&self, at: usize, args: &[&str]) -> Option<Output> {
        let out = self
            .host
            .command(args)
            .env(vserver_pkgmgmt::KILL_AT_VAR, at.to_string())
            .output()
            .unwrap();
        if out.status.signal() == Some(9) {
            return Some(out);
        }
        assert!(
            out.status.success(),
            "{args:?} (kill at {at}): {}",
            text(&out)
        );
        None
    }

    /// Runs `vserver ARGS` and kills it after a random delay below `within`; whether it was
    /// still running then.
    fn killed_randomly(&mut self, within: Duration, args: &[&str]) -> bool {
        // xorshift: a fixed seed, the same delays on every run.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let delay = Duration::from_micros(self.seed % (within.as_micros() as u64).max(1));
        let mut child = self
            .host
            .command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        let status = child.wait().unwrap();
        status.signal() == Some(9)
    }

    /// The ordinary command after a kill; returns the recovery lines it printed.
    fn next_command(&self) -> usize {
        let out = self.host.vserver(&["--list"]);
        assert!(out.status.success(), "--list: {}", text(&out));
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| l.contains("undid") || l.contains("finished"))
            .count()
    }

    /// `--list` names, states.
    fn listed(&self) -> Vec<(String, String)> {
        let out = self.host.ok(&["--list", "--json"]);
        let list: serde_json::Value = serde_json::from_str(&out).unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .map(|g| {
                (
                    g["guest"].as_str().unwrap().to_owned(),
                    g["state"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// Everything that must hold after the next command: see the module documentation.
    fn assert_sound(&self, what: &str) {
        let listed = self.listed();
        let mut on_disk: Vec<String> = std::fs::read_dir(self.host.dir.join("etc"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        on_disk.sort();
        let names: Vec<String> = listed.iter().map(|(n, _)| n.clone()).collect();
        assert_eq!(names, on_disk, "{what}: --list against the configurations");
        for dir in ["vservers", "vservers/.pkg"] {
            for entry in std::fs::read_dir(self.host.dir.join(dir)).unwrap() {
                let name = entry.unwrap().file_name().to_string_lossy().into_owned();
                assert!(
                    name.starts_with('.') && !name.contains("vserver-replaced")
                        || names.contains(&name),
                    "{what}: `{dir}/{name}` belongs to no listed guest"
                );
            }
        }
        for (name, state) in &listed {
            assert_eq!(state, "stopped", "{what}: guest {name}");
            if self.mode(name) == "external" {
                assert_eq!(self.vrpm_qa(name), self.packages, "{what}: guest {name}");
                assert_eq!(self.vrpm_va(name), self.verify, "{what}: guest {name}");
            } else {
                assert_eq!(
                    self.internal_qa(name),
                    self.packages,
                    "{what}: guest {name}"
                );
            }
        }
        let leftovers = leftovers(&self.host.dir);
        assert!(leftovers.is_empty(), "{what}: left over: {leftovers:?}");
        self.assert_nothing_runs(what);
    }

    /// Host rpm on the guest's own database, as an administrator would read it.
    fn internal_qa(&self, name: &str) -> Vec<String> {
        let home = self.host.dir.join("home");
        std::fs::create_dir_all(&home).unwrap();
        let out = Command::new("rpm")
            .arg("--root")
            .arg(self.host.dir.join("vservers").join(name))
            .args(["--dbpath", "/var/lib/rpm", "-qa", "--qf", "%{NVRA}\n"])
            .env("HOME", home)
            .output()
            .unwrap();
        assert!(out.status.success(), "rpm -qa: {}", text(&out));
        sorted_lines(&out.stdout)
    }

    /// No process whose root or working directory lies below the work directory, no mount
    /// below it (the killed operation's sandboxes die with it; allow them a moment).
    fn assert_nothing_runs(&self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (processes, mounts) = survivors(&self.host.dir);
            if processes.is_empty() && mounts.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: survivors {processes:?}, mounts {mounts:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn count(&mut self, operation: &str, trials: usize, recovered: usize) {
        eprintln!("{operation}: {trials} trials, {recovered} recovery lines");
        self.counts.push((operation.to_owned(), trials, recovered));
    }

    /// Kills `args` at every checkpoint, then at random times, with `prepare` before each
    /// trial and [`World::assert_sound`] after it.
    fn trials(
        &mut self,
        operation: &str,
        args: &[&str],
        prepare: &dyn Fn(&World),
        duration: Duration,
    ) {
        let mut trials = 0;
        let mut recovered = 0;
        for at in 1.. {
            prepare(self);
            let killed = self.killed_at(at, args);
            trials += 1;
            recovered += self.next_command();
            self.assert_sound(&format!("{operation} killed at checkpoint {at}"));
            if killed.is_none() {
                break;
            }
        }
        let mut random = 0;
        while trials < min_trials() || random < 5 {
            prepare(self);
            self.killed_randomly(duration, args);
            trials += 1;
            random += 1;
            recovered += self.next_command();
            self.assert_sound(&format!("{operation} killed at random (trial {random})"));
        }
        self.count(operation, trials, recovered);
    }
}

/// Set-aside entries, journals and logs anywhere below `dir`.
fn leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            let journal = current.ends_with(".journal") && name.ends_with(".toml");
            if journal
                || name.contains("vserver-aside")
                || name.contains("vserver-replaced")
                || name == "mode-change"
                || name == "mode-change.saved"
                || name == "convert"
            {
                found.push(entry.path());
            }
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            }
        }
    }
    found
}

/// Processes rooted or working below `dir`, and mounts below it.
fn survivors(dir: &Path) -> (Vec<String>, Vec<String>) {
    let mut processes = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        for link in ["root", "cwd"] {
            if let Ok(target) = std::fs::read_link(entry.path().join(link))
                && target.starts_with(dir)
            {
                let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
                processes.push(format!("{name} {} ({link})", comm.trim()));
            }
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&*dir.to_string_lossy()))
        .map(str::to_owned)
        .collect();
    (processes, mounts)
}

/// How long `args` takes when nothing kills it.
fn timed(world: &World, args: &[&str]) -> Duration {
    let started = Instant::now();
    world.host.ok(args);
    started.elapsed()
}

// Needs the kill hook (VSERVER_TEST_KILL_AT, module pkgmgmt::checkpoint), which release
// builds compile out: debug builds only.
#[cfg(debug_assertions)]
#[test]
fn guest_operations_killed_at_every_step_are_finished_or_undone_by_the_next_command() {
    let Some(mut world) = World::new() else {
        return;
    };

    // build: a new guest `n` each trial.
    let build_n = World::build_args("n", false);
    let build_n: Vec<&str> = build_n.iter().map(String::as_str).collect();
    let duration = timed(&world, &build_n);
    let remove_n = |w: &World| {
        if w.config("n").exists() {
            w.host.ok(&["n", "delete", "--yes"]);
        }
    };
    world.trials("build", &build_n, &remove_n, duration);
    remove_n(&world);

    // build --force over `g`: the old guest or the new one, complete, never both or neither.
    let force_g = World::build_args("g", true);
    let force_g: Vec<&str> = force_g.iter().map(String::as_str).collect();
    let duration = timed(&world, &force_g);
    world.trials("build --force", &force_g, &|_| {}, duration);

    // clone of `g` into `c`: a complete copy or nothing.
    let clone_c = ["c", "build", "-m", "clone", "--", "--source", "g"];
    let remove_c = |w: &World| {
        if w.config("c").exists() {
            w.host.ok(&["c", "delete", "--yes"]);
        }
    };
    let duration = timed(&world, &clone_c);
    remove_c(&world);
    world.trials("clone", &clone_c, &remove_c, duration);
    remove_c(&world);

    // delete of `d`, rebuilt whenever a trial removed it.
    let make_d = |w: &World| {
        if !w.config("d").exists() {
            w.build("d");
        }
    };
    make_d(&world);
    let duration = timed(&world, &["d", "delete", "--yes"]);
    world.trials("delete", &["d", "delete", "--yes"], &make_d, duration);
    if world.config("d").exists() {
        world.host.ok(&["d", "delete", "--yes"]);
    }

    // internalize from external, externalize from internal.
    let external = |w: &World| {
        if w.mode("g") == "internal" {
            w.host.ok(&["g", "pkgmgmt", "externalize"]);
        }
    };
    let internal = |w: &World| {
        if w.mode("g") == "external" {
            w.host.ok(&["g", "pkgmgmt", "internalize"]);
        }
    };
    external(&world);
    let duration = timed(&world, &["g", "pkgmgmt", "internalize"]);
    world.trials(
        "pkgmgmt internalize",
        &["g", "pkgmgmt", "internalize"],
        &external,
        duration,
    );
    internal(&world);
    let duration = timed(&world, &["g", "pkgmgmt", "externalize"]);
    world.trials(
        "pkgmgmt externalize",
        &["g", "pkgmgmt", "externalize"],
        &internal,
        duration,
    );
    for (operation, trials, recovered) in &world.counts {
        eprintln!(
            "summary: {operation}: {trials} kills, all recovered ({recovered} recovery lines)"
        );
    }
}

#[test]
fn delete_removes_only_the_guest_named_however_the_configurations_are_edited() {
    let Some(world) = World::new() else {
        return;
    };
    world.build("h");
    let victim_root = world.host.dir.join("vservers/h");
    let before = common::snapshot(&victim_root);
    let h_config = std::fs::read_to_string(world.config("h")).unwrap();
    let g_config = std::fs::read_to_string(world.config("g")).unwrap();

    // What `build --force` used to leave: a copy of h's configuration under another name.
    let copy = world.host.dir.join("etc/h.old-1234");
    std::fs::create_dir_all(&copy).unwrap();
    std::fs::write(copy.join("config.toml"), &h_config).unwrap();
    let out = world.host.vserver(&["h.old-1234", "delete", "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refusing to remove anything"),
        "{}",
        text(&out)
    );
    // The copy renamed to match its directory: its identity is not `.pkg/h.old-1234`'s.
    std::fs::write(
        copy.join("config.toml"),
        h_config.replace("name = \"h\"", "name = \"h.old-1234\""),
    )
    .unwrap();
    let out = world.host.vserver(&["h.old-1234", "delete", "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    std::fs::remove_dir_all(&copy).unwrap();

    // g's configuration pointed at h's root, with or without h's identity.
    let h_root_line = h_config
        .lines()
        .find(|l| l.starts_with("root = "))
        .unwrap()
        .to_owned();
    let g_root_line = g_config
        .lines()
        .find(|l| l.starts_with("root = "))
        .unwrap()
        .to_owned();
    let h_id_line = h_config
        .lines()
        .find(|l| l.starts_with("id = "))
        .unwrap()
        .to_owned();
    let g_id_line = g_config
        .lines()
        .find(|l| l.starts_with("id = "))
        .unwrap()
        .to_owned();
    for edited in [
        g_config.replace(&g_root_line, &h_root_line),
        g_config
            .replace(&g_root_line, &h_root_line)
            .replace(&g_id_line, &h_id_line),
        g_config
            .replace(&g_root_line, &h_root_line)
            .replace(&g_id_line, ""),
    ] {
        std::fs::write(world.config("g"), &edited).unwrap();
        let out = world.host.vserver(&["g", "delete", "--yes"]);
        assert_eq!(out.status.code(), Some(1), "{edited}\n{}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("refusing to remove anything"),
            "{}",
            text(&out)
        );
        assert_eq!(common::snapshot(&victim_root), before);
        assert!(world.host.dir.join("vservers/.pkg/h/identity").is_file());
    }
    std::fs::write(world.config("g"), &g_config).unwrap();
    world.host.ok(&["g", "delete", "--yes"]);
    assert!(!world.host.dir.join("vservers/g").exists());
    assert_eq!(common::snapshot(&victim_root), before);
    assert_eq!(world.vrpm_qa("h"), world.packages);
}

/// Replaces everything a recovery of `root` will touch — set-aside entries, the database
/// directory internalize creates, the files it writes — with links to `canary` (absolute, `..`
/// and a loop), as a guest that is root inside could between the kill and the next command.
fn plant_links(root: &Path, canary: &Path) -> usize {
    let mut targets = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".vserver-aside") {
                targets.push(entry.path());
            } else if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            }
        }
    }
    for extra in [
        "var/lib/rpm",
        "etc/rpm/macros.vserver",
        "etc/dnf/dnf.conf",
        "var/lib/dnf",
    ] {
        if std::fs::symlink_metadata(root.join(extra)).is_ok() {
            targets.push(root.join(extra));
        }
    }
    let depth = root.components().count();
    for (n, path) in targets.iter().enumerate() {
        if std::fs::symlink_metadata(path).unwrap().is_dir() {
            std::fs::remove_dir_all(path).unwrap();
        } else {
            std::fs::remove_file(path).unwrap();
        }
        let target = match n % 3 {
            0 => canary.to_path_buf(),
            1 => PathBuf::from("../".repeat(depth + 2)).join(canary.strip_prefix("/").unwrap()),
            _ => path.clone(),
        };
        std::os::unix::fs::symlink(target, path).unwrap();
    }
    targets.len()
}

// Needs the kill hook (VSERVER_TEST_KILL_AT, module pkgmgmt::checkpoint), which release
// builds compile out: debug builds only.
#[cfg(debug_assertions)]
#[test]
fn a_guest_planting_links_before_the_recovery_changes_nothing_outside_its_root() {
    let Some(world) = World::new() else {
        return;
    };
    let canary = world.host.dir.join("canary");
    std::fs::create_dir_all(canary.join("sub")).unwrap();
    std::fs::write(canary.join("file"), "host data\n").unwrap();
    std::fs::write(canary.join("sub/file"), "more host data\n").unwrap();
    let before = common::snapshot(&canary);
    let root = world.host.dir.join("vservers/g");
    let mut planted_total = 0;
    for operation in ["internalize", "externalize"] {
        for at in (2..40).step_by(3) {
            // A fresh guest each time: the planted links may well break it (its own loss).
            if world.config("g").exists() {
                world.host.ok(&["g", "delete", "--yes"]);
            }
            world.build("g");
            if operation == "externalize" {
                world.host.ok(&["g", "pkgmgmt", "internalize"]);
            }
            let killed = world.killed_at(at, &["g", "pkgmgmt", operation]);
            planted_total += plant_links(&root, &canary);
            // Whatever the recovery makes of the guest, it must not reach the canary.
            let _ = world.host.vserver(&["--list"]);
            let _ = world.host.vserver(&["vrpm", "g", "--", "-qa"]);
            assert_eq!(
                common::snapshot(&canary),
                before,
                "{operation} killed at {at}"
            );
            assert!(canary.join("file").is_file());
            if killed.is_none() {
                break;
            }
        }
    }
    eprintln!("planted {planted_total} links between kills and recoveries; canary unchanged");
    assert!(planted_total > 10, "too few links planted: {planted_total}");
}

#[test]
fn a_failed_build_kept_is_listed_incomplete_and_the_next_build_starts_over() {
    let Some(world) = World::new() else {
        return;
    };
    let out = world.host.vserver(&[
        "k",
        "build",
        "-m",
        "yum",
        "--keep",
        "--",
        "-d",
        "fixture",
        "--",
        "no-such-package",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("listed as incomplete"),
        "{}",
        text(&out)
    );
    let listed = world.listed();
    assert!(
        listed.contains(&("k".to_owned(), "incomplete".to_owned())),
        "{listed:?}"
    );
    let out = world.host.ok(&["--list"]);
    assert!(out.contains("incomplete"), "{out}");
    // The next build of that name, without --force, starts over and says so.
    let args = World::build_args("k", false);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = world.host.vserver(&args);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("removed the failed build kept with --keep"),
        "{}",
        text(&out)
    );
    assert_eq!(world.vrpm_qa("k"), world.packages);
    world.assert_sound("after the rebuild of a kept build");

    // Kept over a guest it replaced: delete of the incomplete one brings the old one back.
    let out = world.host.vserver(&[
        "k",
        "build",
        "--force",
        "-m",
        "yum",
        "--keep",
        "--",
        "-d",
        "fixture",
        "--",
        "no-such-package",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        world
            .listed()
            .contains(&("k".to_owned(), "incomplete".to_owned()))
    );
    world.host.ok(&["k", "delete", "--yes"]);
    assert_eq!(world.vrpm_qa("k"), world.packages);
    world.assert_sound("after the delete of a kept build");
}
