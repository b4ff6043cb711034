//! Durable directory creation: a directory entry reaches the disk only when
//! its parent directory is fsynced, so a file renamed into a directory
//! created just before can vanish with the directory after a power loss even
//! though the file itself was synced. Used by the blob store and the
//! admin-token file; knows nothing of either.

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
