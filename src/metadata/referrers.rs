//! Referrers: the manifests whose `subject` is a given manifest.

use sqlx::Row;

use super::{Metadata, Result};
use crate::oci::Digest;

/// A manifest whose `subject` is some other manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Referrer {
    pub digest: String,
    pub media_type: String,
    pub artifact_type: Option<String>,
    pub size: i64,
    pub annotations: Option<String>,
}

impl Metadata {
    /// Manifests in `repo` whose subject is `subject`, optionally only those
    /// of one artifact type, oldest first.
    pub async fn referrers(
        &self,
        repo: &str,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>> {
        let rows = sqlx::query(
            "SELECT m.digest, m.media_type, m.artifact_type, m.size, m.annotations FROM manifests m
               JOIN repositories r ON r.id = m.repository_id
              WHERE r.name = $1 AND m.subject_digest = $2 AND ($3 IS NULL OR m.artifact_type = $4)
              ORDER BY m.id",
        )
        .bind(repo)
        .bind(subject.to_string())
        .bind(artifact_type)
        .bind(artifact_type)
        .fetch_all(&self.read)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(Referrer {
                    digest: row.try_get("digest")?,
                    media_type: row.try_get("media_type")?,
                    artifact_type: row.try_get("artifact_type")?,
                    size: row.try_get("size")?,
                    annotations: row.try_get("annotations")?,
                })
            })
            .collect()
    }
}
