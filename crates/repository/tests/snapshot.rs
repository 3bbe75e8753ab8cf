//! Snapshots of an rpm-md repository: immutable after the repository changes, packages shared
//! (hard links into the pool), names checked, published names switched and protected, the
//! pool cleaned when nothing uses a file any more.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use vserver_fixtures::{RpmSetOptions, write_rpm_set};
use vserver_repository::progress::NoProgress;
use vserver_repository::rpmmd::{RpmIndexOptions, index_rpm};
use vserver_repository::snapshot::{SnapshotError, SnapshotStore};

fn rpms(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rpm"))
        .collect();
    out.sort();
    out
}

#[test]
fn snapshots_are_immutable_shared_and_published_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    write_rpm_set(
        &repo,
        &RpmSetOptions {
            seed: 8,
            count: 12,
            ..RpmSetOptions::default()
        },
    )
    .unwrap();
    index_rpm(&repo, &RpmIndexOptions::default(), &NoProgress).unwrap();
    let root = tmp.path().join("published");
    std::fs::create_dir_all(&root).unwrap();
    let store = SnapshotStore::new(&root);

    assert!(matches!(
        store.create(&repo, "../evil", false),
        Err(SnapshotError::BadName(_))
    ));
    assert!(matches!(
        store.create(tmp.path(), "x", false),
        Err(SnapshotError::NotARepository(_))
    ));
    // A mirror or index run holds the repository: the snapshot does not read it half-switched.
    {
        let _held = vserver_repository::publish::lock_repository(&repo, false).unwrap();
        let refused = store.create(&repo, "A", false).unwrap_err().to_string();
        assert!(refused.contains("another vrepo process"), "{refused}");
        assert!(!store.snapshot_dir("A").exists());
    }
    let a = store.create(&repo, "A", false).unwrap();
    assert_eq!(a.packages, 12);
    assert!(a.metadata_bytes > 0 && a.metadata_bytes < a.package_bytes);
    assert_eq!(a.hashed, 12);
    assert!(matches!(
        store.create(&repo, "A", false),
        Err(SnapshotError::Exists { .. })
    ));
    let snapshot_a = store.snapshot_dir("A");
    let repomd_a = std::fs::read(snapshot_a.join("repodata/repomd.xml")).unwrap();
    for package in rpms(&repo) {
        let linked = snapshot_a.join(package.file_name().unwrap());
        assert_eq!(
            std::fs::metadata(&linked).unwrap().ino(),
            std::fs::metadata(&package).unwrap().ino()
        );
    }

    // The repository changes: one package goes, the metadata is rewritten. A is unchanged.
    let gone = rpms(&repo).remove(0);
    std::fs::remove_file(&gone).unwrap();
    index_rpm(&repo, &RpmIndexOptions::default(), &NoProgress).unwrap();
    assert_eq!(
        std::fs::read(snapshot_a.join("repodata/repomd.xml")).unwrap(),
        repomd_a
    );
    assert!(snapshot_a.join(gone.file_name().unwrap()).is_file());
    let b = store.create(&repo, "B", false).unwrap();
    assert_eq!(b.packages, 11);
    assert_eq!(b.hashed, 0, "unchanged packages are not hashed again");

    // Published names.
    store.publish("A", "stable", None).unwrap();
    assert_eq!(
        std::fs::read(root.join("stable/repodata/repomd.xml")).unwrap(),
        repomd_a
    );
    store.publish("B", "stable", None).unwrap();
    assert!(!root.join("stable").join(gone.file_name().unwrap()).exists());
    assert_eq!(store.published().unwrap()["stable"], "B");
    assert!(matches!(
        store.publish("C", "stable", None),
        Err(SnapshotError::NoSuchSnapshot { .. })
    ));
    std::fs::create_dir(root.join("docs")).unwrap();
    assert!(matches!(
        store.publish("A", "docs", None),
        Err(SnapshotError::NotAPublishedName { .. })
    ));
    assert!(matches!(
        store.delete("B"),
        Err(SnapshotError::Published { .. })
    ));
    let list = store.list().unwrap();
    let names: Vec<&str> = list.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["A", "B"]);
    assert_eq!(list[1].published_as, ["stable"]);

    // Deleting A frees the package only A held.
    store.delete("A").unwrap();
    let pool = root.join(".vrepo-snapshots/pool");
    let mut pooled = 0;
    for dir in std::fs::read_dir(&pool).unwrap() {
        for file in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let meta = std::fs::metadata(file.unwrap().path()).unwrap();
            assert!(meta.nlink() > 1, "a pool file nothing uses was kept");
            pooled += 1;
        }
    }
    assert_eq!(pooled, 11);
    store.unpublish("stable").unwrap();
    store.delete("B").unwrap();
    assert!(store.list().unwrap().is_empty());

    // What a killed create leaves (a hidden, half-made snapshot holding pool links) is not a
    // snapshot, and the next operation on the store removes it.
    let stale = root.join(".vrepo-snapshots/snapshots/.C.tmp-999999");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("half"), b"x").unwrap();
    assert!(store.list().unwrap().is_empty());
    store.create(&repo, "D", false).unwrap();
    assert!(!stale.exists());
    assert_eq!(store.list().unwrap().len(), 1);
}
