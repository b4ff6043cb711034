//! Every integration test in one binary (`cargo test --test it`): one module
//! per area, sharing the harness in `tests/common`. One binary links once,
//! where one binary per file linked eleven times. Tests of all modules run in
//! parallel; those that must run alone take `common::alone()`.
//!
//! Tests that run the real `berth` binary use `$BERTH_BIN` when set (to try
//! another build, e.g. the release one), else the one Cargo builds for the
//! tests (CI runs that one).

#[path = "../common/mod.rs"]
mod common;

mod auth_http;
mod crash_safety;
mod dedup;
mod disk_full;
mod gc;
mod gc_crash;
mod http_api;
mod log_reload;
mod management_api;
mod replicas;
mod slow_clients;
mod standalone_cleanup;
mod tls;
mod upload_limits;
mod web_ui;
