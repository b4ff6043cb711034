//! The shared test harness of the integration tests (`tests/it/`): the
//! registry in process ([`app`]), the real `berth` binary as a child process
//! ([`server`]), and the small helpers both need (media types, digests,
//! files on disk, a lock for tests that must run alone).
//!
//! It owns no test and asserts only what every caller would assert anyway (a
//! push that must succeed answered 201). Area-specific helpers stay in the
//! test module of their area.

pub mod app;
pub mod postgres;
pub mod server;

use std::path::{Path, PathBuf};

use berth::config::{Config, DatabaseKind};

use sha2::{Digest as _, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MIB: usize = 1 << 20;

/// A request body fed through a channel: it ends when the sender is
/// dropped, so a test decides when (and whether) the client finishes.
pub fn channel_body() -> (tokio::sync::mpsc::Sender<bytes::Bytes>, axum::body::Body) {
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(1);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    });
    (tx, axum::body::Body::from_stream(stream))
}

/// `sha256:<hex>` of `data`, computed independently of berth's own digest code.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// `Basic <base64(user:secret)>`.
pub fn basic(user: &str, secret: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"))
    )
}

/// An image manifest over a config and layers, with OCI media types; each
/// descriptor is the digest and size of the bytes given.
pub fn image_manifest(config: &[u8], layers: &[&[u8]]) -> serde_json::Value {
    let layers: Vec<serde_json::Value> = layers
        .iter()
        .map(|l| serde_json::json!({"mediaType": OCI_LAYER, "digest": sha256_digest(l), "size": l.len()}))
        .collect();
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256_digest(config), "size": config.len()},
        "layers": layers,
    })
}

/// Every file under `dir`, recursively (none if `dir` does not exist).
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files(&p))
            } else {
                out.push(p)
            }
        }
    }
    out
}

/// The blob files of a data directory (`blobs/sha256/<2 hex>/<hex>`) as
/// (digest, size), sorted.
pub fn blob_files(data: &Path) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = files(&data.join("blobs/sha256"))
        .into_iter()
        .map(|f| {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            (format!("sha256:{name}"), f.metadata().unwrap().len())
        })
        .collect();
    out.sort();
    out
}

/// Tests that must not overlap with one another take this lock for their
/// whole run: those that time a real `berth` process or load the machine
/// with one (crash, disk-full, slow-client tests). Everything else runs in
/// parallel with them and with each other. (Before the tests shared one
/// binary, each file was its own process and ran after the others.)
pub async fn alone() -> tokio::sync::MutexGuard<'static, ()> {
    static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    ALONE.lock().await
}

/// Whether the tests run berth on PostgreSQL: `$BERTH_TEST_BACKEND` is
/// `postgres` (CI runs the integration tests once with each backend; the
/// default is `sqlite`).
pub fn on_postgres() -> bool {
    match std::env::var("BERTH_TEST_BACKEND").as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Ok("") | Err(_) => false,
        Ok(other) => panic!("BERTH_TEST_BACKEND={other}: expected sqlite or postgres"),
    }
}

/// Points `config` at the test backend's database and returns its URL (for
/// the tests' own connection).
pub async fn database(config: &mut Config) -> String {
    match postgres_for(&config.data_dir).await {
        None => {
            let path = std::path::absolute(config.data_dir.join("berth.db")).unwrap();
            format!("sqlite://{}", path.display())
        }
        Some(url) => {
            config.database.kind = DatabaseKind::Postgres;
            config.database.url = Some(url.clone());
            url
        }
    }
}

/// On PostgreSQL (see [`on_postgres`]), the URL of the database of the data
/// directory `data`: each data directory gets one of its own, remembered in
/// `<data>/test-database-url`, so that opening the same data directory
/// again (a restart) finds the same database. `None` on SQLite.
pub async fn postgres_for(data: &Path) -> Option<String> {
    if !on_postgres() {
        return None;
    }
    let remembered = data.join("test-database-url");
    Some(match std::fs::read_to_string(&remembered) {
        Ok(url) => url,
        Err(_) => {
            let url = postgres::fresh_database().await;
            std::fs::create_dir_all(data).unwrap();
            std::fs::write(&remembered, &url).unwrap();
            url
        }
    })
}

/// The metadata database of data directory `data` on the test backend, for
/// `berth::fsck` and other offline readers.
pub async fn database_config(data: &Path) -> berth::metadata::DatabaseConfig {
    use berth::metadata::{DatabaseConfig, PostgresConfig};
    match postgres_for(data).await {
        None => DatabaseConfig::in_data_dir(data),
        Some(url) => DatabaseConfig::Postgres(PostgresConfig::new(&url)),
    }
}

/// `berth::fsck::check` of data directory `data` on the test backend.
pub async fn fsck(data: &Path) -> Result<berth::fsck::Report, String> {
    let database = database_config(data).await;
    berth::fsck::check_with(data, &database, false, None, &|_| {}).await
}

/// SQL (both backends) for integer expression `expr` as text, zero-padded
/// to `width` digits (what SQLite's `printf('%05d', ...)` does).
pub fn zero_padded(expr: &str, width: usize) -> String {
    let zeros = "0".repeat(width);
    format!(
        "substr('{zeros}' || ({expr}), length('{zeros}' || ({expr})) - {}, {width})",
        width - 1
    )
}
