//! Slow, stalled and half-open clients against the real `berth serve` binary
//! (issue 12, findings 2 and 3): hundreds of blob GETs that never read and
//! PATCHes that stall mid-body take no thread and no unbounded memory, other
//! clients' pushes and pulls go on within seconds, and the server closes the
//! stalled connections after its idle timeouts; half-sent headers are closed
//! by the header-read timeout; beyond the connection cap clients wait until a
//! slot frees.

use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::common::server::{Launch, Server};
use crate::common::{MIB, sha256_digest as digest_of};

/// `berth serve --no-auth` in a temporary directory that lives as long as it.
struct Slow {
    server: Server,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for Slow {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

/// Starts berth with `server_yaml` as the `server:` section of its config
/// (and no free-space reserve), and waits until it answers.
async fn start(server_yaml: &str) -> Slow {
    start_with(server_yaml, "").await
}

/// [`start`], with more of the `storage:` section.
async fn start_with(server_yaml: &str, storage_yaml: &str) -> Slow {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("berth.yaml");
    std::fs::write(
        &config,
        format!("server:\n{server_yaml}storage:\n  minFreeBytes: 0\n{storage_yaml}"),
    )
    .unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("berth.log");
    let (server, _) = Server::start(Launch::new(&data, &log).config(&config)).await;
    Slow { server, _dir: dir }
}

/// A raw connection with a small receive buffer, so a client that does not
/// read stalls the server's writes soon.
async fn raw_connect(port: u16) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 << 10).unwrap();
    socket
        .connect(format!("127.0.0.1:{port}").parse().unwrap())
        .await
        .unwrap()
}

/// Reads until the server closes the connection or `deadline` passes.
/// Returns the bytes read and whether the server closed it.
async fn read_until_closed(stream: &mut TcpStream, deadline: Instant) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return (got, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (got, true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_clients_do_not_stall_others() {
    let _alone = crate::common::alone().await;
    const STALLED_GETS: usize = 300;
    const STALLED_PATCHES: usize = 100;
    const IDLE: u64 = 6;
    let server = start(&format!(
        "  sendIdleTimeout: {IDLE}s\n  bodyIdleTimeout: {IDLE}s\n  idleTimeout: 60s\n  \
         maxConnections: 2000\n  maxConcurrentTransfers: 2000\n"
    ))
    .await;
    let http = Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let big: Vec<u8> = (0..64 * MIB).map(|i| (i % 253) as u8).collect();
    let base = server.url("");
    let big_digest = Api(&base).push(&http, "slow/big", &big).await;
    drop(big);
    let threads_before = server.threads();
    let peak_before = server.peak_rss_mib();

    // Hundreds of GETs of the 64 MiB blob that never read.
    let t0 = Instant::now();
    let mut gets = Vec::new();
    for _ in 0..STALLED_GETS {
        let mut s = raw_connect(server.port).await;
        s.write_all(
            format!("GET /v2/slow/big/blobs/{big_digest} HTTP/1.1\r\nHost: berth\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        gets.push(s);
    }
    // And PATCHes that send one chunk of a declared 16 MiB and stall.
    let mut patches = Vec::new();
    for _ in 0..STALLED_PATCHES {
        let r = http
            .post(server.url("/v2/slow/up/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let loc = r.headers()["location"].to_str().unwrap().to_string();
        let mut s = raw_connect(server.port).await;
        s.write_all(
            format!(
                "PATCH {loc} HTTP/1.1\r\nHost: berth\r\nContent-Type: application/octet-stream\r\n\
                 Content-Length: {}\r\n\r\n",
                16 * MIB
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        s.write_all(&vec![9u8; 256 << 10]).await.unwrap();
        patches.push(s);
    }
    let stalled_at = Instant::now();
    println!(
        "opened {STALLED_GETS} stalled GETs and {STALLED_PATCHES} stalled PATCHes in {:?}",
        t0.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let threads_stalled = server.threads();

    // Meanwhile other clients push and pull small and medium blobs.
    let mut workers = Vec::new();
    for w in 0..4u8 {
        let http = http.clone();
        let url = server.url("");
        workers.push(tokio::spawn(async move {
            let server_url = url;
            let mut times = Vec::new();
            for round in 0..3u8 {
                let small = vec![w ^ round; 1024];
                let medium: Vec<u8> = (0..4 * MIB).map(|i| (i as u8) ^ w ^ round).collect();
                let repo = format!("busy/w{w}");
                let api = Api(&server_url);
                let t = Instant::now();
                let d = api.push(&http, &repo, &small).await;
                times.push(("push 1 KiB", t.elapsed()));
                let t = Instant::now();
                let dm = api.push_chunked(&http, &repo, &medium).await;
                times.push(("push 4 MiB (chunked)", t.elapsed()));
                let t = Instant::now();
                assert_eq!(api.pull(&http, &repo, &d).await, small);
                times.push(("pull 1 KiB", t.elapsed()));
                let t = Instant::now();
                assert_eq!(api.pull(&http, &repo, &dm).await, medium);
                times.push(("pull 4 MiB", t.elapsed()));
            }
            times
        }));
    }
    let mut slowest = ("", Duration::ZERO);
    let mut count = 0;
    for w in workers {
        for (what, took) in w.await.unwrap() {
            count += 1;
            if took > slowest.1 {
                slowest = (what, took);
            }
        }
    }
    let others_done = stalled_at.elapsed();
    let peak = server.peak_rss_mib();
    println!(
        "{count} pushes and pulls by other clients while stalled: slowest {} took {:?} \
         (all done {others_done:?} after the stalls began)",
        slowest.0, slowest.1
    );
    println!(
        "server threads: {threads_before} before, {threads_stalled} with the stalls; \
         peak RSS (VmHWM) {peak_before} MiB before the stalls, {peak} MiB after"
    );
    assert!(
        slowest.1 < Duration::from_secs(5),
        "{} took {:?} while slow clients held connections",
        slowest.0,
        slowest.1
    );
    assert!(peak < 500, "peak RSS {peak} MiB");

    // The server drops the stalled connections after its idle timeouts:
    // once every one of them has been stalled for longer, reading shows
    // whether the server closed it (a cut response, then end of stream).
    tokio::time::sleep_until((stalled_at + Duration::from_secs(IDLE + 3)).into()).await;
    let deadline = stalled_at + Duration::from_secs(IDLE + 20);
    let mut cut_gets = 0;
    let mut most = 0;
    for mut s in gets {
        let (got, closed) = read_until_closed(&mut s, deadline).await;
        most = most.max(got.len());
        if closed && got.len() < 64 * MIB {
            cut_gets += 1;
        }
    }
    let mut cut_patches = 0;
    for mut s in patches {
        let (got, closed) = read_until_closed(&mut s, deadline).await;
        if closed && String::from_utf8_lossy(&got).starts_with("HTTP/1.1 400") {
            cut_patches += 1;
        }
    }
    println!(
        "closed by the server: {cut_gets}/{STALLED_GETS} GETs (at most {most} bytes had been \
         sent), {cut_patches}/{STALLED_PATCHES} PATCHes (400), {:?} after the stalls began",
        stalled_at.elapsed()
    );
    assert_eq!(cut_gets, STALLED_GETS, "non-reading GETs left open");
    assert_eq!(cut_patches, STALLED_PATCHES, "stalled PATCHes left open");
    assert!(server.log_text().contains("listening"));
}

/// Registry calls against a server's base URL.
struct Api<'a>(&'a str);

impl Api<'_> {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.0)
    }
    async fn push(&self, http: &Client, repo: &str, data: &[u8]) -> String {
        crate::common::server::push_blob(http, self.0, repo, data).await
    }
    async fn push_chunked(&self, http: &Client, repo: &str, data: &[u8]) -> String {
        let digest = digest_of(data);
        let r = http
            .post(self.url(&format!("/v2/{repo}/blobs/uploads/")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let loc = r.headers()["location"].to_str().unwrap().to_string();
        let r = http
            .patch(self.url(&loc))
            .body(data.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let r = http
            .put(self.url(&format!("{loc}?digest={digest}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        digest
    }
    async fn pull(&self, http: &Client, repo: &str, digest: &str) -> Vec<u8> {
        let r = http
            .get(self.url(&format!("/v2/{repo}/blobs/{digest}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.bytes().await.unwrap().to_vec()
    }
}

#[tokio::test]
async fn half_sent_headers_are_closed_by_the_header_timeout() {
    let _alone = crate::common::alone().await;
    let server = start("  headerReadTimeout: 2s\n  idleTimeout: 60s\n").await;
    let mut conns = Vec::new();
    for _ in 0..50 {
        let mut s = raw_connect(server.port).await;
        s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: berth\r\nX-Slow: ")
            .await
            .unwrap();
        conns.push(s);
    }
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(30);
    let mut times = Vec::new();
    for mut s in conns {
        let (_, closed) = read_until_closed(&mut s, deadline).await;
        assert!(closed, "a half-sent request was still open after 30 s");
        times.push(t0.elapsed());
    }
    let last = times.iter().max().copied().unwrap_or_default();
    println!(
        "50 half-sent requests closed by the 2 s header-read timeout; the last after {last:?}"
    );
    assert!(last < Duration::from_secs(10), "{last:?}");
    assert!(
        times[0] > Duration::from_millis(1500),
        "closed before the timeout: {:?}",
        times[0]
    );
    // The server still serves.
    let r = Client::new().get(server.url("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn beyond_the_connection_cap_clients_wait_for_a_free_slot() {
    let _alone = crate::common::alone().await;
    let server = start("  maxConnections: 5\n  idleTimeout: 2s\n  headerReadTimeout: 2s\n").await;
    // Five connections that say nothing take every slot.
    let mut idle = Vec::new();
    for _ in 0..5 {
        idle.push(raw_connect(server.port).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = Instant::now();
    let mut extra = raw_connect(server.port).await;
    extra
        .write_all(b"GET /v2/ HTTP/1.1\r\nHost: berth\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    let early = tokio::time::timeout(Duration::from_millis(800), extra.read(&mut first)).await;
    assert!(early.is_err(), "the sixth client was served beyond the cap");
    let (got, _) = read_until_closed(&mut extra, Instant::now() + Duration::from_secs(15)).await;
    let waited = t0.elapsed();
    let text = String::from_utf8_lossy(&got);
    println!(
        "the sixth client waited {waited:?} for a slot, then: {:?}",
        text.lines().next()
    );
    assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
    // The idle ones were closed by the server.
    for mut s in idle {
        let (_, closed) = read_until_closed(&mut s, Instant::now() + Duration::from_secs(5)).await;
        assert!(closed);
    }
}

/// A refusal sent while the client is still writing its body (a blob over
/// `storage.maxBlobSize`, an unknown upload session) reaches the client:
/// the server reads and discards the rest of the body instead of closing a
/// connection with unread bytes, which the kernel turns into a reset that
/// the client sees as "broken pipe" on its write.
#[tokio::test]
async fn refusals_reach_a_client_still_sending_its_body() {
    let server = start_with("  idleTimeout: 60s\n", "  maxBlobSize: 1048576\n").await;
    let body = vec![5u8; 32 * MIB];
    let digest = digest_of(&body);
    let requests = [
        (
            format!("POST /v2/linger/a/blobs/uploads/?digest={digest}"),
            "HTTP/1.1 413",
        ),
        (
            "PATCH /v2/linger/a/blobs/uploads/0b8ee1ce-5ec7-4c7c-a8a4-6b8a4e8e2a11".to_string(),
            "HTTP/1.1 404",
        ),
    ];
    for (request, expected) in requests {
        let mut s = raw_connect(server.port).await;
        s.write_all(
            format!(
                "{request} HTTP/1.1\r\nHost: berth\r\nContent-Type: application/octet-stream\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let sent = s.write_all(&body).await;
        let (got, _) = read_until_closed(&mut s, Instant::now() + Duration::from_secs(20)).await;
        let text = String::from_utf8_lossy(&got);
        println!("{request}: write {sent:?}, then {:?}", text.lines().next());
        sent.unwrap_or_else(|e| panic!("{request}: writing the body failed: {e}"));
        assert!(text.starts_with(expected), "{request}: {text:?}");
    }
}
