//! The real `berth serve` as a child process: which binary, on which port,
//! logging where, ready when, and how it ends (SIGKILL, SIGTERM, or killed
//! when dropped).

use std::fs::File;
use std::net::TcpListener;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};

/// The `berth` binary the tests run: `$BERTH_BIN` when set (to try another
/// build, e.g. the release one), else the one Cargo built with the tests
/// (what CI runs).
pub fn berth_bin() -> PathBuf {
    std::env::var_os("BERTH_BIN")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_berth")))
}

/// A port that was free a moment ago (another process may take it before
/// berth binds it: [`Server::start`] then tries another one).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// How to start `berth serve --no-auth`.
pub struct Launch<'a> {
    pub data_dir: &'a Path,
    /// `--config FILE`.
    pub config: Option<&'a Path>,
    /// Where stdout and stderr go (recreated for each attempt).
    pub log: &'a Path,
    /// A GET of this path answering 200 means ready.
    pub ready_path: &'a str,
    /// `--database-url` (else the test backend's database for `data_dir`).
    pub database_url: Option<&'a str>,
    /// The server speaks HTTPS (its config has `tls`) with a certificate
    /// this CA (PEM) signed: probed over https, trusting only it.
    pub tls_ca: Option<&'a Path>,
}

impl<'a> Launch<'a> {
    pub fn new(data_dir: &'a Path, log: &'a Path) -> Launch<'a> {
        Launch {
            data_dir,
            config: None,
            log,
            ready_path: "/v2/",
            database_url: None,
            tls_ca: None,
        }
    }

    pub fn tls_ca(mut self, ca: &'a Path) -> Self {
        self.tls_ca = Some(ca);
        self
    }

    pub fn database_url(mut self, url: &'a str) -> Self {
        self.database_url = Some(url);
        self
    }

    pub fn config(mut self, config: &'a Path) -> Self {
        self.config = Some(config);
        self
    }

    pub fn ready_path(mut self, path: &'a str) -> Self {
        self.ready_path = path;
        self
    }
}

/// A running `berth serve`; killed (SIGKILL) and reaped when dropped.
pub struct Server {
    pub child: Child,
    pub port: u16,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    pub log: PathBuf,
}

impl Server {
    /// Starts berth and waits until it is ready (at most 30 s); returns the
    /// server and how long that took from its spawn. A port lost to another
    /// process between [`free_port`] and berth's bind is retried on another
    /// port, three times at most; any other early exit fails the test with
    /// the end of the log.
    pub async fn start(launch: Launch<'_>) -> (Server, Duration) {
        let probe = client_for(launch.tls_ca);
        let scheme = if launch.tls_ca.is_some() {
            "https"
        } else {
            "http"
        };
        let database_url = match launch.database_url {
            Some(url) => Some(url.to_string()),
            None => super::postgres_for(launch.data_dir).await,
        };
        for attempt in 0..3 {
            let port = free_port();
            let out = File::create(launch.log).expect("create server log");
            let t0 = Instant::now();
            let mut cmd = Command::new(berth_bin());
            cmd.arg("serve").arg("--no-auth");
            if let Some(config) = launch.config {
                cmd.arg("--config").arg(config);
            }
            // As the operator's pods get it: from the environment.
            match &database_url {
                Some(url) => cmd.env("BERTH_DATABASE_URL", url),
                None => cmd.env_remove("BERTH_DATABASE_URL"),
            };
            let child = cmd
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--data-dir")
                .arg(launch.data_dir)
                .stdin(Stdio::null())
                .stdout(out.try_clone().expect("clone log handle"))
                .stderr(out)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", berth_bin().display()));
            let mut server = Server {
                child,
                port,
                base: format!("{scheme}://127.0.0.1:{port}"),
                log: launch.log.to_path_buf(),
            };
            loop {
                if let Some(status) = server.child.try_wait().expect("poll berth") {
                    let tail = server.log_tail();
                    if tail.contains("cannot listen") && attempt < 2 {
                        break; // lost the port race; try another port
                    }
                    panic!("berth exited with {status} before it was ready:\n{tail}");
                }
                let ready = probe
                    .get(server.url(launch.ready_path))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                    .map(|r| r.status() == StatusCode::OK)
                    .unwrap_or(false);
                if ready {
                    return (server, t0.elapsed());
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(30),
                    "berth not ready after 30 s:\n{}",
                    server.log_tail()
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        unreachable!("berth could not listen on three different ports");
    }

    /// `http(s)://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGKILL, no graceful shutdown; checks the process died of signal 9.
    pub fn sigkill(&mut self) {
        self.child.kill().expect("SIGKILL berth");
        let status = self.child.wait().expect("reap berth");
        assert_eq!(
            status.signal(),
            Some(9),
            "berth should have died of SIGKILL, got {status}"
        );
    }

    /// SIGTERM (graceful), then wait for the exit (at most 30 s).
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let t0 = Instant::now();
        while self.child.try_wait().expect("poll berth").is_none() {
            assert!(t0.elapsed() < Duration::from_secs(30), "berth did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The whole log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last 40 lines of the log.
    pub fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Peak resident memory of the server process (VmHWM), in MiB.
    pub fn peak_rss_mib(&self) -> u64 {
        let kib: u64 = self
            .proc_status("VmHWM:")
            .and_then(|v| v.trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/<pid>/status");
        kib / 1024
    }

    /// Threads of the server process.
    pub fn threads(&self) -> u64 {
        self.proc_status("Threads:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    fn proc_status(&self, key: &str) -> Option<String> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_string())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client; with `ca`, one that trusts that CA (PEM) and no other.
pub fn client_for(ca: Option<&Path>) -> Client {
    let Some(ca) = ca else {
        return Client::new();
    };
    let pem = std::fs::read(ca).unwrap_or_else(|e| panic!("{}: {e}", ca.display()));
    Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA PEM"))
        .build()
        .expect("HTTPS client")
}

/// A monolithic blob upload (`POST ?digest=`) to a running berth at `base`
/// that must answer 201; the digest.
pub async fn push_blob(http: &Client, base: &str, repo: &str, data: &[u8]) -> String {
    let digest = super::sha256_digest(data);
    let r = http
        .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={digest}"))
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    digest
}
