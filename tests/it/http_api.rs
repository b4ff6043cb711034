//! The registry router, in process: the OCI API's behaviour on good and bad
//! input, and that bad input leaves nothing behind.

use std::path::PathBuf;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use berth::oci::Digest;

use crate::common::app::{App, Reply};
use crate::common::{OCI_INDEX, OCI_MANIFEST, files, image_manifest};

async fn app() -> App {
    App::open().await
}

/// The OCI pushes of this area, without credentials.
trait Push {
    /// Pushes config (`{}`) + one layer + manifest; returns the manifest and
    /// its digest.
    async fn push_image(&self, repo: &str, tag: &str, layer: &[u8]) -> (Value, Digest);
    /// PUTs `manifest`, which must answer 201 with its digest.
    async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        manifest: &Value,
        media_type: &str,
    ) -> Digest;
}

impl Push for App {
    async fn push_image(&self, repo: &str, tag: &str, layer: &[u8]) -> (Value, Digest) {
        self.push_blob(repo, b"{}").await;
        self.push_blob(repo, layer).await;
        let manifest = image_manifest(b"{}", &[layer]);
        let digest = self.put_manifest(repo, tag, &manifest, OCI_MANIFEST).await;
        (manifest, digest)
    }

    async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        manifest: &Value,
        media_type: &str,
    ) -> Digest {
        let body = serde_json::to_vec(manifest).unwrap();
        let r = self
            .call(
                Method::PUT,
                &format!("/v2/{repo}/manifests/{reference}"),
                &[("content-type", media_type)],
                body.clone(),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        let digest = Digest::sha256_of(&body);
        assert_eq!(r.header("docker-content-digest"), digest.to_string());
        digest
    }
}

fn blob_files(app: &App) -> Vec<PathBuf> {
    files(&app.data.join("blobs"))
}

fn upload_files(app: &App) -> Vec<PathBuf> {
    files(&app.data.join("uploads"))
}

#[tokio::test]
async fn base_route_and_api_version_header() {
    let app = app().await;
    let r = app.call(Method::GET, "/v2/", &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("docker-distribution-api-version"), "registry/2.0");
}

#[tokio::test]
async fn push_pull_round_trip_with_ranges() {
    let app = app().await;
    let layer: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let (manifest, digest) = app.push_image("group/project/app", "v1", &layer).await;
    let layer_digest = manifest["layers"][0]["digest"].as_str().unwrap();

    let r = app
        .call(
            Method::GET,
            "/v2/group/project/app/manifests/v1",
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), OCI_MANIFEST);
    assert_eq!(Digest::sha256_of(&r.body), digest);

    let head = app
        .call(
            Method::HEAD,
            &format!("/v2/group/project/app/manifests/{digest}"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), r.body.len().to_string());

    let blob = app
        .call(
            Method::GET,
            &format!("/v2/group/project/app/blobs/{layer_digest}"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(blob.body, layer);
    let part = app
        .call(
            Method::GET,
            &format!("/v2/group/project/app/blobs/{layer_digest}"),
            &[("range", "bytes=100-199")],
            Body::empty(),
        )
        .await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.header("content-range"), "bytes 100-199/3000000");
    assert_eq!(part.body, &layer[100..200]);
    let beyond = app
        .call(
            Method::GET,
            &format!("/v2/group/project/app/blobs/{layer_digest}"),
            &[("range", "bytes=3000000-")],
            Body::empty(),
        )
        .await;
    assert_eq!(beyond.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(beyond.header("content-range"), "bytes */3000000");
}

#[tokio::test]
async fn chunked_upload_status_and_cancel() {
    let app = app().await;
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 13) as u8).collect();
    let digest = Digest::sha256_of(&data);
    let loc = app.start_upload("a/b").await;
    let r = app
        .call(
            Method::PATCH,
            &loc,
            &[("content-range", "0-39999")],
            data[..40_000].to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(r.header("range"), "0-39999");
    let s = app.call(Method::GET, &loc, &[], Body::empty()).await;
    assert_eq!(s.status, StatusCode::NO_CONTENT);
    assert_eq!(s.header("range"), "0-39999");
    // A chunk without Content-Range is appended as a stream.
    let r = app
        .call(Method::PATCH, &loc, &[], data[40_000..90_000].to_vec())
        .await;
    assert_eq!(r.header("range"), "0-89999");
    // The last chunk may come with the closing PUT.
    let r = app
        .call(
            Method::PUT,
            &format!("{loc}?digest={digest}"),
            &[],
            data[90_000..].to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.header("location"), format!("/v2/a/b/blobs/{digest}"));
    assert!(upload_files(&app).is_empty());
    let after = app.call(Method::GET, &loc, &[], Body::empty()).await;
    assert_eq!(after.error_code(), "BLOB_UPLOAD_UNKNOWN");

    let loc = app.start_upload("a/b").await;
    let r = app.call(Method::DELETE, &loc, &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.call(Method::GET, &loc, &[], Body::empty()).await.status,
        StatusCode::NOT_FOUND
    );
    assert!(upload_files(&app).is_empty());
    // An upload is bound to its repository.
    let loc = app.start_upload("a/b").await;
    let other = loc.replace("/v2/a/b/", "/v2/a/c/");
    assert_eq!(
        app.call(Method::GET, &other, &[], Body::empty())
            .await
            .error_code(),
        "BLOB_UPLOAD_UNKNOWN"
    );
}

#[tokio::test]
async fn digest_mismatch_leaves_no_blob() {
    let app = app().await;
    let wrong = Digest::sha256_of(b"something else");
    // Monolithic.
    let r = app
        .call(
            Method::POST,
            &format!("/v2/a/b/blobs/uploads/?digest={wrong}"),
            &[],
            b"payload".to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error_code(), "DIGEST_INVALID");
    // POST + PUT.
    let loc = app.start_upload("a/b").await;
    let r = app
        .call(
            Method::PUT,
            &format!("{loc}?digest={wrong}"),
            &[],
            b"payload".to_vec(),
        )
        .await;
    assert_eq!(r.error_code(), "DIGEST_INVALID");
    // Chunked.
    let loc = app.start_upload("a/b").await;
    app.call(
        Method::PATCH,
        &loc,
        &[("content-range", "0-6")],
        b"payload".to_vec(),
    )
    .await;
    let r = app
        .call(
            Method::PUT,
            &format!("{loc}?digest={wrong}"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.error_code(), "DIGEST_INVALID");
    // A PUT without a digest, or with a malformed one.
    let loc = app.start_upload("a/b").await;
    assert_eq!(
        app.call(Method::PUT, &loc, &[], b"x".to_vec())
            .await
            .error_code(),
        "DIGEST_INVALID"
    );
    let r = app
        .call(
            Method::PUT,
            &format!("{loc}?digest=sha256:xyz"),
            &[],
            b"x".to_vec(),
        )
        .await;
    assert_eq!(r.error_code(), "DIGEST_INVALID");

    assert!(blob_files(&app).is_empty(), "{:?}", blob_files(&app));
    let r = app
        .call(
            Method::HEAD,
            &format!("/v2/a/b/blobs/{}", Digest::sha256_of(b"payload")),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn out_of_order_chunk_is_416() {
    let app = app().await;
    let loc = app.start_upload("a/b").await;
    app.call(
        Method::PATCH,
        &loc,
        &[("content-range", "0-9")],
        vec![1u8; 10],
    )
    .await;
    for bad in ["0-9", "20-29", "5-14", "garbage"] {
        let r = app
            .call(
                Method::PATCH,
                &loc,
                &[("content-range", bad)],
                vec![1u8; 10],
            )
            .await;
        assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE, "{bad}");
        assert_eq!(r.header("range"), "0-9", "{bad}");
        assert_eq!(r.error_code(), "BLOB_UPLOAD_INVALID");
    }
    let ok = app
        .call(
            Method::PATCH,
            &loc,
            &[("content-range", "10-19")],
            vec![1u8; 10],
        )
        .await;
    assert_eq!(ok.header("range"), "0-19");
}

#[tokio::test]
async fn manifest_naming_a_missing_blob_is_refused() {
    let app = app().await;
    let config = app.push_blob("a/b", b"{}").await;
    let missing = Digest::sha256_of(b"never pushed");
    let manifest = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": missing.to_string(), "size": 12}],
    });
    let r = app
        .call(
            Method::PUT,
            "/v2/a/b/manifests/v1",
            &[("content-type", OCI_MANIFEST)],
            serde_json::to_vec(&manifest).unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error_code(), "MANIFEST_BLOB_UNKNOWN");
    assert!(
        r.json()["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains(&missing.to_string())
    );
    // Nothing was stored: no tag, no manifest.
    assert_eq!(
        app.call(Method::GET, "/v2/a/b/tags/list", &[], Body::empty())
            .await
            .json()["tags"],
        json!([])
    );
    let d = Digest::sha256_of(&serde_json::to_vec(&manifest).unwrap());
    assert_eq!(
        app.call(
            Method::GET,
            &format!("/v2/a/b/manifests/{d}"),
            &[],
            Body::empty()
        )
        .await
        .error_code(),
        "MANIFEST_UNKNOWN"
    );
    // A blob in another repository does not count.
    let elsewhere = app.push_blob("x/y", b"never pushed").await;
    assert_eq!(elsewhere, missing);
    let r = app
        .call(
            Method::PUT,
            "/v2/a/b/manifests/v1",
            &[("content-type", OCI_MANIFEST)],
            serde_json::to_vec(&manifest).unwrap(),
        )
        .await;
    assert_eq!(r.error_code(), "MANIFEST_BLOB_UNKNOWN");
    // An index naming a manifest the repository does not have.
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": missing.to_string(), "size": 10}]});
    let r = app
        .call(
            Method::PUT,
            "/v2/a/b/manifests/multi",
            &[("content-type", OCI_INDEX)],
            serde_json::to_vec(&index).unwrap(),
        )
        .await;
    assert_eq!(r.error_code(), "MANIFEST_BLOB_UNKNOWN");
}

#[tokio::test]
async fn oversized_and_malformed_manifests_are_refused() {
    let app = app().await;
    let big = vec![b' '; 4 * 1024 * 1024 + 1];
    let r = app
        .call(
            Method::PUT,
            "/v2/a/b/manifests/v1",
            &[("content-type", OCI_MANIFEST)],
            big,
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.error_code(), "MANIFEST_INVALID");

    for (body, what) in [
        (&b"{not json"[..], "not valid JSON"),
        (br#"{"schemaVersion":1,"name":"x"}"#, "schemaVersion 1"),
        (
            br#"{"schemaVersion":2,"mediaType":"text/plain"}"#,
            "not supported",
        ),
        (
            br#"{"schemaVersion":2,"layers":[]}"#,
            "does not match its media type",
        ),
    ] {
        let r = app
            .call(
                Method::PUT,
                "/v2/a/b/manifests/v1",
                &[("content-type", OCI_MANIFEST)],
                body.to_vec(),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{what}");
        assert_eq!(r.error_code(), "MANIFEST_INVALID", "{what}");
        assert!(
            r.json()["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains(what),
            "{what}: {:?}",
            r.json()
        );
    }
    // A digest reference that does not match the body.
    let wrong = Digest::sha256_of(b"x");
    let r = app
        .call(
            Method::PUT,
            &format!("/v2/a/b/manifests/{wrong}"),
            &[("content-type", OCI_INDEX)],
            br#"{"schemaVersion":2,"manifests":[]}"#.to_vec(),
        )
        .await;
    assert_eq!(r.error_code(), "DIGEST_INVALID");
    assert!(
        app.call(Method::GET, "/v2/_catalog", &[], Body::empty())
            .await
            .json()["repositories"]
            == json!([])
    );
}

#[tokio::test]
async fn traversal_and_bad_names_never_touch_the_filesystem() {
    let app = app().await;
    let outside = app.data.parent().unwrap().to_path_buf();
    let before: Vec<PathBuf> = files(&outside);
    let digest = Digest::sha256_of(b"x");
    let paths = [
        "/v2/../../etc/blobs/uploads/".to_string(),
        "/v2/a/../../../b/blobs/uploads/".to_string(),
        "/v2/a/%2e%2e/b/blobs/uploads/".to_string(),
        "/v2/a/..%2fb/blobs/uploads/".to_string(),
        format!("/v2/a/./b/blobs/uploads/?digest={digest}"),
        "/v2/_a/b/blobs/uploads/".to_string(),
        "/v2/a-/b/manifests/latest".to_string(),
        "/v2/a--b/c/tags/list".to_string(),
        "/v2/A/b/tags/list".to_string(),
    ];
    for path in &paths {
        for method in [Method::POST, Method::PUT, Method::GET] {
            let r = app.call(method.clone(), path, &[], b"x".to_vec()).await;
            assert_eq!(
                r.error_code(),
                "NAME_INVALID",
                "{method} {path}: {:?}",
                r.json()
            );
            assert!(
                !r.json()["errors"][0]["message"]
                    .as_str()
                    .unwrap()
                    .is_empty()
            );
        }
    }
    // Upload ids are UUIDs; anything else is unknown, not a path.
    for id in ["..%2f..%2fetc", "../../x", "abc"] {
        let r = app
            .call(
                Method::PATCH,
                &format!("/v2/a/b/blobs/uploads/{id}"),
                &[],
                b"x".to_vec(),
            )
            .await;
        assert!(r.status == StatusCode::NOT_FOUND, "{id}: {}", r.status);
    }
    let r = app
        .call(
            Method::GET,
            "/v2/a/b/blobs/sha256:..%2f..%2fetc%2fpasswd",
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.error_code(), "DIGEST_INVALID");
    let mut after = files(&outside);
    after.retain(|p| !p.starts_with(&app.data));
    let mut before_outside = before;
    before_outside.retain(|p| !p.starts_with(&app.data));
    assert_eq!(before_outside, after);
    assert!(blob_files(&app).is_empty() && upload_files(&app).is_empty());
}

#[tokio::test]
async fn tags_and_catalog_paginate_with_link() {
    let app = app().await;
    let (manifest, _) = app.push_image("p/one", "t0", b"layer").await;
    for t in ["t1", "t2", "t3", "t4"] {
        app.put_manifest("p/one", t, &manifest, OCI_MANIFEST).await;
    }
    app.push_image("p/two", "x", b"layer").await;
    app.push_image("p/three", "x", b"layer").await;

    let all = app
        .call(Method::GET, "/v2/p/one/tags/list", &[], Body::empty())
        .await;
    assert_eq!(
        all.json(),
        json!({"name": "p/one", "tags": ["t0", "t1", "t2", "t3", "t4"]})
    );
    assert_eq!(all.header("link"), "");
    let page = app
        .call(Method::GET, "/v2/p/one/tags/list?n=2", &[], Body::empty())
        .await;
    assert_eq!(page.json()["tags"], json!(["t0", "t1"]));
    assert_eq!(
        page.header("link"),
        "</v2/p/one/tags/list?n=2&last=t1>; rel=\"next\""
    );
    let next = app
        .call(
            Method::GET,
            "/v2/p/one/tags/list?n=2&last=t1",
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(next.json()["tags"], json!(["t2", "t3"]));
    let last = app
        .call(
            Method::GET,
            "/v2/p/one/tags/list?n=2&last=t3",
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(last.json()["tags"], json!(["t4"]));
    assert_eq!(last.header("link"), "");
    assert_eq!(
        app.call(Method::GET, "/v2/p/none/tags/list", &[], Body::empty())
            .await
            .error_code(),
        "NAME_UNKNOWN"
    );
    assert_eq!(
        app.call(Method::GET, "/v2/p/one/tags/list?n=x", &[], Body::empty())
            .await
            .status,
        StatusCode::BAD_REQUEST
    );

    let cat = app
        .call(Method::GET, "/v2/_catalog?n=2", &[], Body::empty())
        .await;
    assert_eq!(cat.json(), json!({"repositories": ["p/one", "p/three"]}));
    assert_eq!(
        cat.header("link"),
        "</v2/_catalog?n=2&last=p%2Fthree>; rel=\"next\""
    );
    let rest = app
        .call(
            Method::GET,
            "/v2/_catalog?n=2&last=p%2Fthree",
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(rest.json(), json!({"repositories": ["p/two"]}));
}

#[tokio::test]
async fn delete_tag_manifest_and_blob() {
    let app = app().await;
    let (manifest, digest) = app.push_image("a/b", "v1", b"layer").await;
    app.put_manifest("a/b", "v2", &manifest, OCI_MANIFEST).await;
    let r = app
        .call(Method::DELETE, "/v2/a/b/manifests/v1", &[], Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(
        app.call(Method::GET, "/v2/a/b/manifests/v1", &[], Body::empty())
            .await
            .error_code(),
        "MANIFEST_UNKNOWN"
    );
    assert_eq!(
        app.call(Method::GET, "/v2/a/b/manifests/v2", &[], Body::empty())
            .await
            .status,
        StatusCode::OK
    );
    let r = app
        .call(
            Method::DELETE,
            &format!("/v2/a/b/manifests/{digest}"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(
        app.call(Method::GET, "/v2/a/b/manifests/v2", &[], Body::empty())
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.call(
            Method::DELETE,
            &format!("/v2/a/b/manifests/{digest}"),
            &[],
            Body::empty()
        )
        .await
        .error_code(),
        "MANIFEST_UNKNOWN"
    );

    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    assert_eq!(
        app.call(
            Method::DELETE,
            &format!("/v2/a/b/blobs/{layer}"),
            &[],
            Body::empty()
        )
        .await
        .status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        app.call(
            Method::GET,
            &format!("/v2/a/b/blobs/{layer}"),
            &[],
            Body::empty()
        )
        .await
        .error_code(),
        "BLOB_UNKNOWN"
    );
    assert_eq!(
        app.call(
            Method::DELETE,
            &format!("/v2/a/b/blobs/{layer}"),
            &[],
            Body::empty()
        )
        .await
        .error_code(),
        "BLOB_UNKNOWN"
    );
}

#[tokio::test]
async fn cross_repository_mount() {
    let app = app().await;
    let digest = app.push_blob("src/repo", b"shared layer").await;
    let r = app
        .call(
            Method::POST,
            &format!("/v2/dst/repo/blobs/uploads/?mount={digest}&from=src/repo"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.header("location"), format!("/v2/dst/repo/blobs/{digest}"));
    assert_eq!(
        app.call(
            Method::GET,
            &format!("/v2/dst/repo/blobs/{digest}"),
            &[],
            Body::empty()
        )
        .await
        .body,
        b"shared layer"
    );
    // Not mountable: an ordinary upload session instead.
    let other = Digest::sha256_of(b"nope");
    let r = app
        .call(
            Method::POST,
            &format!("/v2/dst/repo/blobs/uploads/?mount={other}&from=src/repo"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert!(
        r.header("location")
            .starts_with("/v2/dst/repo/blobs/uploads/")
    );
}

#[tokio::test]
async fn referrers_with_artifact_type_filter() {
    let app = app().await;
    let (_, subject) = app.push_image("a/b", "v1", b"layer").await;
    let empty = app.push_blob("a/b", b"{}").await;
    let mut referrers = Vec::new();
    for (i, artifact_type) in [
        "application/vnd.example.sbom",
        "application/vnd.example.sig",
    ]
    .iter()
    .enumerate()
    {
        let m = json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty.to_string(), "size": 2},
            "layers": [],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject.to_string(), "size": 100},
            "annotations": {"n": i.to_string()},
        });
        let body = serde_json::to_vec(&m).unwrap();
        let d = Digest::sha256_of(&body);
        let r = app
            .call(
                Method::PUT,
                &format!("/v2/a/b/manifests/{d}"),
                &[("content-type", OCI_MANIFEST)],
                body,
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
        assert_eq!(r.header("oci-subject"), subject.to_string());
        referrers.push(d);
    }
    let r = app
        .call(
            Method::GET,
            &format!("/v2/a/b/referrers/{subject}"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.header("content-type"), OCI_INDEX);
    let list = r.json();
    assert_eq!(list["manifests"].as_array().unwrap().len(), 2);
    assert_eq!(list["manifests"][0]["digest"], referrers[0].to_string());
    assert_eq!(
        list["manifests"][0]["artifactType"],
        "application/vnd.example.sbom"
    );
    assert_eq!(list["manifests"][0]["annotations"], json!({"n": "0"}));
    let r = app
        .call(
            Method::GET,
            &format!("/v2/a/b/referrers/{subject}?artifactType=application/vnd.example.sig"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.header("oci-filters-applied"), "artifactType");
    assert_eq!(r.json()["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(r.json()["manifests"][0]["digest"], referrers[1].to_string());
    // Unknown subjects give an empty index, not an error.
    let r = app
        .call(
            Method::GET,
            &format!("/v2/a/b/referrers/{}", Digest::sha256_of(b"?")),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["manifests"], json!([]));
}

#[tokio::test]
async fn tags_list_reflects_every_change() {
    let app = app().await;
    let tags = |app: &App| {
        let router = app.router.clone();
        async move {
            let req = Request::get("/v2/c/r/tags/list?n=10")
                .body(Body::empty())
                .unwrap();
            let resp = router.oneshot(req).await.unwrap();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            serde_json::from_slice::<Value>(&body).unwrap()["tags"].clone()
        }
    };
    let (manifest, digest) = app.push_image("c/r", "a", b"one").await;
    assert_eq!(tags(&app).await, json!(["a"]));
    assert_eq!(tags(&app).await, json!(["a"])); // served from the cache
    app.put_manifest("c/r", "b", &manifest, OCI_MANIFEST).await;
    assert_eq!(tags(&app).await, json!(["a", "b"]));
    app.push_image("c/r", "a", b"two").await; // tag moved to another manifest
    assert_eq!(tags(&app).await, json!(["a", "b"]));
    app.call(Method::DELETE, "/v2/c/r/manifests/a", &[], Body::empty())
        .await;
    assert_eq!(tags(&app).await, json!(["b"]));
    app.call(
        Method::DELETE,
        &format!("/v2/c/r/manifests/{digest}"),
        &[],
        Body::empty(),
    )
    .await;
    assert_eq!(tags(&app).await, json!([]));
}

#[tokio::test]
async fn docker_schema2_manifest_and_manifest_list() {
    const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    let app = app().await;
    let config = app
        .push_blob("d/img", br#"{"architecture":"amd64","os":"linux"}"#)
        .await;
    let layer = app.push_blob("d/img", b"docker layer").await;
    let manifest = json!({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": config.to_string(), "size": 37},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": layer.to_string(), "size": 12}],
    });
    let child = app
        .put_manifest("d/img", "amd64", &manifest, DOCKER_MANIFEST)
        .await;
    let list = json!({
        "schemaVersion": 2, "mediaType": DOCKER_LIST,
        "manifests": [{"mediaType": DOCKER_MANIFEST, "digest": child.to_string(), "size": 400,
                       "platform": {"architecture": "amd64", "os": "linux", "features": ["sse4"]}}],
    });
    let list_digest = app
        .put_manifest("d/img", "latest", &list, DOCKER_LIST)
        .await;
    let r = app
        .call(
            Method::GET,
            "/v2/d/img/manifests/latest",
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.header("content-type"), DOCKER_LIST);
    assert_eq!(Digest::sha256_of(&r.body), list_digest);
    let r = app
        .call(Method::GET, "/v2/d/img/manifests/amd64", &[], Body::empty())
        .await;
    assert_eq!(r.header("content-type"), DOCKER_MANIFEST);
    assert_eq!(r.header("docker-content-digest"), child.to_string());
}

/// Finding 5b and 7(iii) of issue 12: tags/list without `n` answered the
/// whole list, every page keyed by the caller's `last` was cached (4,000
/// requests took 1.4 GiB), and `n=0` answered a `Link` to itself. Now: 1000
/// tags and a `Link` when `n` is absent, only first pages cached (bounded by
/// bytes), `n=0` an empty list without `Link`.
#[tokio::test]
async fn tags_list_pages_by_default_and_caches_first_pages_only() {
    let app = app().await;
    let (manifest, _) = app.push_image("p/many", "t0000", b"layer").await;
    for i in 1..1200 {
        app.put_manifest("p/many", &format!("t{i:04}"), &manifest, OCI_MANIFEST)
            .await;
    }
    let get = |uri: String| {
        let app = &app;
        async move { app.call(Method::GET, &uri, &[], Body::empty()).await }
    };
    let first = get("/v2/p/many/tags/list".into()).await;
    let tags = first.json()["tags"].as_array().unwrap().len();
    assert_eq!(tags, 1000);
    assert_eq!(
        first.header("link"),
        "</v2/p/many/tags/list?n=1000&last=t0999>; rel=\"next\""
    );
    let rest = get("/v2/p/many/tags/list?n=1000&last=t0999".into()).await;
    assert_eq!(rest.json()["tags"].as_array().unwrap().len(), 200);
    assert_eq!(rest.header("link"), "");
    // n=0: nothing, and no Link to follow (it named this request again).
    let none = get("/v2/p/many/tags/list?n=0".into()).await;
    assert_eq!(none.json(), json!({"name": "p/many", "tags": []}));
    assert_eq!(none.header("link"), "");
    let none = get("/v2/_catalog?n=0".into()).await;
    assert_eq!(none.json(), json!({"repositories": []}));
    assert_eq!(none.header("link"), "");
    // Pages after a caller's `last` are not kept.
    for i in 0..4000 {
        let r = get(format!("/v2/p/many/tags/list?last=a{i:05}")).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let (pages, bytes) = app.registry.tag_page_cache_usage();
    eprintln!(
        "tags/list cache after 4,000 requests with distinct `last`: {pages} pages, {bytes} bytes"
    );
    assert_eq!(pages, 1, "only the first page is kept");
    assert!(bytes < 64 << 10, "{bytes}");
}

/// Finding 8a of issue 12: a HEAD reply has no body, so a client that starts
/// its push with HEAD showed only "400 Bad Request" for an invalid name.
/// HEAD on an invalid name is 404 (nothing is there); the POST or PUT that
/// follows gets the 400 NAME_INVALID with its reason.
#[tokio::test]
async fn head_on_an_invalid_name_lets_the_next_request_say_why() {
    let app = app().await;
    let digest = Digest::sha256_of(b"x");
    for path in [
        format!("/v2/e2e/app-/blobs/{digest}"),
        "/v2/e2e/app-/manifests/v1".to_string(),
    ] {
        let r = app.call(Method::HEAD, &path, &[], Body::empty()).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "HEAD {path}");
    }
    let r = app
        .call(
            Method::POST,
            "/v2/e2e/app-/blobs/uploads/",
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error_code(), "NAME_INVALID");
    let message = r.json()["errors"][0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains("app-"), "{message}");
    eprintln!("POST after HEAD answers: {message}");
}

/// What a tagged index holds cannot be deleted from beneath it (issue 12,
/// findings 4 and 8c): neither a child manifest by digest nor a layer, with a
/// 409 naming the holder and its tag; both go once the index (then the
/// child) is deleted, which is the order the OCI conformance suite uses.
#[tokio::test]
async fn deletes_refuse_what_a_tagged_index_holds() {
    let app = app().await;
    let repo = "held/img";
    let config = app.push_blob(repo, b"{}").await;
    let layer = app.push_blob(repo, b"held layer").await;
    let child_manifest = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer.to_string(), "size": 10}],
    });
    let child_digest = Digest::sha256_of(&serde_json::to_vec(&child_manifest).unwrap());
    let child = app
        .put_manifest(
            repo,
            &child_digest.to_string(),
            &child_manifest,
            OCI_MANIFEST,
        )
        .await;
    let index = json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": child.to_string(), "size": 300,
                       "platform": {"architecture": "amd64", "os": "linux"}}],
    });
    let index = app.put_manifest(repo, "v1", &index, OCI_INDEX).await;
    let delete = |what: String| {
        let app = &app;
        async move {
            app.call(
                Method::DELETE,
                &format!("/v2/{repo}/{what}"),
                &[],
                Body::empty(),
            )
            .await
        }
    };
    let message = |r: &Reply| {
        r.json()["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };

    let r = delete(format!("manifests/{child}")).await;
    assert_eq!(
        r.status,
        StatusCode::CONFLICT,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.error_code(), "DENIED");
    assert_eq!(
        message(&r),
        format!("manifest {child} is referenced by index {index} (tag v1); delete the index first")
    );
    let r = delete(format!("blobs/{layer}")).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.error_code(), "DENIED");
    assert_eq!(
        message(&r),
        format!(
            "blob {layer} is referenced by manifest {child} (tag v1); delete the manifest first"
        )
    );
    // Nothing went: the tag, the child and the layer all read back, and fsck
    // finds the repository whole.
    for path in [
        "manifests/v1".to_string(),
        format!("manifests/{child}"),
        format!("blobs/{layer}"),
    ] {
        let r = app
            .call(
                Method::GET,
                &format!("/v2/{repo}/{path}"),
                &[],
                Body::empty(),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
    }
    let report = crate::common::fsck(&app.data).await.unwrap();
    assert!(report.problems.is_empty(), "fsck: {:?}", report.problems);

    // The untagged child still holds its blobs after the index is gone.
    assert_eq!(
        delete(format!("manifests/{index}")).await.status,
        StatusCode::ACCEPTED
    );
    let r = delete(format!("blobs/{config}")).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(
        message(&r),
        format!(
            "blob {config} is referenced by manifest {child} (untagged); delete the manifest first"
        )
    );
    assert_eq!(
        delete(format!("manifests/{child}")).await.status,
        StatusCode::ACCEPTED
    );
    for blob in [layer, config] {
        assert_eq!(
            delete(format!("blobs/{blob}")).await.status,
            StatusCode::ACCEPTED
        );
    }
}
