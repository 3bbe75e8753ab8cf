//! A driver for `bench/index-deb.sh` until `vrepo index` handles .debs: indexes the directory
//! named by `VREPO_BENCH_DIR` (with `--update` when `VREPO_BENCH_UPDATE=1`) and prints the report.
//! Ignored in normal test runs.

use vserver_repository::apt::{AptIndexOptions, index_apt};
use vserver_repository::progress::NoProgress;

#[test]
#[ignore = "benchmark driver, run by bench/index-deb.sh"]
fn index_bench_dir() {
    let Some(dir) = std::env::var_os("VREPO_BENCH_DIR") else {
        eprintln!("skipped: VREPO_BENCH_DIR is not set");
        return;
    };
    let opts = AptIndexOptions {
        update: std::env::var("VREPO_BENCH_UPDATE").as_deref() == Ok("1"),
        ..AptIndexOptions::default()
    };
    let report = index_apt(std::path::Path::new(&dir), &opts, &NoProgress).unwrap();
    eprintln!(
        "indexed {} packages ({} bytes, {} reused)",
        report.packages, report.bytes, report.reused
    );
}
