//! Durable directory creation: a directory entry reaches the disk only when
//! its parent directory is fsynced, so a file renamed into a directory
//! created just before can vanish with the directory after a power loss even
//! though the file itself was synced. Used by the blob store and the
//! admin-token file; knows nothing of either.
//!
//! Files made once and shared by replicas on one data directory (the token
//! signing key, the admin token's hash) are published with
//! [`create_file_once`]: whoever comes first writes it, the others read it.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// Fsyncs directory `dir` (its entries: files created, renamed or removed).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// `create_dir_all`, then fsyncs the parent of every directory it created,
/// so each new entry is on disk before anything is put inside.
pub fn create_dir_all_synced(dir: &Path) -> io::Result<()> {
    create_dir_all_with(dir, sync_dir)
}

/// Creates `path` with `contents` (and `mode`) unless it exists, durably and
/// atomically: written and synced under a name of this process's own, then
/// hard-linked to `path`, which fails if another process (a replica starting
/// at the same moment) got there first. Returns whether this call created
/// it; either way `path` holds one writer's whole contents.
pub fn create_file_once(path: &Path, contents: &[u8], mode: u32) -> io::Result<bool> {
    use std::io::Write;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        create_dir_all_synced(dir)?;
    }
    let mut unique = [0u8; 8];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut unique);
    let tmp = path.with_extension(format!(
        "{}.{}.tmp",
        std::process::id(),
        hex::encode(unique)
    ));
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
        let mut f = options.open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_dir(dir.unwrap_or(Path::new(".")))?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// [`create_dir_all_synced`] with the sync step given (tests record it).
fn create_dir_all_with(
    dir: &Path,
    mut sync: impl FnMut(&Path) -> io::Result<()>,
) -> io::Result<()> {
    let mut missing: Vec<PathBuf> = Vec::new();
    let mut at = Some(dir);
    while let Some(d) = at {
        if d.as_os_str().is_empty() || d.is_dir() {
            break;
        }
        missing.push(d.to_path_buf());
        at = d.parent();
    }
    for d in missing.iter().rev() {
        match std::fs::create_dir(d) {
            Ok(()) => {}
            // Made meanwhile by someone else, who syncs it.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && d.is_dir() => continue,
            Err(e) => return Err(e),
        }
        let parent = d.parent().filter(|p| !p.as_os_str().is_empty());
        sync(parent.unwrap_or(Path::new(".")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replicas starting together on one data directory: exactly one
    /// creates the file, and every one then reads that one's whole contents.
    #[test]
    fn a_file_made_once_is_one_writers_whole() {
        for round in 0..20 {
            let tmp = tempfile::tempdir().unwrap();
            let path = tmp.path().join("auth/key.pem");
            let start = std::sync::Arc::new(std::sync::Barrier::new(8));
            let racers: Vec<_> = (0..8u8)
                .map(|i| {
                    let (path, start) = (path.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        let created = create_file_once(&path, &[i; 4096], 0o600).unwrap();
                        (created, i)
                    })
                })
                .collect();
            let results: Vec<(bool, u8)> = racers.into_iter().map(|t| t.join().unwrap()).collect();
            let winners: Vec<u8> = results.iter().filter(|r| r.0).map(|r| r.1).collect();
            assert_eq!(winners.len(), 1, "round {round}: {results:?}");
            assert_eq!(std::fs::read(&path).unwrap(), vec![winners[0]; 4096]);
            // Nothing left behind but the file.
            let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, ["key.pem"], "round {round}");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let tmp = tempfile::tempdir().unwrap();
            let path = tmp.path().join("k");
            assert!(create_file_once(&path, b"x", 0o600).unwrap());
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            assert!(!create_file_once(&path, b"y", 0o600).unwrap());
            assert_eq!(std::fs::read(&path).unwrap(), b"x");
        }
    }

    /// Issue 12, 7(iv): every directory created has its parent synced, top
    /// down; what already exists is left alone.
    #[test]
    fn syncs_the_parent_of_each_new_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir(root.join("blobs")).unwrap();
        let target = root.join("blobs/sha256/ab");
        let mut synced = Vec::new();
        create_dir_all_with(&target, |p| {
            synced.push(p.to_path_buf());
            sync_dir(p)
        })
        .unwrap();
        assert!(target.is_dir());
        assert_eq!(synced, [root.join("blobs"), root.join("blobs/sha256")]);
        synced.clear();
        create_dir_all_with(&target, |p| {
            synced.push(p.to_path_buf());
            Ok(())
        })
        .unwrap();
        assert!(synced.is_empty(), "nothing new, nothing synced");
        // A file where a directory should be is an error, not a loop.
        std::fs::write(root.join("file"), b"x").unwrap();
        assert!(create_dir_all_synced(&root.join("file/sub")).is_err());
        create_dir_all_synced(&root.join("c/d")).unwrap();
        assert!(root.join("c/d").is_dir());
    }
}
