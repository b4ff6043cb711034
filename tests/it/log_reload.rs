//! The log filter changes while berth runs (issue 13): SIGHUP makes the real
//! `berth serve` apply its config file's `log.level` again; a level that does
//! not parse leaves the current filter and says so.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::server::{Launch, Server};

fn write_config(path: &Path, level: &str) {
    std::fs::write(path, format!("log:\n  level: \"{level}\"\n")).unwrap();
}

fn hangup(server: &Server) {
    let status = Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits (at most 10 s) until the log has `n` lines containing `needle`.
async fn wait_for(server: &Server, needle: &str, n: usize) {
    let t0 = Instant::now();
    while server.log_text().matches(needle).count() < n {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no {n}th {needle:?} in the log:\n{}",
            server.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Lines of the per-request debug log for `GET /v2/`.
fn request_lines(server: &Server) -> usize {
    server
        .log_text()
        .lines()
        .filter(|l| l.contains("DEBUG") && l.contains("request") && l.contains("path=/v2/"))
        .count()
}

#[tokio::test]
async fn sighup_applies_the_config_files_log_level() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("berth.yaml");
    let log = dir.path().join("berth.log");
    write_config(&config, "info");
    let (server, _) =
        Server::start(Launch::new(&dir.path().join("data"), &log).config(&config)).await;
    let http = reqwest::Client::new();
    let get = || async { http.get(server.url("/v2/")).send().await.unwrap().status() };

    assert_eq!(get().await, 200);
    assert_eq!(request_lines(&server), 0, "debug lines at level info");

    write_config(&config, "berth=debug,info");
    hangup(&server);
    wait_for(&server, "log filter changed", 1).await;
    assert_eq!(get().await, 200);
    wait_for(&server, "path=/v2/", 1).await;
    assert_eq!(request_lines(&server), 1, "{}", server.log_tail());

    // A filter that does not parse: refused, debug logging stays on.
    write_config(&config, "=[");
    hangup(&server);
    wait_for(&server, "log filter unchanged", 1).await;
    assert_eq!(get().await, 200);
    wait_for(&server, "path=/v2/", 2).await;
    assert_eq!(request_lines(&server), 2, "{}", server.log_tail());

    // Back to info: the request log stops.
    write_config(&config, "info");
    hangup(&server);
    wait_for(&server, "log filter changed", 2).await;
    assert_eq!(get().await, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(request_lines(&server), 2, "{}", server.log_tail());
}
