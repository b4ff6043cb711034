//! A real PostgreSQL server for the tests, shared by the library's unit tests
//! (`src/metadata/testing.rs` includes this file) and the integration tests.
//!
//! `$BERTH_TEST_POSTGRES_URL` (a URL whose user may `CREATE DATABASE`) when
//! set; otherwise one server per test process, started on first use: `initdb`
//! in a temporary directory, run as an unprivileged user when the tests run
//! as root (`postgres`, else `nobody`), listening on a free 127.0.0.1 port,
//! and stopped with the test process (a watcher process). Each caller
//! gets a database of its own.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The URL of a fresh, empty database on the test server.
pub async fn fresh_database() -> String {
    use sqlx::Connection as _;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let admin = server_url();
    let name = format!(
        "berth_test_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let mut conn = sqlx::postgres::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("connect to the test PostgreSQL at {admin}: {e}"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create a test database");
    let _ = conn.close().await;
    with_database(&admin, &name)
}

/// `url` naming database `name` instead.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let slash = base.rfind('/').expect("a database URL has a path");
    let mut out = format!("{}/{name}", &base[..slash]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// The admin URL of the test server (starting it on first use).
pub fn server_url() -> String {
    if let Some(url) = std::env::var_os("BERTH_TEST_POSTGRES_URL").filter(|v| !v.is_empty()) {
        return url.into_string().expect("BERTH_TEST_POSTGRES_URL is UTF-8");
    }
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(start_server).clone()
}

/// Where Debian keeps PostgreSQL's programs (the newest version).
fn bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b).unwrap_or_else(|| {
        panic!("PostgreSQL is not installed (apt-get install postgresql), and BERTH_TEST_POSTGRES_URL is not set")
    })
}

/// The user the server runs as: ourselves, or an unprivileged one when we
/// are root (PostgreSQL refuses to run as root).
fn run_as() -> Option<(u32, u32)> {
    if !rustix::process::getuid().is_root() {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    for user in ["postgres", "nobody"] {
        for line in passwd.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() > 3
                && f[0] == user
                && let (Ok(uid), Ok(gid)) = (f[2].parse(), f[3].parse())
            {
                return Some((uid, gid));
            }
        }
    }
    panic!("running as root, and neither user postgres nor nobody exists to run PostgreSQL");
}

fn command(program: &Path, user: Option<(u32, u32)>) -> Command {
    use std::os::unix::process::CommandExt as _;
    let mut cmd = Command::new(program);
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

fn chown(path: &Path, user: Option<(u32, u32)>) {
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .expect("chown the PostgreSQL directory");
    }
}

/// Removes the directories of test servers whose process is gone.
fn remove_stale(tmp: &Path) {
    for e in std::fs::read_dir(tmp).into_iter().flatten().flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("berth-test-pg-")) else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

// The server and its watcher run as long as the test process does: never
// waited for, reaped by init after it.
#[allow(clippy::zombie_processes)]
fn start_server() -> String {
    let bin = bin_dir();
    let user = run_as();
    let tmp = std::env::temp_dir();
    remove_stale(&tmp);
    let dir = tmp.join(format!("berth-test-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the PostgreSQL directory");
    chown(&dir, user);
    let data = dir.join("data");
    let out = command(&bin.join("initdb"), user)
        .args([
            "--auth=trust",
            "--username=postgres",
            "--encoding=UTF8",
            "--locale=C",
            "-D",
        ])
        .arg(&data)
        .stdin(Stdio::null())
        .output()
        .expect("run initdb");
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let log = std::fs::File::create(dir.join("postgres.log")).expect("create the PostgreSQL log");
    chown(&dir.join("postgres.log"), user);
    let mut cmd = command(&bin.join("postgres"), user);
    cmd.arg("-D")
        .arg(&data)
        .arg("-k")
        .arg(&dir)
        .args(["-p", &port.to_string()])
        .args(["-c", "listen_addresses=127.0.0.1"])
        // Tests kill berth, not PostgreSQL: durability at the OS level is
        // not what they test, speed is welcome.
        .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
        .args(["-c", "full_page_writes=off", "-c", "max_connections=400"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone the log handle"))
        .stderr(log);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.join("postgres").display()));
    // Stopped with the test process: a watcher stops it (fast shutdown) and
    // removes its directory once the test process is gone.
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "while kill -0 {me} 2>/dev/null; do sleep 0.5; done; kill -INT {pg}; \
             while kill -0 {pg} 2>/dev/null; do sleep 0.2; done; rm -rf '{dir}'",
            me = std::process::id(),
            pg = child.id(),
            dir = dir.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the PostgreSQL watcher");
    let t0 = Instant::now();
    loop {
        let ready = Command::new(bin.join("pg_isready"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "postgres",
                "-q",
            ])
            .status()
            .is_ok_and(|s| s.success());
        if ready {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "PostgreSQL not ready after 60 s:\n{}",
            std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    format!("postgres://postgres@127.0.0.1:{port}/postgres")
}
