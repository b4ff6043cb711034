//! `berth fsck`: an offline check of a data directory. Verifies every blob's
//! size and digest against the database, every manifest's references, and
//! finds orphans (blob files without a row, upload files without a session,
//! sessions without a file). `--repair` deletes orphans; it never deletes a
//! blob the database knows, and never touches a referenced object.
//!
//! It also warns about repositories whose names the current naming rules
//! would refuse to a new push (the grammar, and with the declared projects
//! the depth below a project), e.g. one pushed before its project was
//! declared. Those are warnings, not problems: the data is whole, the admin
//! can still read and delete such a repository, and whether it should go is
//! the admin's call, which neither `--repair` nor a failing exit status
//! should make.

use std::collections::HashSet;
use std::path::Path;

use futures_util::StreamExt;

use crate::auth::{AccessModel, Location, MAX_LEVELS_BELOW_PROJECT};
use crate::metadata::{self, DatabaseConfig};
use crate::oci::{Digest, Hasher, manifest, validate_repository};
use crate::storage::BlobStore;
use crate::storage::fs::FsStore;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The database knows the blob; the store has no file.
    MissingBlobFile {
        digest: String,
    },
    SizeMismatch {
        digest: String,
        recorded: u64,
        on_disk: u64,
    },
    DigestMismatch {
        digest: String,
        actual: String,
    },
    /// A file in the store with no row (a crash between rename and commit,
    /// or a sweep between row deletion and file deletion).
    OrphanBlobFile {
        digest: String,
        size: u64,
    },
    /// A manifest whose payload names a blob or child the database lacks.
    BrokenManifest {
        repository: String,
        digest: String,
        message: String,
    },
    OrphanUploadFile {
        name: String,
        size: u64,
    },
    UploadWithoutFile {
        id: String,
    },
}

impl Problem {
    /// Whether `--repair` fixes it (by deleting the orphan).
    pub fn repairable(&self) -> bool {
        matches!(
            self,
            Problem::OrphanBlobFile { .. }
                | Problem::OrphanUploadFile { .. }
                | Problem::UploadWithoutFile { .. }
        )
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::MissingBlobFile { digest } => {
                write!(f, "blob {digest}: recorded, but its file is missing")
            }
            Problem::SizeMismatch {
                digest,
                recorded,
                on_disk,
            } => {
                write!(
                    f,
                    "blob {digest}: recorded size {recorded}, file size {on_disk}"
                )
            }
            Problem::DigestMismatch { digest, actual } => {
                write!(f, "blob {digest}: content hashes to {actual}")
            }
            Problem::OrphanBlobFile { digest, size } => write!(
                f,
                "blob {digest}: file ({size} bytes) with no record (orphan)"
            ),
            Problem::BrokenManifest {
                repository,
                digest,
                message,
            } => write!(f, "manifest {repository}@{digest}: {message}"),
            Problem::OrphanUploadFile { name, size } => write!(
                f,
                "upload file {name} ({size} bytes) with no session (orphan)"
            ),
            Problem::UploadWithoutFile { id } => write!(f, "upload session {id} has no file"),
        }
    }
}

/// Something to look at that is no corruption: fsck still passes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// A repository a new push could not create under the current naming
    /// rules; the admin can still list, pull and delete it.
    NameBreaksRules { repository: String, rule: String },
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Warning::NameBreaksRules { repository, rule } => write!(
                f,
                "repository {repository}: its name breaks the naming rules ({rule}); \
                 only the admin can list and delete it"
            ),
        }
    }
}

/// Which naming rule `repo` breaks, if any: the name grammar, and with the
/// declared projects (`None`: not known here) the depth below a project.
pub fn naming_rule_broken(projects: Option<&AccessModel>, repo: &str) -> Option<String> {
    if let Err(e) = validate_repository(repo) {
        return Some(e.to_string());
    }
    match projects?.locate(repo) {
        Location::TooDeep { project, levels } => Some(format!(
            "{levels} levels below project {project}; at most {MAX_LEVELS_BELOW_PROJECT} are allowed"
        )),
        Location::InProject(_) | Location::Outside => None,
    }
}

#[derive(Debug, Default)]
pub struct Report {
    pub blobs: u64,
    pub blob_bytes: u64,
    pub manifests: u64,
    /// Blobs no manifest references (garbage collection reviews them).
    pub unreferenced_blobs: u64,
    pub problems: Vec<Problem>,
    /// Not counted as problems: the exit status stays 0.
    pub warnings: Vec<Warning>,
    pub repaired: u64,
}

/// Checks `data_dir` and its embedded database (the registry should be
/// stopped), repository names against the grammar only. `progress` gets a
/// line now and then on long runs.
pub async fn check(
    data_dir: &Path,
    repair: bool,
    progress: &dyn Fn(&str),
) -> Result<Report, String> {
    let database = DatabaseConfig::in_data_dir(data_dir);
    check_with(data_dir, &database, repair, None, progress).await
}

/// [`check`] with the metadata in `database` (the data directory's SQLite
/// file, or PostgreSQL), and the declared projects (from the
/// configuration's manifest directory) to check repository names against
/// their depth rule.
pub async fn check_with(
    data_dir: &Path,
    database: &DatabaseConfig,
    repair: bool,
    projects: Option<&AccessModel>,
    progress: &dyn Fn(&str),
) -> Result<Report, String> {
    let store = FsStore::open(data_dir).map_err(|e| e.to_string())?;
    let options = Options {
        repair,
        verify_digests: true,
        projects,
    };
    check_store(data_dir, database, &store, &options, progress).await
}

/// How [`check_store`] goes about it.
pub struct Options<'a> {
    /// Delete orphans.
    pub repair: bool,
    /// Read every blob and hash it; otherwise sizes only (what listing the
    /// store tells: cheap on object storage, where reading is not).
    pub verify_digests: bool,
    /// The declared projects, to check repository depths against.
    pub projects: Option<&'a AccessModel>,
}

/// [`check_with`] on any blob store (the data directory's, or a bucket).
pub async fn check_store(
    data_dir: &Path,
    database: &DatabaseConfig,
    store: &dyn BlobStore,
    options: &Options<'_>,
    progress: &dyn Fn(&str),
) -> Result<Report, String> {
    let (repair, projects) = (options.repair, options.projects);
    if let DatabaseConfig::Sqlite { path } = database
        && !path.exists()
    {
        return Err(format!(
            "{} has no berth.db: not a berth data directory",
            data_dir.display()
        ));
    }
    let meta = metadata::open(database).await.map_err(|e| e.to_string())?;
    let mut report = Report::default();

    // Blobs: every row has a file of the right size and digest.
    let rows = meta.all_blobs().await.map_err(|e| e.to_string())?;
    let files: std::collections::HashMap<String, u64> = store
        .list()
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|(d, s)| (d.to_string(), s))
        .collect();
    let known: HashSet<&str> = rows.iter().map(|(d, _)| d.as_str()).collect();
    let total = rows.len();
    for (i, (digest, size)) in rows.iter().enumerate() {
        let recorded = *size as u64;
        let Some(&on_disk) = files.get(digest) else {
            report.problems.push(Problem::MissingBlobFile {
                digest: digest.clone(),
            });
            continue;
        };
        if on_disk != recorded {
            report.problems.push(Problem::SizeMismatch {
                digest: digest.clone(),
                recorded,
                on_disk,
            });
            continue;
        }
        if options.verify_digests {
            let parsed: Digest = digest.parse().map_err(|e| format!("{digest}: {e}"))?;
            let mut hasher = Hasher::new(parsed.algorithm());
            let mut stream = store
                .get(&parsed, 0..on_disk)
                .await
                .map_err(|e| e.to_string())?;
            while let Some(chunk) = stream.next().await {
                hasher.update(&chunk.map_err(|e| format!("{digest}: {e}"))?);
            }
            let actual = hasher.finish();
            if actual != parsed {
                report.problems.push(Problem::DigestMismatch {
                    digest: digest.clone(),
                    actual: actual.to_string(),
                });
            }
        }
        report.blobs += 1;
        report.blob_bytes += on_disk;
        if (i + 1) % 1000 == 0 {
            progress(&format!(
                "verified {} of {total} blobs ({} bytes)",
                i + 1,
                report.blob_bytes
            ));
        }
    }
    for (digest, size) in &files {
        if !known.contains(digest.as_str()) {
            report.problems.push(Problem::OrphanBlobFile {
                digest: digest.clone(),
                size: *size,
            });
        }
    }

    // Manifests: what each payload names exists.
    let mut referenced = HashSet::new();
    let manifests = meta.all_manifests().await.map_err(|e| e.to_string())?;
    let by_repo: HashSet<(String, String)> = manifests
        .iter()
        .map(|(_, r, d, _, _)| (r.clone(), d.clone()))
        .collect();
    for (_, repo, digest, media_type, payload) in &manifests {
        report.manifests += 1;
        let parsed = match manifest::parse(Some(media_type), payload) {
            Ok(m) => m,
            Err(e) => {
                report.problems.push(Problem::BrokenManifest {
                    repository: repo.clone(),
                    digest: digest.clone(),
                    message: format!("payload does not parse: {e}"),
                });
                continue;
            }
        };
        for blob in &parsed.blobs {
            referenced.insert(blob.to_string());
            if !known.contains(blob.to_string().as_str()) {
                report.problems.push(Problem::BrokenManifest {
                    repository: repo.clone(),
                    digest: digest.clone(),
                    message: format!("references blob {blob}, which is not recorded"),
                });
            }
        }
        for child in &parsed.children {
            if !by_repo.contains(&(repo.clone(), child.to_string())) {
                report.problems.push(Problem::BrokenManifest {
                    repository: repo.clone(),
                    digest: digest.clone(),
                    message: format!("lists manifest {child}, which is not in the repository"),
                });
            }
        }
    }
    report.unreferenced_blobs = rows.iter().filter(|(d, _)| !referenced.contains(d)).count() as u64;

    // Repository names under the current rules.
    for repository in meta.repository_names().await.map_err(|e| e.to_string())? {
        if let Some(rule) = naming_rule_broken(projects, &repository) {
            report
                .warnings
                .push(Warning::NameBreaksRules { repository, rule });
        }
    }

    // Uploads: sessions and their files.
    let sessions: HashSet<String> = meta
        .all_uploads()
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .collect();
    let upload_files = store.uploads().await.map_err(|e| e.to_string())?;
    let upload_names: HashSet<&str> = upload_files.iter().map(|(n, _)| n.as_str()).collect();
    for (name, size) in &upload_files {
        if !sessions.contains(name) {
            report.problems.push(Problem::OrphanUploadFile {
                name: name.clone(),
                size: *size,
            });
        }
    }
    for id in &sessions {
        if !upload_names.contains(id.as_str()) {
            report
                .problems
                .push(Problem::UploadWithoutFile { id: id.clone() });
        }
    }

    if repair {
        for p in &report.problems {
            let done = match p {
                Problem::OrphanBlobFile { digest, .. } => match digest.parse::<Digest>() {
                    Ok(d) => store
                        .delete(&d)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                },
                Problem::OrphanUploadFile { name, .. } => {
                    store.remove_upload(name).await.map_err(|e| e.to_string())
                }
                Problem::UploadWithoutFile { id } => {
                    meta.delete_upload(id).await.map_err(|e| e.to_string())
                }
                _ => continue,
            };
            match done {
                Ok(()) => report.repaired += 1,
                Err(e) => progress(&format!("could not repair ({p}): {e}")),
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::directory::{Declared, load_text};
    use crate::storage::UploadId;

    async fn put(store: &dyn BlobStore, data: &[u8]) -> Digest {
        let digest = Digest::sha256_of(data);
        let id = UploadId::new();
        store.create_upload(&id).await.unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(bytes::Bytes::copy_from_slice(data)).await.unwrap();
        drop(tx);
        store.append_upload(&id, rx).await.unwrap();
        store.commit_upload(&id, &digest).await.unwrap();
        digest
    }

    /// Issue 15: fsck on a bucket lists it and compares sizes; reading every
    /// object is `--verify-digests`; orphans in the bucket are repaired.
    #[tokio::test]
    async fn checks_a_bucket_by_size_and_with_verify_digests_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let database = DatabaseConfig::in_data_dir(dir.path());
        let meta = metadata::open(&database).await.unwrap();
        let (store, bucket_dir) = crate::storage::conformance::s3_store_and_bucket();
        let data = b"a blob in a bucket ".repeat(1000);
        let digest = put(&store, &data).await;
        meta.link_blob("g/p/app", &digest, data.len() as u64)
            .await
            .unwrap();
        let orphan = put(&store, b"nobody links me").await;
        let session = UploadId::new();
        store.create_upload(&session).await.unwrap();
        let run = |verify_digests, repair| {
            let (database, store) = (&database, &store);
            let path = dir.path().to_path_buf();
            async move {
                let options = Options {
                    repair,
                    verify_digests,
                    projects: None,
                };
                check_store(&path, database, store, &options, &|_| {})
                    .await
                    .unwrap()
            }
        };
        let report = run(false, false).await;
        assert_eq!((report.blobs, report.blob_bytes), (1, data.len() as u64));
        let mut problems: Vec<String> = report.problems.iter().map(|p| p.to_string()).collect();
        problems.sort();
        assert_eq!(
            problems,
            vec![
                format!("blob {orphan}: file (15 bytes) with no record (orphan)"),
                format!("upload file {session} (0 bytes) with no session (orphan)"),
            ]
        );
        assert_eq!(run(false, true).await.repaired, 2);
        assert!(run(false, false).await.problems.is_empty());

        // The same bytes count, other content: only reading finds it.
        let hex = digest.hex();
        let file = bucket_dir.join(format!("blobs/sha256/{}/{hex}", &hex[..2]));
        let mut damaged = std::fs::read(&file).unwrap();
        damaged[7] ^= 1;
        std::fs::write(&file, &damaged).unwrap();
        assert!(run(false, false).await.problems.is_empty());
        let report = run(true, false).await;
        assert!(
            matches!(&report.problems[..], [Problem::DigestMismatch { digest: d, .. }] if *d == digest.to_string()),
            "{:?}",
            report.problems
        );
    }

    #[test]
    fn names_that_break_the_current_rules() {
        let mut declared = Declared::default();
        load_text(
            "kind: Project\nmetadata: {name: p}\nspec: {path: g/p}\n",
            &mut declared,
        )
        .unwrap();
        let model = AccessModel::new(declared, None);
        let cases: &[(Option<&AccessModel>, &str, Option<&str>)] = &[
            (Some(&model), "g/p/a/b", None),
            (
                Some(&model),
                "g/p/a/b/c",
                Some("3 levels below project g/p; at most 2 are allowed"),
            ),
            (None, "g/p/a/b/c", None),
            (Some(&model), "outside/a/b/c/d", None),
            (
                Some(&model),
                "g/p/app-",
                Some("must end with a letter or digit"),
            ),
            (None, "Upper/case", Some("must be lower case")),
        ];
        for (projects, repo, want) in cases {
            let got = naming_rule_broken(*projects, repo);
            match (want, &got) {
                (None, None) => {}
                (Some(w), Some(g)) if g.contains(w) => {}
                _ => panic!("{repo}: got {got:?}, want {want:?}"),
            }
        }
    }
}
