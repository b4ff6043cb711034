//! Cleanup policies of a standalone registry (`berth::server::scheduler`): the
//! manifest directory's CleanupPolicy runs on `berth.dev/run-now` (once per
//! value) and on its cadence, deletes exactly GitLab's choice of tags, keeps
//! protected and immutable ones, honours dryRun, and remembers its runs
//! across a restart of the runner.

use std::path::Path;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::Value;

use berth::config::Config;
use berth::server::open_registry;
use berth::server::scheduler::Runner;

use crate::common::app::{App, As};

const DAY: i64 = 86_400_000;

/// The registry on `data`, no authentication, a zero review delay.
async fn open(data: &Path) -> App {
    App::setup()
        .data_dir(data)
        .config(|c| c.gc.review_delay = "0s".into())
        .open()
        .await
}

trait Cleanup {
    async fn push(&self, repo: &str, tag: &str);
    async fn tags(&self, repo: &str) -> Vec<String>;
}

impl Cleanup for App {
    /// Pushes a one-layer image under `tag`; the layer is unique to the tag.
    async fn push(&self, repo: &str, tag: &str) {
        let config = format!("{{\"config\":\"{tag}\"}}").into_bytes();
        let layer = format!("layer of {repo}:{tag}").repeat(100).into_bytes();
        self.push_image_as(As::Anonymous, repo, tag, &config, &[&layer])
            .await;
    }

    async fn tags(&self, repo: &str) -> Vec<String> {
        let r = self
            .call(
                Method::GET,
                &format!("/v2/{repo}/tags/list"),
                &[],
                Body::empty(),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        let mut tags: Vec<String> = v["tags"]
            .as_array()
            .map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect())
            .unwrap_or_default();
        tags.sort();
        tags
    }
}

fn disk_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            disk_bytes(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

fn write_manifests(dir: &Path, run_now: &str, dry_run: bool) {
    let yaml = format!(
        r#"apiVersion: berth.dev/v1alpha1
kind: Project
metadata: {{name: app, namespace: demo, labels: {{team: a}}}}
spec:
  path: demo/app
  protectedTags:
    - {{pattern: "^v2$", minimumAccessLevelForPush: Maintainer, minimumAccessLevelForDelete: Maintainer}}
  immutableTags:
    - {{pattern: "^v3$"}}
---
apiVersion: berth.dev/v1alpha1
kind: Project
metadata: {{name: other, namespace: demo}}
spec:
  path: demo/other
---
apiVersion: berth.dev/v1alpha1
kind: CleanupPolicy
metadata:
  name: weekly
  namespace: demo
  annotations: {{berth.dev/run-now: "{run_now}"}}
spec:
  selector: {{matchLabels: {{team: a}}}}
  cadence: 7d
  keepN: 1
  nameRegex: "v.*"
  nameRegexKeep: "v1"
  dryRun: {dry_run}
"#
    );
    std::fs::write(dir.join("policies.yaml"), yaml).unwrap();
}

#[tokio::test]
async fn standalone_policies_run_on_run_now_and_cadence() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let manifests = tmp.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let app = open(&data).await;
    // Oldest first: v1 (kept by nameRegexKeep), v2 (protected), v3
    // (immutable), v4, v5, v6 (the newest, kept by keepN 1), latest, and
    // main (not matched by nameRegex).
    for tag in ["v1", "v2", "v3", "v4", "v5", "v6", "latest", "main"] {
        app.push("demo/app", tag).await;
        app.push("demo/other", tag).await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let all: Vec<String> = {
        let mut v: Vec<String> = ["latest", "main", "v1", "v2", "v3", "v4", "v5", "v6"]
            .map(String::from)
            .to_vec();
        v.sort();
        v
    };

    // The runner works on the registry as `berth serve` opens it with a
    // manifest directory: authentication on, so the Projects' tag rules are
    // known. (The test pushes through an open view of the same database.)
    // Opened before any policy exists: it starts its own runner, which ticks
    // at once and then not for a day, and that first tick must be over
    // before the test's runner ticks, or its write of the state file (which
    // every tick rewrites) could land after the test's and undo it.
    let mut served = Config {
        data_dir: data.clone(),
        ..Config::default()
    };
    served.auth.manifest_dir = Some(manifests.clone());
    served.gc.review_delay = "0s".into();
    served.cleanup.check_interval = "24h".into();
    crate::common::database(&mut served).await;
    let (served, _) = open_registry(&served).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !data.join("cleanup-state.json").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the served registry's runner did not tick"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    // A dry run first: reports v4 and v5, deletes nothing.
    write_manifests(&manifests, "1", true);
    served.auth.as_ref().unwrap().reload().unwrap();
    let runner = Runner::new(served.clone(), &manifests, &data);
    let now = berth::metadata::now_ms();
    assert_eq!(runner.tick(now).await, vec!["demo/weekly".to_string()]);
    assert_eq!(app.tags("demo/app").await, all);
    let state = runner.state();
    let report = state["demo/weekly"].last_reports["demo/app"]
        .clone()
        .unwrap();
    assert!(report.dry_run);
    assert_eq!(report.repositories.len(), 1);
    assert_eq!(report.repositories[0].tags_deleted, vec!["v4", "v5"]);
    assert!(report.bytes_reclaimable > 0);
    // The same run-now value does not run again.
    assert!(runner.tick(now + 1).await.is_empty());

    // A new run-now value, for real this time.
    write_manifests(&manifests, "2", false);
    assert_eq!(runner.tick(now + 2).await, vec!["demo/weekly".to_string()]);
    let left: Vec<String> = all
        .iter()
        .filter(|t| *t != "v4" && *t != "v5")
        .cloned()
        .collect();
    assert_eq!(app.tags("demo/app").await, left);
    // The selector did not pick the other project.
    assert_eq!(app.tags("demo/other").await, all);
    let state = runner.state();
    let real = state["demo/weekly"].last_reports["demo/app"]
        .clone()
        .unwrap();
    assert!(!real.dry_run);
    assert_eq!(real.tags_deleted, 2);
    // The dry run measured what the real run freed.
    assert_eq!(real.bytes_reclaimable, report.bytes_reclaimable);
    // ...and garbage collection frees exactly that (review delay 0): the two
    // manifests and their layers; the configs are shared with demo/other.
    let before = disk_bytes(&data.join("blobs"));
    let swept = berth::registry::gc::sweep(&app.registry, std::time::Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(
        (swept.manifests_deleted, swept.blobs_deleted),
        (2, 2),
        "{swept:?}"
    );
    assert_eq!(swept.bytes_deleted as u64, real.bytes_reclaimable);
    let layers = 2 * "layer of demo/app:v4".len() as u64 * 100;
    assert_eq!(before - disk_bytes(&data.join("blobs")), layers);

    // A restarted runner remembers: nothing is due until a week after the
    // last run.
    drop(runner);
    let runner = Runner::new(served.clone(), &manifests, &data);
    assert!(runner.tick(now + 3).await.is_empty());
    assert!(runner.tick(now + 2 + 7 * DAY - 1).await.is_empty());
    app.push("demo/app", "v7").await;
    assert_eq!(
        runner.tick(now + 2 + 7 * DAY).await,
        vec!["demo/weekly".to_string()]
    );
    // v7 is now the newest (kept); v6 goes. v2 and v3 are never deleted.
    let tags = app.tags("demo/app").await;
    assert!(!tags.contains(&"v6".to_string()), "{tags:?}");
    for kept in ["v1", "v2", "v3", "v7", "latest", "main"] {
        assert!(tags.contains(&kept.to_string()), "{kept} in {tags:?}");
    }
}
