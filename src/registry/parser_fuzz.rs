//! Property-based tests of every parser that reads client input: request
//! paths (routes, repository names, references), digests, `Range` and
//! `Content-Range`, token scopes, manifests and indexes, and the config file.
//! Each runs over random and mutated inputs (100,000 cases each by default,
//! `PARSER_CASES` to change) and must never panic; where a parser has a
//! simple contract (round trips, bounds) that is checked too. The number of
//! cases each parser saw is printed.

use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use super::blobs::{RangeRequest, parse_range};
use super::route::parse_route;
use super::uploads::parse_content_range;
use crate::oci::{Digest, manifest};

fn cases() -> u32 {
    std::env::var("PARSER_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

/// Runs `check` over `strategy` for [`cases`] cases; prints and returns the count.
fn run<S: Strategy>(name: &str, strategy: S, check: impl Fn(S::Value)) -> u64
where
    S::Value: std::fmt::Debug,
{
    let seen = AtomicU64::new(0);
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    let outcome = runner.run(&strategy, |value| {
        seen.fetch_add(1, Ordering::Relaxed);
        check(value);
        Ok(())
    });
    if let Err(e) = outcome {
        panic!("{name}: {e}");
    }
    let n = seen.load(Ordering::Relaxed);
    println!("{name}: {n} cases, no panic");
    assert!(n >= u64::from(cases()), "{name}: only {n} cases ran");
    n
}

/// Random edits of a valid input: bytes replaced, inserted and removed, and
/// pieces of the input repeated, so the parser meets almost-valid text.
fn mutated(seed: &'static str) -> impl Strategy<Value = String> {
    let edits = prop::collection::vec((any::<u8>(), any::<prop::sample::Index>(), 0u8..4), 0..8);
    edits.prop_map(move |edits| {
        let mut bytes = seed.as_bytes().to_vec();
        for (byte, at, kind) in edits {
            let i = if bytes.is_empty() {
                0
            } else {
                at.index(bytes.len())
            };
            match kind {
                0 if !bytes.is_empty() => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                2 if !bytes.is_empty() => {
                    bytes.remove(i);
                }
                _ => {
                    let piece: Vec<u8> = bytes[i..]
                        .iter()
                        .take(usize::from(byte % 16))
                        .copied()
                        .collect();
                    bytes.splice(i..i, piece);
                }
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

const DIGEST: &str = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

#[test]
fn routes_names_and_references() {
    let path = prop_oneof![
        any::<String>(),
        "/v2/[a-z0-9._/-]{0,40}/(manifests|blobs|tags|referrers)/[A-Za-z0-9:._/-]{0,80}",
        "/v2/[a-z0-9._/-]{0,40}/blobs/uploads/[a-f0-9-]{0,40}",
        mutated("/v2/group/project/app/manifests/v1.2"),
        mutated(
            "/v2/group/project/app/blobs/sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
        ),
        mutated("/v2/g/p/blobs/uploads/9f0e7a35-3b6f-4a53-8f4c-1b6d3c0c1a2e"),
        mutated("/v2/_catalog"),
    ];
    run("route", path, |p| {
        if let Ok(route) = parse_route(&p) {
            // Whatever parsed names a valid repository.
            if let Some(name) = route.repository() {
                assert!(
                    crate::oci::validate_repository(name).is_ok(),
                    "{p:?} -> {name:?}"
                );
            }
        }
    });
}

#[test]
fn digests() {
    let text = prop_oneof![
        any::<String>(),
        mutated(DIGEST),
        "(sha256|sha512|md5):[0-9a-fA-F]{0,130}"
    ];
    run("digest", text, |t| {
        if let Ok(d) = t.parse::<Digest>() {
            // What parses prints back to itself.
            assert_eq!(d.to_string(), t);
        }
    });
}

#[test]
fn ranges() {
    let header = prop_oneof![
        any::<String>(),
        "bytes=[0-9]{0,21}-[0-9]{0,21}",
        "bytes=-?[0-9]{0,21}(,[0-9]{0,5}-[0-9]{0,5})?",
        mutated("bytes=0-1023"),
    ];
    run(
        "Range",
        (header, any::<u64>()),
        |(h, size)| match parse_range(Some(&h), size) {
            RangeRequest::Part(start, end) => {
                assert!(
                    start < end && end <= size,
                    "{h:?} of {size}: {start}..{end}"
                );
            }
            RangeRequest::Whole | RangeRequest::Unsatisfiable => {}
        },
    );
}

#[test]
fn content_ranges() {
    let header = prop_oneof![
        any::<String>(),
        "(bytes[ =])?[0-9]{0,21}-[0-9]{0,21}(/[0-9*]{0,21})?",
        mutated("bytes 0-1023/4096"),
    ];
    run("Content-Range", header, |h| {
        let _ = parse_content_range(&h);
    });
    // And what a client sends reads back.
    run(
        "Content-Range round trip",
        (any::<u64>(), any::<u64>()),
        |(a, b)| {
            assert_eq!(parse_content_range(&format!("{a}-{b}")), Some((a, b)));
            assert_eq!(
                parse_content_range(&format!("bytes {a}-{b}/*")),
                Some((a, b))
            );
        },
    );
}

#[test]
fn scopes() {
    let scope = prop_oneof![
        any::<String>(),
        "(repository|registry|repository\\(plugin\\))?:[a-z0-9/._:-]{0,40}:[a-z*,]{0,20}",
        mutated("repository:group/project/app:pull,push"),
    ];
    run("scope", scope, |s| {
        if let Some(a) = crate::auth::token::parse_scope(&s) {
            assert!(!a.kind.is_empty() && !a.name.is_empty(), "{s:?}");
        }
    });
}

const IMAGE: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae","size":7},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae","size":7}],"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae","size":3},"annotations":{"a":"b"}}"#;
const INDEX: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae","size":7,"platform":{"architecture":"amd64","os":"linux"}}]}"#;
const DOCKER_LIST: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae","size":7,"platform":{"architecture":"arm64","os":"linux","variant":"v8"}}]}"#;

#[test]
fn manifests_and_indexes() {
    let content_type = prop_oneof![
        Just(None),
        Just(Some(
            "application/vnd.oci.image.manifest.v1+json".to_string()
        )),
        Just(Some("application/vnd.oci.image.index.v1+json".to_string())),
        Just(Some(
            "application/vnd.docker.distribution.manifest.v2+json".to_string()
        )),
        Just(Some(
            "application/vnd.docker.distribution.manifest.list.v2+json".to_string()
        )),
        any::<String>().prop_map(Some),
    ];
    let body = prop_oneof![
        any::<Vec<u8>>(),
        mutated(IMAGE).prop_map(String::into_bytes),
        mutated(INDEX).prop_map(String::into_bytes),
        mutated(DOCKER_LIST).prop_map(String::into_bytes),
    ];
    run("manifest", (content_type, body), |(ct, body)| {
        let _ = manifest::parse(ct.as_deref(), &body);
    });
    // The unmutated documents do parse (the mutations start from valid input).
    for doc in [IMAGE, INDEX, DOCKER_LIST] {
        assert!(manifest::parse(None, doc.as_bytes()).is_ok(), "{doc}");
    }
}

const CONFIG: &str = "listen: 127.0.0.1:5000\ndataDir: berth-data\nlog:\n  format: json\n  level: info\nauth:\n  enabled: true\n  tokenTtlSeconds: 300\n  realm: null\ngc:\n  reviewDelay: 24h\n  sweepInterval: 1h\nserver:\n  headerReadTimeout: 30s\n  maxConnections: 4096\nstorage:\n  maxBlobSize: 107374182400\n  minFreeBytes: 0\nui:\n  sessionTimeout: 8h\n";

#[test]
fn config_files() {
    assert!(
        crate::config::Config::from_yaml(CONFIG).is_ok(),
        "the seed config parses"
    );
    let text = prop_oneof![any::<String>(), mutated(CONFIG)];
    run("config file", text, |t| {
        let _ = crate::config::Config::from_yaml(&t);
    });
}
