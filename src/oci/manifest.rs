//! Manifest parsing: which of the four supported kinds a payload is, and what
//! it references (blobs, child manifests, subject). Decoding is done with
//! `oci-spec`'s types, which read Docker schema 2 payloads as well (same shape).

use std::collections::HashMap;

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde::Deserialize;

use super::digest::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Largest manifest accepted, as in distribution and GitLab.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    OciManifest,
    OciIndex,
    DockerManifest,
    DockerManifestList,
}

impl MediaKind {
    pub fn from_media_type(media_type: &str) -> Option<MediaKind> {
        match media_type {
            OCI_MANIFEST => Some(MediaKind::OciManifest),
            OCI_INDEX => Some(MediaKind::OciIndex),
            DOCKER_MANIFEST => Some(MediaKind::DockerManifest),
            DOCKER_MANIFEST_LIST => Some(MediaKind::DockerManifestList),
            _ => None,
        }
    }

    pub fn media_type(self) -> &'static str {
        match self {
            MediaKind::OciManifest => OCI_MANIFEST,
            MediaKind::OciIndex => OCI_INDEX,
            MediaKind::DockerManifest => DOCKER_MANIFEST,
            MediaKind::DockerManifestList => DOCKER_MANIFEST_LIST,
        }
    }

    pub fn is_index(self) -> bool {
        matches!(self, MediaKind::OciIndex | MediaKind::DockerManifestList)
    }
}

/// What the registry needs to know about a manifest to store and serve it.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub kind: MediaKind,
    /// The config blob's digest (image manifests only).
    pub config: Option<Digest>,
    /// Blobs that must exist in the repository: config and distributable layers.
    pub blobs: Vec<Digest>,
    /// Manifests an index points at; they must exist in the repository.
    pub children: Vec<Digest>,
    pub subject: Option<Digest>,
    /// `artifactType`, or for an image manifest without one, the config's media type.
    pub artifact_type: Option<String>,
    pub annotations: Option<HashMap<String, String>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    Json(String),
    #[error("manifest schemaVersion {0} is not supported (only 2)")]
    SchemaVersion(i64),
    #[error("manifest media type {0:?} is not supported")]
    UnsupportedMediaType(String),
    #[error("manifest mediaType {body:?} does not match Content-Type {header:?}")]
    MediaTypeMismatch { body: String, header: String },
    #[error("manifest does not match its media type {media_type}: {reason}")]
    Shape {
        media_type: &'static str,
        reason: String,
    },
    #[error("manifest references {0:?}, which is not a supported digest")]
    BadReference(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    schema_version: Option<i64>,
    media_type: Option<String>,
    manifests: Option<serde::de::IgnoredAny>,
}

/// Parses a manifest payload received with the given `Content-Type`.
pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Manifest, ManifestError> {
    let probe: Probe =
        serde_json::from_slice(body).map_err(|e| ManifestError::Json(e.to_string()))?;
    match probe.schema_version {
        Some(2) => {}
        Some(v) => return Err(ManifestError::SchemaVersion(v)),
        None => return Err(ManifestError::SchemaVersion(0)),
    }
    let header = content_type
        .map(|c| c.split(';').next().unwrap_or("").trim())
        .filter(|c| !c.is_empty());
    let header_kind = header.and_then(MediaKind::from_media_type);
    let kind = match (probe.media_type.as_deref(), header) {
        (Some(body), _) => {
            let kind = MediaKind::from_media_type(body)
                .ok_or_else(|| ManifestError::UnsupportedMediaType(body.to_string()))?;
            if let (Some(hk), Some(h)) = (header_kind, header)
                && hk != kind
            {
                return Err(ManifestError::MediaTypeMismatch {
                    body: body.to_string(),
                    header: h.to_string(),
                });
            }
            kind
        }
        (None, Some(_)) => match header_kind {
            Some(k) => k,
            None if probe.manifests.is_some() => MediaKind::OciIndex,
            None => MediaKind::OciManifest,
        },
        (None, None) if probe.manifests.is_some() => MediaKind::OciIndex,
        (None, None) => MediaKind::OciManifest,
    };
    let shape = |e: serde_json::Error| ManifestError::Shape {
        media_type: kind.media_type(),
        reason: e.to_string(),
    };
    if kind.is_index() {
        let index: ImageIndex = serde_json::from_slice(body).map_err(shape)?;
        Ok(Manifest {
            kind,
            config: None,
            blobs: Vec::new(),
            children: index
                .manifests()
                .iter()
                .map(digest_of)
                .collect::<Result<_, _>>()?,
            subject: index.subject().as_ref().map(digest_of).transpose()?,
            artifact_type: index.artifact_type().as_ref().map(|t| t.to_string()),
            annotations: index.annotations().clone(),
        })
    } else {
        let image: ImageManifest = serde_json::from_slice(body).map_err(shape)?;
        let config = digest_of(image.config())?;
        let mut blobs = vec![config.clone()];
        for layer in image.layers() {
            if !is_foreign(layer) {
                blobs.push(digest_of(layer)?);
            }
        }
        Ok(Manifest {
            kind,
            config: Some(config),
            blobs,
            children: Vec::new(),
            subject: image.subject().as_ref().map(digest_of).transpose()?,
            artifact_type: Some(
                image
                    .artifact_type()
                    .as_ref()
                    .unwrap_or(image.config().media_type())
                    .to_string(),
            ),
            annotations: image.annotations().clone(),
        })
    }
}

fn digest_of(d: &Descriptor) -> Result<Digest, ManifestError> {
    let s = d.digest().to_string();
    s.parse().map_err(|_| ManifestError::BadReference(s))
}

/// Foreign (Windows base) and non-distributable layers live elsewhere and are
/// not required to be in the registry.
fn is_foreign(layer: &Descriptor) -> bool {
    let mt = layer.media_type().to_string();
    mt.contains(".foreign.") || mt.contains(".nondistributable.")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
    const L1: &str = "sha256:9834876dcfb05cb167a5c24953eba58c4ac89b1adf57f28f2f9d09af107ee8f0";

    fn image(media_type: Option<&str>, extra: &str) -> String {
        let mt = media_type
            .map(|m| format!(r#""mediaType":"{m}","#))
            .unwrap_or_default();
        format!(
            r#"{{"schemaVersion":2,{mt}"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{CFG}","size":2}},
            "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{L1}","size":3}},
                      {{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":"{L1}","size":3,"urls":["https://example.com"]}}]{extra}}}"#
        )
    }

    #[test]
    fn image_manifest_references() {
        let m = parse(Some(OCI_MANIFEST), image(Some(OCI_MANIFEST), "").as_bytes()).unwrap();
        assert_eq!(m.kind, MediaKind::OciManifest);
        assert_eq!(m.config, Some(CFG.parse().unwrap()));
        assert_eq!(m.blobs, vec![CFG.parse().unwrap(), L1.parse().unwrap()]);
        assert_eq!(
            m.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
        assert!(m.children.is_empty() && m.subject.is_none());
    }

    #[test]
    fn media_type_from_header_or_shape() {
        let body = image(None, "");
        assert_eq!(
            parse(Some(DOCKER_MANIFEST), body.as_bytes()).unwrap().kind,
            MediaKind::DockerManifest
        );
        assert_eq!(
            parse(None, body.as_bytes()).unwrap().kind,
            MediaKind::OciManifest
        );
        let index = r#"{"schemaVersion":2,"manifests":[]}"#;
        assert_eq!(
            parse(Some("application/json"), index.as_bytes())
                .unwrap()
                .kind,
            MediaKind::OciIndex
        );
    }

    #[test]
    fn subject_and_artifact_type() {
        let extra = format!(
            r#","artifactType":"application/x.sig","subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{CFG}","size":10}}"#
        );
        let m = parse(
            Some(OCI_MANIFEST),
            image(Some(OCI_MANIFEST), &extra).as_bytes(),
        )
        .unwrap();
        assert_eq!(m.subject, Some(CFG.parse().unwrap()));
        assert_eq!(m.artifact_type.as_deref(), Some("application/x.sig"));
    }

    #[test]
    fn index_children() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST_LIST}","manifests":[{{"mediaType":"{DOCKER_MANIFEST}","digest":"{L1}","size":7,"platform":{{"architecture":"amd64","os":"linux","features":["sse4"]}}}}]}}"#
        );
        let m = parse(Some(DOCKER_MANIFEST_LIST), body.as_bytes()).unwrap();
        assert_eq!(m.kind, MediaKind::DockerManifestList);
        assert_eq!(m.children, vec![L1.parse().unwrap()]);
    }

    #[test]
    fn rejects_bad_payloads() {
        assert!(matches!(
            parse(None, b"{not json"),
            Err(ManifestError::Json(_))
        ));
        assert_eq!(
            parse(None, br#"{"schemaVersion":1}"#),
            Err(ManifestError::SchemaVersion(1))
        );
        assert!(matches!(
            parse(None, br#"{"schemaVersion":2,"mediaType":"text/plain"}"#),
            Err(ManifestError::UnsupportedMediaType(_))
        ));
        assert!(matches!(
            parse(Some(OCI_INDEX), image(Some(OCI_MANIFEST), "").as_bytes()),
            Err(ManifestError::MediaTypeMismatch { .. })
        ));
        assert!(matches!(
            parse(Some(OCI_MANIFEST), br#"{"schemaVersion":2,"layers":[]}"#),
            Err(ManifestError::Shape { .. })
        ));
    }
}
