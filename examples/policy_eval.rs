//! How fast a cleanup policy decides over a large repository.
//!
//! Usage: `cargo run --release --example policy_eval [-- <tags> <runs>]`
//! (defaults: 100000 tags, 20 runs).
//!
//! Builds the tags once (deterministic names, ages and digests, some digests
//! shared by several tags), then times `berth::lifecycle::policy::evaluate`
//! alone — no listing, no deletion — with a realistic policy: delete `.*`,
//! keep `main|release-.*`, keepN 10, olderThan 30d, semver tags protected, a
//! few digests running. Prints the verdict counts, then median and minimum
//! per run in ms and tags per second at the median.

use std::collections::HashSet;
use std::hint::black_box;
use std::time::{Duration, Instant};

use berth::lifecycle::policy::{Guards, Kept, Rules, TagInfo, Verdict, evaluate};
use regex::Regex;

const NOW: i64 = 1_700_000_000_000;
const DAY_MS: i64 = 86_400_000;

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct OwnedTag {
    name: String,
    created_at: i64,
    digest: String,
}

fn make_tags(count: usize, rng: &mut Rng) -> Vec<OwnedTag> {
    const WORDS: [&str; 8] = [
        "login", "cache", "api", "fix", "ui", "build", "deps", "docs",
    ];
    let digests = (count / 2).max(1) as u64;
    let mut tags = Vec::with_capacity(count);
    for i in 0..count {
        // Unique names: each but the first two ends in its index.
        let name = match (i, rng.below(10)) {
            (0, _) => "latest".to_string(),
            (1, _) => "main".to_string(),
            (_, 0) => format!("release-{}.{i}", rng.below(20)),
            (_, 1) => format!("v{}.{}.{i}", rng.below(5), rng.below(30)),
            (_, 2..=4) => format!("feature-{}-{i}", WORDS[rng.below(8) as usize]),
            _ => format!("{:08x}{i}", rng.next() as u32),
        };
        // Ages spread over a year, to the millisecond.
        let created_at = NOW - rng.below(365 * DAY_MS as u64) as i64;
        let digest = format!("sha256:{:064x}", rng.below(digests));
        tags.push(OwnedTag {
            name,
            created_at,
            digest,
        });
    }
    tags
}

fn main() {
    let mut args = std::env::args().skip(1);
    let count: usize = args
        .next()
        .map_or(100_000, |a| a.parse().expect("tag count"));
    let runs: usize = args.next().map_or(20, |a| a.parse().expect("run count"));

    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let owned = make_tags(count, &mut rng);
    let tags: Vec<TagInfo<'_>> = owned
        .iter()
        .map(|t| TagInfo {
            name: &t.name,
            created_at: t.created_at,
            digest: &t.digest,
        })
        .collect();

    let rules = Rules::compile(
        Some(".*"),
        Some("main|release-.*"),
        Some(10),
        Some(Duration::from_secs(30 * 86_400)),
    )
    .expect("policy compiles");
    let semver = Regex::new(r"\Av\d+\.\d+\.\d+\z").expect("protected pattern");
    let protected = |name: &str| semver.is_match(name);
    let running: HashSet<&str> = tags.iter().step_by(997).map(|t| t.digest).collect();
    let in_use = |digest: &str| running.contains(digest);
    let guards = Guards {
        protected: &protected,
        in_use: &in_use,
        ..Guards::NONE
    };

    let verdicts = evaluate(&tags, &rules, &guards, NOW);
    let mut counts = std::collections::BTreeMap::new();
    for v in &verdicts {
        let label = match v {
            Verdict::Delete => "delete",
            Verdict::Keep(k) => Kept::as_str(*k),
        };
        *counts.entry(label).or_insert(0usize) += 1;
    }
    println!("tags={count} runs={runs}");
    for (label, n) in &counts {
        println!("  {label:<13} {n}");
    }

    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let verdicts = evaluate(black_box(&tags), &rules, &guards, NOW);
        let elapsed = start.elapsed();
        black_box(verdicts);
        times.push(elapsed);
    }
    times.sort_unstable();
    let median = times[times.len() / 2];
    let min = times[0];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "evaluate: median {:.2} ms, min {:.2} ms, {:.1} M tags/s at the median",
        ms(median),
        ms(min),
        count as f64 / median.as_secs_f64() / 1e6
    );
}
