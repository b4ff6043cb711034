//! A real S3-compatible server for the tests: `s3s-fs` (crates.io; installed
//! by `e2e/test-all.sh` into `~/.cache/berth/tools/bin`), shared by the
//! library's unit tests (`src/storage/conformance.rs` includes this file) and
//! the integration tests.
//!
//! One server per test process, started on first use on a free 127.0.0.1
//! port over a temporary directory, as an unprivileged user when the tests
//! run as root (`nobody`), and stopped with the test process (a watcher
//! process). Each caller gets a bucket of its own. s3s-fs keeps a bucket as
//! a directory of its root, so a bucket is made by making the directory.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "berth-test";
pub const SECRET_KEY: &str = "berth-test-secret";

/// A running test server: its endpoint and the directory it serves.
pub struct Server {
    pub endpoint: String,
    pub root: PathBuf,
}

/// The test server (starting it on first use).
pub fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(start)
}

/// A fresh, empty bucket on the test server; returns (endpoint, bucket).
pub fn fresh_bucket() -> (String, String) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let s = server();
    let bucket = format!(
        "berth-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let dir = s.root.join(&bucket);
    std::fs::create_dir(&dir).expect("create the test bucket's directory");
    chown(&dir);
    (s.endpoint.clone(), bucket)
}

/// The s3s-fs program: `$BERTH_S3S_FS`, else `~/.cache/berth/tools/bin`,
/// else `PATH`.
fn program() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_S3S_FS").filter(|v| !v.is_empty()) {
        return p.into();
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_default();
    let cached = cache.join("berth/tools/bin/s3s-fs");
    if cached.exists() {
        return cached;
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("s3s-fs"))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "s3s-fs is not installed: `cargo install s3s-fs --version 0.14.1 --features binary --locked --root ~/.cache/berth/tools` \
                 (e2e/test-all.sh does), or set BERTH_S3S_FS"
            )
        })
}

/// `nobody`'s ids when we are root: the server runs unprivileged.
fn run_as() -> Option<(u32, u32)> {
    if !rustix::process::getuid().is_root() {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() > 3 && f[0] == "nobody").then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

fn chown(path: &std::path::Path) {
    if let Some((uid, gid)) = run_as() {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown for the S3 server");
    }
}

// The server and its watcher run as long as the test process does.
#[allow(clippy::zombie_processes)]
fn start() -> Server {
    use std::os::unix::process::CommandExt as _;
    let program = program();
    let dir = std::env::temp_dir().join(format!("berth-test-s3-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let root = dir.join("root");
    std::fs::create_dir_all(&root).expect("create the S3 server's directory");
    chown(&dir);
    chown(&root);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let log = std::fs::File::create(dir.join("s3s-fs.log")).expect("create the S3 server's log");
    // An unprivileged user may not reach into root's home, where the tools
    // cache is: it runs a copy.
    let program = if run_as().is_some() {
        let copy = dir.join("s3s-fs");
        std::fs::copy(&program, &copy).expect("copy s3s-fs for the unprivileged user");
        copy
    } else {
        program
    };
    let mut cmd = Command::new(&program);
    if let Some((uid, gid)) = run_as() {
        cmd.uid(uid).gid(gid);
    }
    let child = cmd
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
        .arg(&root)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone the log handle"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "while kill -0 {me} 2>/dev/null; do sleep 0.5; done; kill {s3}; rm -rf '{dir}'",
            me = std::process::id(),
            s3 = child.id(),
            dir = dir.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the S3 server's watcher");
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "s3s-fs not listening after 30 s:\n{}",
            std::fs::read_to_string(dir.join("s3s-fs.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Server {
        endpoint: format!("http://127.0.0.1:{port}"),
        root,
    }
}
