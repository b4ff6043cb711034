//! HTTPS in the real `berth serve` (issue 16): `tls.certFile`/`tls.keyFile`
//! served with ALPN h2 and http/1.1, and the files replaced while a pull loop
//! runs: no request fails and new connections get the new certificate within
//! seconds, a half-replaced pair included.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

use crate::common::server::{Launch, Server, client_for, push_blob};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/tls")
        .join(name)
}

fn leaf_der(pem_file: &Path) -> Vec<u8> {
    CertificateDer::pem_file_iter(pem_file)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

/// Replaces `dst` with `src`'s bytes in one rename, as the kubelet swaps a
/// Secret's files.
fn replace(dst: &Path, src: &Path) {
    let aside = dst.with_extension("new");
    std::fs::copy(src, &aside).unwrap();
    std::fs::rename(&aside, dst).unwrap();
}

/// A fresh TLS handshake offering `alpn`, trusting only `ca`: the leaf
/// certificate the server presented and the protocol agreed.
async fn handshake(port: u16, ca: &Path, alpn: &[&[u8]]) -> (Vec<u8>, Option<Vec<u8>>) {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .expect("TLS handshake");
    let (_, conn) = tls.get_ref();
    (
        conn.peer_certificates().unwrap()[0].to_vec(),
        conn.alpn_protocol().map(<[u8]>::to_vec),
    )
}

#[tokio::test]
async fn https_with_h2_follows_renewed_certificate_files() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::copy(fixture("a.crt"), &cert).unwrap();
    std::fs::copy(fixture("a.key"), &key).unwrap();
    let config = dir.path().join("berth.yaml");
    std::fs::write(
        &config,
        format!(
            "tls:\n  certFile: {}\n  keyFile: {}\nstorage:\n  minFreeBytes: 0\n",
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let ca = fixture("ca.crt");
    let (data, log) = (dir.path().join("data"), dir.path().join("berth.log"));
    let (server, _) = Server::start(Launch::new(&data, &log).config(&config).tls_ca(&ca)).await;
    assert!(server.base.starts_with("https://"));
    assert!(server.log_text().contains("listening on https://"));

    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/v2/", server.port))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");

    // ALPN: h2 when offered, else HTTP/1.1; the configured certificate.
    let (leaf, alpn) = handshake(server.port, &ca, &[b"h2", b"http/1.1"]).await;
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(leaf, leaf_der(&fixture("a.crt")));
    let (_, alpn) = handshake(server.port, &ca, &[b"http/1.1"]).await;
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));

    // A push and pull over HTTPS, verifying the certificate.
    let http = client_for(Some(&ca));
    let blob: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let digest = push_blob(&http, &server.base, "tls/app", &blob).await;
    let url = server.url(&format!("/v2/tls/app/blobs/{digest}"));
    let got = http.get(&url).send().await.unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.bytes().await.unwrap().as_ref(), &blob[..]);

    // A pull loop, a new connection per request, while the files change.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let pulls = {
        let (stop, ok, url, ca, len) = (
            stop.clone(),
            ok.clone(),
            url.clone(),
            ca.clone(),
            blob.len(),
        );
        tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let fresh = client_for(Some(&ca));
                match fresh.get(&url).send().await {
                    Ok(r) if r.status() == StatusCode::OK => match r.bytes().await {
                        Ok(b) if b.len() == len => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        other => failures.push(format!("body: {other:?}")),
                    },
                    other => failures.push(format!("{other:?}")),
                }
            }
            failures
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The key first: for a moment the pair does not match (kept: A served).
    replace(&key, &fixture("b.key"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        handshake(server.port, &ca, &[b"h2"]).await.0,
        leaf_der(&fixture("a.crt")),
        "a half-replaced pair must leave the previous certificate"
    );
    let t0 = Instant::now();
    replace(&cert, &fixture("b-chain.crt"));
    let b = leaf_der(&fixture("b.crt"));
    while handshake(server.port, &ca, &[b"h2"]).await.0 != b {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the new certificate not served after 10 s:\n{}",
            server.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("renewed certificate served after {:?}", t0.elapsed());
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let failures = pulls.await.unwrap();
    let ok = ok.load(Ordering::Relaxed);
    assert!(
        failures.is_empty(),
        "{} pulls failed: {failures:?}",
        failures.len()
    );
    assert!(ok >= 10, "only {ok} pulls in the loop");
    let log = server.log_text();
    assert!(log.contains("does not belong to the certificate"), "{log}");
    assert!(log.contains("serving the renewed certificate"), "{log}");
}
