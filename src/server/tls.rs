//! HTTPS for `berth serve` (`tls.certFile` / `tls.keyFile`): rustls with
//! ALPN (`h2`, `http/1.1`) and a certificate that follows its files.
//!
//! The files are read again every [`RELOAD_EVERY`]; when their bytes change
//! and the new pair loads (a chain whose leaf matches the key), new
//! handshakes get it, while connections already open keep theirs. A pair that
//! does not load (a key replaced before its certificate, a file half
//! written) leaves the served certificate in place and is reported once; the
//! next change is tried again. This is what a Kubernetes Secret renewed by
//! cert-manager needs: the kubelet swaps the mounted files in place.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use tokio_rustls::TlsAcceptor;

/// How often the certificate and key files are checked for a change.
pub const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// The served certificate and the files it comes from.
#[derive(Debug)]
pub struct Certificates {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' bytes last read (loaded or refused), so a pair is parsed
    /// and reported once.
    seen: Mutex<(Vec<u8>, Vec<u8>)>,
}

/// A certificate chain and key from PEM text: the chain's leaf first, the key
/// PKCS#8, PKCS#1 or SEC1, and the leaf's public key the key's.
pub fn load(
    cert_pem: &[u8],
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the certificate file is not PEM: {e}"))?;
    if chain.is_empty() {
        return Err("the certificate file holds no CERTIFICATE block".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("the key file holds no private key: {e}"))?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            "the private key does not belong to the certificate".to_string()
        }
        e => format!("the private key cannot be used: {e}"),
    })
}

/// The leaf certificate's SHA-256 fingerprint (hex), for logs.
pub fn fingerprint(key: &CertifiedKey) -> String {
    key.cert
        .first()
        .map(|c| hex::encode(Sha256::digest(c.as_ref())))
        .unwrap_or_default()
}

impl Certificates {
    /// Loads the pair; a file that cannot be read or a pair that does not
    /// load is an error naming the config key.
    pub fn open(cert_file: &Path, key_file: &Path) -> Result<Arc<Certificates>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (cert, key) = read_pair(cert_file, key_file)?;
        let loaded = load(&cert, &key, &provider).map_err(|e| {
            format!(
                "tls.certFile {} / tls.keyFile {}: {e}",
                cert_file.display(),
                key_file.display()
            )
        })?;
        Ok(Arc::new(Certificates {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            provider,
            current: RwLock::new(Arc::new(loaded)),
            seen: Mutex::new((cert, key)),
        }))
    }

    /// The certificate served to new connections.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().expect("certificate lock").clone()
    }

    /// Reads the files again: `Ok(true)` when a changed pair was loaded,
    /// `Ok(false)` when nothing changed (or the change was already refused),
    /// an error when the changed pair does not load (the current certificate
    /// stays).
    pub fn reload(&self) -> Result<bool, String> {
        let (cert, key) = read_pair(&self.cert_file, &self.key_file)?;
        {
            let mut seen = self.seen.lock().expect("seen lock");
            if seen.0 == cert && seen.1 == key {
                return Ok(false);
            }
            *seen = (cert.clone(), key.clone());
        }
        let loaded = load(&cert, &key, &self.provider)?;
        *self.current.write().expect("certificate lock") = Arc::new(loaded);
        Ok(true)
    }

    /// Checks the files every `every` for the life of the process.
    pub fn watch(self: Arc<Self>, every: Duration) {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let me = self.clone();
                match tokio::task::spawn_blocking(move || me.reload()).await {
                    Ok(Ok(true)) => tracing::info!(
                        cert = %self.cert_file.display(),
                        sha256 = %fingerprint(&self.current()),
                        "tls: serving the renewed certificate"
                    ),
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => tracing::warn!(
                        cert = %self.cert_file.display(),
                        key = %self.key_file.display(),
                        "tls: the changed certificate files are not used ({e}); \
                         still serving the previous certificate"
                    ),
                    Err(e) => tracing::error!("tls: the reload task failed: {e}"),
                }
            }
        });
    }

    /// A TLS acceptor serving these certificates with ALPN h2 and http/1.1.
    pub fn acceptor(self: &Arc<Self>) -> Result<TlsAcceptor, String> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("tls: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn read_pair(cert_file: &Path, key_file: &Path) -> Result<(Vec<u8>, Vec<u8>), String> {
    let read = |key: &str, path: &Path| {
        std::fs::read(path).map_err(|e| format!("{key} {}: {e}", path.display()))
    };
    Ok((
        read("tls.certFile", cert_file)?,
        read("tls.keyFile", key_file)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/tls")
                .join(name),
        )
        .unwrap()
    }

    /// Each bad pair is refused with the reason, the good ones load.
    #[test]
    fn pairs_load_or_say_why() {
        let provider = rustls::crypto::ring::default_provider();
        let (a, a_key) = (fixture("a.crt"), fixture("a.key"));
        let (b_key, chain) = (fixture("b.key"), fixture("b-chain.crt"));
        type Case<'a> = (&'a [u8], &'a [u8], Result<usize, &'a str>);
        let cases: [Case; 7] = [
            (&a, &a_key, Ok(1)),
            (&chain, &b_key, Ok(2)),
            (&a, &b_key, Err("does not belong to the certificate")),
            (b"", &a_key, Err("no CERTIFICATE block")),
            (&a_key, &a_key, Err("no CERTIFICATE block")),
            (&a, &a, Err("holds no private key")),
            (
                &a,
                b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                Err("cannot be used"),
            ),
        ];
        for (i, (cert, key, want)) in cases.into_iter().enumerate() {
            let got = load(cert, key, &provider).map(|k| k.cert.len());
            match (got, want) {
                (Ok(n), Ok(m)) => assert_eq!(n, m, "case {i}"),
                (Err(e), Err(w)) => assert!(e.contains(w), "case {i}: {e}"),
                (got, want) => panic!("case {i}: got {got:?}, want {want:?}"),
            }
        }
    }

    /// A replaced pair is served after a reload; a pair that does not load
    /// leaves the previous certificate and is reported once.
    #[test]
    fn reload_follows_the_files_and_keeps_a_good_pair() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert, fixture("a.crt")).unwrap();
        std::fs::write(&key, fixture("a.key")).unwrap();
        let certs = Certificates::open(&cert, &key).unwrap();
        let a = fingerprint(&certs.current());
        assert_eq!(certs.reload(), Ok(false));

        // The key replaced first: refused once, A still served.
        std::fs::write(&key, fixture("b.key")).unwrap();
        let err = certs.reload().unwrap_err();
        assert!(err.contains("does not belong"), "{err}");
        assert_eq!(certs.reload(), Ok(false));
        assert_eq!(fingerprint(&certs.current()), a);

        // Then the certificate: B served.
        std::fs::write(&cert, fixture("b-chain.crt")).unwrap();
        assert_eq!(certs.reload(), Ok(true));
        let b = fingerprint(&certs.current());
        assert_ne!(a, b);
        assert_eq!(certs.current().cert.len(), 2);

        // A file gone: an error naming the key, B still served.
        std::fs::remove_file(&key).unwrap();
        let err = certs.reload().unwrap_err();
        assert!(err.starts_with("tls.keyFile"), "{err}");
        assert_eq!(fingerprint(&certs.current()), b);
    }

    #[test]
    fn open_names_the_keys() {
        let dir = tempfile::tempdir().unwrap();
        let err =
            Certificates::open(&dir.path().join("no.crt"), &dir.path().join("no.key")).unwrap_err();
        assert!(err.starts_with("tls.certFile"), "{err}");
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert, fixture("a.crt")).unwrap();
        std::fs::write(&key, fixture("b.key")).unwrap();
        let err = Certificates::open(&cert, &key).unwrap_err();
        assert!(
            err.contains("tls.certFile") && err.contains("does not belong"),
            "{err}"
        );
    }
}
