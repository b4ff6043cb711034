//! The registry's error type: every failure a handler can meet becomes one of
//! the OCI distribution error codes with its HTTP status, in one place.

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::metadata::MetadataError;
use crate::oci::{DigestError, ManifestError, NameError};
use crate::storage::StorageError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    RangeInvalid,
    TooManyRequests,
    /// The registry cannot serve right now (its database is unreachable):
    /// distribution's `UNAVAILABLE`, 503 with Retry-After.
    Unavailable,
    Unknown,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BlobUnknown => "BLOB_UNKNOWN",
            ErrorCode::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            ErrorCode::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            ErrorCode::DigestInvalid => "DIGEST_INVALID",
            ErrorCode::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            ErrorCode::ManifestInvalid => "MANIFEST_INVALID",
            ErrorCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            ErrorCode::NameInvalid => "NAME_INVALID",
            ErrorCode::NameUnknown => "NAME_UNKNOWN",
            ErrorCode::SizeInvalid => "SIZE_INVALID",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Denied => "DENIED",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::RangeInvalid => "RANGE_INVALID",
            ErrorCode::TooManyRequests => "TOOMANYREQUESTS",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Unknown => "UNKNOWN",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            ErrorCode::BlobUnknown
            | ErrorCode::BlobUploadUnknown
            | ErrorCode::ManifestUnknown
            | ErrorCode::NameUnknown => StatusCode::NOT_FOUND,
            ErrorCode::BlobUploadInvalid
            | ErrorCode::DigestInvalid
            | ErrorCode::ManifestBlobUnknown
            | ErrorCode::ManifestInvalid
            | ErrorCode::NameInvalid
            | ErrorCode::SizeInvalid => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Denied => StatusCode::FORBIDDEN,
            ErrorCode::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::RangeInvalid => StatusCode::RANGE_NOT_SATISFIABLE,
            ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

#[derive(Debug)]
pub struct RegistryError {
    pub code: ErrorCode,
    pub status: StatusCode,
    pub message: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

impl RegistryError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> RegistryError {
        RegistryError {
            code,
            status: code.status(),
            message: message.into(),
            headers: Vec::new(),
        }
    }

    pub fn with_status(mut self, status: StatusCode) -> RegistryError {
        self.status = status;
        self
    }

    pub fn with_header(mut self, name: HeaderName, value: impl ToString) -> RegistryError {
        if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
            self.headers.push((name, v));
        }
        self
    }

    pub fn not_found(message: impl Into<String>) -> RegistryError {
        RegistryError::new(ErrorCode::Unsupported, message).with_status(StatusCode::NOT_FOUND)
    }

    pub fn internal(err: impl std::fmt::Display) -> RegistryError {
        RegistryError::new(ErrorCode::Unknown, err.to_string())
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code.as_str(), "{}", self.message);
        }
        let body = json!({
            "errors": [{ "code": self.code.as_str(), "message": self.message, "detail": null }]
        });
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
        response.headers_mut().extend(self.headers);
        response
    }
}

impl From<NameError> for RegistryError {
    fn from(e: NameError) -> Self {
        let code = match e {
            NameError::BadTag(_) => ErrorCode::ManifestInvalid,
            _ => ErrorCode::NameInvalid,
        };
        RegistryError::new(code, e.to_string())
    }
}

impl From<DigestError> for RegistryError {
    fn from(e: DigestError) -> Self {
        RegistryError::new(ErrorCode::DigestInvalid, e.to_string())
    }
}

impl From<ManifestError> for RegistryError {
    fn from(e: ManifestError) -> Self {
        RegistryError::new(ErrorCode::ManifestInvalid, e.to_string())
    }
}

impl From<MetadataError> for RegistryError {
    fn from(e: MetadataError) -> Self {
        match e {
            MetadataError::BlobUnknown(_) | MetadataError::ManifestUnknown(_) => {
                RegistryError::new(ErrorCode::ManifestBlobUnknown, e.to_string())
            }
            MetadataError::TagRefused(why) => RegistryError::new(ErrorCode::Denied, why),
            // The state of the repository, not the caller's rights, stands in
            // the way, and deleting the holder first resolves it: 409.
            MetadataError::Referenced(why) => {
                RegistryError::new(ErrorCode::Denied, why).with_status(StatusCode::CONFLICT)
            }
            MetadataError::UploadUnknown(_) => {
                RegistryError::new(ErrorCode::BlobUploadUnknown, e.to_string())
            }
            MetadataError::UploadBusy(_) => {
                RegistryError::new(ErrorCode::Unavailable, e.to_string())
                    .with_header(header::RETRY_AFTER, 1)
            }
            // Nothing was written (the transaction did not commit): worth a
            // retry once the database is back.
            ref e if e.is_unavailable() => RegistryError::new(
                ErrorCode::Unavailable,
                format!("the metadata database is unavailable, try again later: {e}"),
            )
            .with_header(header::RETRY_AFTER, 5),
            other => RegistryError::internal(other),
        }
    }
}

impl From<StorageError> for RegistryError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::UploadNotFound(_) => {
                RegistryError::new(ErrorCode::BlobUploadUnknown, e.to_string())
            }
            StorageError::BlobNotFound(_) => {
                RegistryError::new(ErrorCode::BlobUnknown, e.to_string())
            }
            StorageError::Unavailable(_) => {
                RegistryError::new(ErrorCode::Unavailable, format!("{e}; try again later"))
                    .with_header(header::RETRY_AFTER, 5)
            }
            StorageError::Io(_) => RegistryError::internal(e),
        }
    }
}
