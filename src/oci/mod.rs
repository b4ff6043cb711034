//! OCI vocabulary shared by every layer: digests, repository names and tags,
//! manifest parsing. Pure code: no I/O, no HTTP, no database.

pub mod digest;
pub mod manifest;
pub mod name;

pub use digest::{Algorithm, Digest, DigestError, Hasher};
pub use manifest::{Manifest, ManifestError, MediaKind};
pub use name::{NameError, validate_repository, validate_tag};

/// The `<reference>` of a manifest route: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reference::Tag(t) => f.write_str(t),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}
