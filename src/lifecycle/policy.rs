//! Which tags a cleanup policy deletes: GitLab's rules, as one pure function.
//!
//! [`evaluate`] takes a repository's tags, the [`Rules`] and the [`Guards`]
//! (protected, immutable, running) and returns one [`Verdict`] per tag: delete,
//! or keep and why. It does no I/O and reads no clock; the caller lists the
//! tags, passes `now`, and deletes. The same function serves the
//! `CleanupPolicy` runs ([`Rules::from_spec`]) and the management API's bulk
//! delete ([`Rules::compile`] with GitLab's parameters `name_regex_delete`,
//! `name_regex_keep`, `keep_n`, `older_than`, the last read by
//! [`parse_older_than`]).
//!
//! GitLab's order ("How the cleanup policy works", GitLab's
//! `reduce_container_registry_storage.md`), one step per [`Kept`] reason, the
//! first that applies being the one reported:
//!
//! 1. the tag named `latest` is never deleted ([`Kept::Latest`]);
//! 2. "Evaluates the `name_regex` (tags to expire), excluding non-matching
//!    names" ([`Kept::NotMatched`]);
//! 3. "Excludes any tags matching the `name_regex_keep` value (tags to
//!    preserve)" ([`Kept::MatchedKeep`]) — so the keep regex wins;
//! 4. "Orders the remaining tags by `created_date`" and "Excludes the N tags
//!    based on the `keep_n` value" ([`Kept::Newest`]);
//! 5. "Excludes the tags more recent than the `older_than` value"
//!    ([`Kept::TooNew`]);
//! 6. excludes protected, then immutable tags ([`Kept::Protected`],
//!    [`Kept::Immutable`]);
//! 7. beyond GitLab: excludes tags whose image runs in the cluster now
//!    ([`Kept::InUse`], when [`Rules::keep_in_use`], the default);
//! 8. deletes the rest.
//!
//! Readings worth stating:
//! - keepN counts only the tags still candidates after steps 1–3: `latest`,
//!   tags the delete regex does not match and tags the keep regex matches do
//!   not use up keepN. GitLab's worked example keeps `v44` as "the most recent"
//!   although `latest` and `production-v44` are newer, and its code takes the
//!   N newest of the list left after the name filter.
//! - Guards come after keepN, as in GitLab's list: a protected tag among the N
//!   newest takes one of the N places (reported as [`Kept::Newest`]); guards
//!   only ever turn a deletion into a keep, never change what else is kept.
//! - Ties in creation time: the name that sorts first counts as newer (then
//!   the input position, should a name repeat), so the result never depends on
//!   the order tags were listed in. GitLab leaves ties to its sort.
//! - olderThan deletes only tags strictly older than `now - olderThan`; a tag
//!   exactly that old is kept (GitLab: `timestamp < older_than_timestamp`).
//! - Regexes are anchored at both ends, like GitLab's `\A(?:…)\z`: `v` does not
//!   match `v1`, `a|b` does not match `ab`.

use std::time::Duration;

use regex::Regex;

use crate::lifecycle::spec::{Cadence, CleanupPolicySpec, OlderThan};

/// The tag no policy and no bulk delete ever removes.
pub const LATEST: &str = "latest";

/// The values GitLab offers for keepN ("Keep the most recent").
pub const KEEP_N_CHOICES: [i32; 6] = [1, 5, 10, 25, 50, 100];

pub type Result<T, E = RuleError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// `field` is the name the user wrote: `nameRegex` / `nameRegexKeep` for a
    /// CleanupPolicy, `name_regex_delete` / `name_regex_keep` for the API.
    #[error("{field} is not a valid regular expression: {source}")]
    Regex {
        field: &'static str,
        source: regex::Error,
    },
    #[error("keepN must be one of 1, 5, 10, 25, 50 or 100, not {0}")]
    KeepN(i32),
}

/// A policy, compiled. Built by [`Rules::compile`] or [`Rules::from_spec`],
/// which anchor the regexes; the regex fields are private so that nothing
/// unanchored gets in.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Tags that may be deleted. `None` matches no tag, so nothing is deleted.
    name_regex: Option<Regex>,
    /// Tags always kept; wins over `name_regex`. `None` matches no tag.
    name_regex_keep: Option<Regex>,
    /// Keep this many of the newest candidates.
    pub keep_n: Option<usize>,
    /// Keep candidates younger than this.
    pub older_than: Option<Duration>,
    /// Keep tags whose digest [`Guards::in_use`] reports running. On unless
    /// a CleanupPolicy says `keepInUse: false`.
    pub keep_in_use: bool,
}

impl Rules {
    /// Rules from the management API's bulk-delete parameters
    /// (`name_regex_delete` — or the deprecated `name_regex` — `name_regex_keep`,
    /// `keep_n`, `older_than`); errors name those parameters. `keep_in_use` is
    /// on.
    ///
    /// Without a delete regex nothing is deleted: GitLab builds
    /// `\A#{name_regex}\z`, which for a missing regex matches only the empty
    /// string, i.e. no tag, and its API makes `name_regex_delete` required
    /// ("To delete all tags specify `.*`"). The `.*` its UI pre-fills ("This
    /// pattern is the default value for the expiration regex") is a form
    /// default, not an implicit one.
    pub fn compile(
        name_regex_delete: Option<&str>,
        name_regex_keep: Option<&str>,
        keep_n: Option<usize>,
        older_than: Option<Duration>,
    ) -> Result<Rules> {
        Ok(Rules {
            name_regex: anchored("name_regex_delete", name_regex_delete)?,
            name_regex_keep: anchored("name_regex_keep", name_regex_keep)?,
            keep_n,
            older_than,
            keep_in_use: true,
        })
    }

    /// Rules from a CleanupPolicy; errors name its fields. keepN must be one of
    /// [`KEEP_N_CHOICES`] (the CRD schema says so too, but a standalone
    /// registry reads manifests no API server has validated). `enabled`,
    /// `cadence` and `dryRun` are the runner's business, not the rules'.
    pub fn from_spec(spec: &CleanupPolicySpec) -> Result<Rules> {
        let keep_n = match spec.keep_n {
            None => None,
            Some(n) if KEEP_N_CHOICES.contains(&n) => usize::try_from(n).ok(),
            Some(n) => return Err(RuleError::KeepN(n)),
        };
        Ok(Rules {
            name_regex: anchored("nameRegex", spec.name_regex.as_deref())?,
            name_regex_keep: anchored("nameRegexKeep", spec.name_regex_keep.as_deref())?,
            keep_n,
            older_than: spec.older_than.map(older_than_duration),
            keep_in_use: spec.keep_in_use,
        })
    }
}

/// Compiles `pattern` to match whole tag names only.
fn anchored(field: &'static str, pattern: Option<&str>) -> Result<Option<Regex>> {
    let Some(pattern) = pattern else {
        return Ok(None);
    };
    let err = |source| RuleError::Regex { field, source };
    // Alone first: a pattern that only parses inside the wrapper, such as
    // `a)|(?:b`, would otherwise escape the anchors.
    Regex::new(pattern).map_err(err)?;
    Regex::new(&format!(r"\A(?:{pattern})\z"))
        .map(Some)
        .map_err(err)
}

/// How often a policy runs: GitLab's cadences, a month being 30 days.
pub fn cadence_period(c: Cadence) -> Duration {
    let days = match c {
        Cadence::Daily => 1,
        Cadence::Weekly => 7,
        Cadence::Fortnightly => 14,
        Cadence::Monthly => 30,
        Cadence::Quarterly => 90,
    };
    Duration::from_secs(days * DAY)
}

fn older_than_duration(o: OlderThan) -> Duration {
    let days = match o {
        OlderThan::Days7 => 7,
        OlderThan::Days14 => 14,
        OlderThan::Days30 => 30,
        OlderThan::Days90 => 90,
    };
    Duration::from_secs(days * DAY)
}

/// One tag of a repository, as the policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagInfo<'a> {
    pub name: &'a str,
    /// Unix milliseconds (as the metadata database stores times): when the
    /// tag got its current manifest. GitLab sorts by `updated_at || created_at`
    /// of the tag where it has a metadata database.
    pub created_at: i64,
    /// The manifest digest the tag points at, asked of [`Guards::in_use`].
    pub digest: &'a str,
}

/// Facts from outside the policy. Each is asked only about tags that would
/// otherwise be deleted, so it may be as costly as a regex match.
#[derive(Clone, Copy)]
pub struct Guards<'a> {
    /// Is this tag name protected (a protected tag rule matches it)?
    pub protected: &'a dyn Fn(&str) -> bool,
    /// Is this tag name immutable (an immutable tag rule matches it)?
    pub immutable: &'a dyn Fn(&str) -> bool,
    /// Does a container in the cluster run this manifest digest now?
    pub in_use: &'a dyn Fn(&str) -> bool,
}

fn never(_: &str) -> bool {
    false
}

impl Guards<'static> {
    /// No protected or immutable tags, nothing running.
    pub const NONE: Guards<'static> = Guards {
        protected: &never,
        immutable: &never,
        in_use: &never,
    };
}

impl std::fmt::Debug for Guards<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Guards { .. }")
    }
}

/// Why a tag is kept, in the order the rules are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kept {
    /// It is `latest`.
    Latest,
    /// The delete regex does not match it (or there is none).
    NotMatched,
    /// The keep regex matches it.
    MatchedKeep,
    /// One of the keepN newest candidates.
    Newest,
    /// Not older than olderThan.
    TooNew,
    Protected,
    Immutable,
    /// Its digest runs in the cluster.
    InUse,
}

impl Kept {
    /// A stable label, for status and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Kept::Latest => "latest",
            Kept::NotMatched => "not_matched",
            Kept::MatchedKeep => "matched_keep",
            Kept::Newest => "newest",
            Kept::TooNew => "too_new",
            Kept::Protected => "protected",
            Kept::Immutable => "immutable",
            Kept::InUse => "in_use",
        }
    }
}

/// What happens to one tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    Delete,
    Keep(Kept),
}

impl Verdict {
    pub fn is_delete(self) -> bool {
        self == Verdict::Delete
    }
}

/// Decides every tag: `result[i]` is the verdict on `tags[i]`. `now` is unix
/// milliseconds. Tag names are unique within a repository; the result does
/// not depend on the order of `tags`. Allocates the result and one index list
/// of the candidates; keepN selects the N newest in linear time, without
/// sorting everything.
pub fn evaluate(
    tags: &[TagInfo<'_>],
    rules: &Rules,
    guards: &Guards<'_>,
    now: i64,
) -> Vec<Verdict> {
    let mut verdicts = Vec::with_capacity(tags.len());
    let mut candidates: Vec<usize> = Vec::with_capacity(match rules.name_regex {
        Some(_) => tags.len(),
        None => 0,
    });

    // Steps 1-3: by name.
    for (i, tag) in tags.iter().enumerate() {
        let verdict = if tag.name == LATEST {
            Verdict::Keep(Kept::Latest)
        } else if !rules
            .name_regex
            .as_ref()
            .is_some_and(|re| re.is_match(tag.name))
        {
            Verdict::Keep(Kept::NotMatched)
        } else if rules
            .name_regex_keep
            .as_ref()
            .is_some_and(|re| re.is_match(tag.name))
        {
            Verdict::Keep(Kept::MatchedKeep)
        } else {
            candidates.push(i);
            Verdict::Delete
        };
        verdicts.push(verdict);
    }

    // Step 4: the keepN newest candidates. Only the set matters, not its
    // order, so a selection does instead of a sort.
    let newest = rules.keep_n.unwrap_or(0).min(candidates.len());
    if newest > 0 && newest < candidates.len() {
        candidates.select_nth_unstable_by(newest, |&a, &b| {
            newest_first(&tags[a], &tags[b]).then(a.cmp(&b))
        });
    }
    let (newest, rest) = candidates.split_at(newest);
    for &i in newest {
        verdicts[i] = Verdict::Keep(Kept::Newest);
    }

    // Steps 5-7: per tag.
    let cutoff = rules
        .older_than
        .map(|d| now.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)));
    for &i in rest {
        let tag = &tags[i];
        let kept = if cutoff.is_some_and(|cutoff| tag.created_at >= cutoff) {
            Kept::TooNew
        } else if (guards.protected)(tag.name) {
            Kept::Protected
        } else if (guards.immutable)(tag.name) {
            Kept::Immutable
        } else if rules.keep_in_use && (guards.in_use)(tag.digest) {
            Kept::InUse
        } else {
            continue;
        };
        verdicts[i] = Verdict::Keep(kept);
    }
    verdicts
}

/// Newer first; at equal times the name that sorts first counts as newer.
fn newest_first(a: &TagInfo<'_>, b: &TagInfo<'_>) -> std::cmp::Ordering {
    b.created_at
        .cmp(&a.created_at)
        .then_with(|| a.name.cmp(b.name))
}

/// The tags `verdicts` deletes, in input order.
pub fn deletions<'s, 'a>(
    tags: &'s [TagInfo<'a>],
    verdicts: &'s [Verdict],
) -> impl Iterator<Item = &'s TagInfo<'a>> {
    tags.iter()
        .zip(verdicts)
        .filter(|(_, v)| v.is_delete())
        .map(|(t, _)| t)
}

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

/// Unit names (ASCII case ignored) and their length in seconds, as GitLab's
/// duration parser (ChronicDuration) reads them: `m` is minutes, a month is
/// 30 days, a year 365.25 days.
const UNITS: &[(&[&str], u64)] = &[
    (&["s", "sec", "secs", "second", "seconds"], 1),
    (&["m", "min", "mins", "minute", "minutes"], MINUTE),
    (&["h", "hr", "hrs", "hour", "hours"], HOUR),
    (&["d", "day", "days"], DAY),
    (&["w", "wk", "wks", "week", "weeks"], 7 * DAY),
    (&["mo", "mos", "month", "months"], 30 * DAY),
    (&["y", "yr", "yrs", "year", "years"], 31_557_600),
];

/// The bulk-delete API's free-form `older_than`: one or more `<integer><unit>`
/// parts, spaces allowed between and within them (`7d`, `1h`, `1month`,
/// `2 weeks`, `1h30m`). `None` for anything else. Stricter than GitLab on
/// purpose: a bare number (which ChronicDuration takes as seconds — `30`
/// would delete nearly everything) and fractions (`1.5h`) are refused.
pub fn parse_older_than(s: &str) -> Option<Duration> {
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = rest[digits..].trim_start();
        let letters = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..letters];
        let (_, seconds) = UNITS
            .iter()
            .find(|(names, _)| names.iter().any(|name| name.eq_ignore_ascii_case(unit)))?;
        total = total.checked_add(n.checked_mul(*seconds)?)?;
        rest = rest[letters..].trim_start();
    }
    Some(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;
    const DAY_MS: i64 = 86_400_000;

    /// (name, age in days, digest)
    type Row = (&'static str, i64, &'static str);

    fn tag_infos(rows: &[Row]) -> Vec<TagInfo<'static>> {
        rows.iter()
            .map(|&(name, days, digest)| TagInfo {
                name,
                created_at: NOW - days * DAY_MS,
                digest,
            })
            .collect()
    }

    fn deleted_with(rows: &[Row], rules: &Rules, guards: &Guards<'_>) -> Vec<&'static str> {
        let tags = tag_infos(rows);
        let verdicts = evaluate(&tags, rules, guards, NOW);
        deletions(&tags, &verdicts).map(|t| t.name).collect()
    }

    /// Rules as the API gives them, olderThan in days.
    fn rules(
        delete: Option<&str>,
        keep: Option<&str>,
        keep_n: Option<usize>,
        older_than_days: Option<u64>,
    ) -> Rules {
        Rules::compile(
            delete,
            keep,
            keep_n,
            older_than_days.map(|d| Duration::from_secs(d * DAY)),
        )
        .unwrap()
    }

    struct Case {
        what: &'static str,
        rules: Rules,
        tags: &'static [Row],
        deleted: &'static [&'static str],
    }

    fn check(cases: Vec<Case>) {
        for case in cases {
            let got = deleted_with(case.tags, &case.rules, &Guards::NONE);
            assert_eq!(got, case.deleted, "{}", case.what);
        }
    }

    const FIVE: &[Row] = &[
        ("a", 1, "sha256:a"),
        ("b", 2, "sha256:b"),
        ("c", 3, "sha256:c"),
        ("d", 4, "sha256:d"),
        ("e", 5, "sha256:e"),
    ];

    #[test]
    fn each_field_alone() {
        check(vec![
            Case {
                what: "no rules at all: nothing matches the (missing) delete regex",
                rules: rules(None, None, None, None),
                tags: FIVE,
                deleted: &[],
            },
            Case {
                what: "keepN and olderThan without a delete regex delete nothing",
                rules: rules(None, None, Some(0), Some(0)),
                tags: FIVE,
                deleted: &[],
            },
            Case {
                what: "nameRegex .* alone deletes every tag but latest",
                rules: rules(Some(".*"), None, None, None),
                tags: &[
                    ("latest", 0, "sha256:l"),
                    ("a", 1, "sha256:a"),
                    ("b", 9, "sha256:b"),
                ],
                deleted: &["a", "b"],
            },
            Case {
                what: "nameRegex selects what may be deleted",
                rules: rules(Some("v.+"), None, None, None),
                tags: &[
                    ("main", 9, "sha256:m"),
                    ("v1", 9, "sha256:1"),
                    ("v", 9, "sha256:v"),
                ],
                deleted: &["v1"],
            },
            Case {
                what: "nameRegexKeep alone deletes nothing",
                rules: rules(None, Some("main"), None, None),
                tags: FIVE,
                deleted: &[],
            },
            Case {
                what: "keepN 2 keeps the two newest",
                rules: rules(Some(".*"), None, Some(2), None),
                tags: FIVE,
                deleted: &["c", "d", "e"],
            },
            Case {
                what: "keepN larger than the candidates keeps all",
                rules: rules(Some(".*"), None, Some(10), None),
                tags: FIVE,
                deleted: &[],
            },
            Case {
                what: "keepN 0 keeps none",
                rules: rules(Some(".*"), None, Some(0), None),
                tags: FIVE,
                deleted: &["a", "b", "c", "d", "e"],
            },
            Case {
                what: "olderThan 3d: only tags strictly older than 3 days go",
                rules: rules(Some(".*"), None, None, Some(3)),
                tags: FIVE,
                deleted: &["d", "e"],
            },
            Case {
                what: "olderThan 0 keeps nothing back",
                rules: rules(Some(".*"), None, None, Some(0)),
                tags: FIVE,
                deleted: &["a", "b", "c", "d", "e"],
            },
            Case {
                what: "empty tag list",
                rules: rules(Some(".*"), Some("main"), Some(1), Some(7)),
                tags: &[],
                deleted: &[],
            },
        ]);
    }

    #[test]
    fn latest_is_never_deleted() {
        check(vec![
            Case {
                what: "latest survives a delete regex naming it",
                rules: rules(Some("latest|v1"), None, None, None),
                tags: &[("latest", 400, "sha256:l"), ("v1", 400, "sha256:1")],
                deleted: &["v1"],
            },
            Case {
                what: "latest survives keepN 0 and olderThan 0",
                rules: rules(Some(".*"), None, Some(0), Some(0)),
                tags: &[("latest", 400, "sha256:l")],
                deleted: &[],
            },
            Case {
                what: "latest does not use up keepN",
                rules: rules(Some(".*"), None, Some(1), None),
                tags: &[
                    ("latest", 0, "sha256:l"),
                    ("a", 1, "sha256:a"),
                    ("b", 2, "sha256:b"),
                ],
                deleted: &["b"],
            },
            Case {
                what: "only the exact name: tag names are case-sensitive",
                rules: rules(Some(".*"), None, None, None),
                tags: &[
                    ("latest", 9, "sha256:l"),
                    ("LATEST", 9, "sha256:u"),
                    ("latest-1", 9, "sha256:1"),
                ],
                deleted: &["LATEST", "latest-1"],
            },
        ]);
    }

    #[test]
    fn regexes_are_anchored_at_both_ends() {
        const NAMES: &[Row] = &[
            ("v", 9, "sha256:0"),
            ("v1", 9, "sha256:1"),
            ("v12", 9, "sha256:2"),
            ("v12x", 9, "sha256:3"),
            ("xv1", 9, "sha256:4"),
            ("1", 9, "sha256:5"),
            ("V1", 9, "sha256:6"),
        ];
        check(vec![
            Case {
                what: "`v` matches only v",
                rules: rules(Some("v"), None, None, None),
                tags: NAMES,
                deleted: &["v"],
            },
            Case {
                what: "`v1` matches neither v12 nor xv1",
                rules: rules(Some("v1"), None, None, None),
                tags: NAMES,
                deleted: &["v1"],
            },
            Case {
                what: "`.*1` must end in 1: not v12, not v12x",
                rules: rules(Some(".*1"), None, None, None),
                tags: NAMES,
                deleted: &["v1", "xv1", "1", "V1"],
            },
            Case {
                what: "`v.*` is case-sensitive and must start with v",
                rules: rules(Some("v.*"), None, None, None),
                tags: NAMES,
                deleted: &["v", "v1", "v12", "v12x"],
            },
            Case {
                what: "anchors wrap the whole alternation: `v|1` is not `^v|1$`",
                rules: rules(Some("v|1"), None, None, None),
                tags: NAMES,
                deleted: &["v", "1"],
            },
            Case {
                what: "anchors the user wrote are harmless",
                rules: rules(Some("^v1$"), None, None, None),
                tags: NAMES,
                deleted: &["v1"],
            },
            Case {
                what: "an empty regex matches no tag",
                rules: rules(Some(""), None, None, None),
                tags: NAMES,
                deleted: &[],
            },
            Case {
                what: "the keep regex is anchored too: `v1` keeps v1 only",
                rules: rules(Some(".*"), Some("v1"), None, None),
                tags: NAMES,
                deleted: &["v", "v12", "v12x", "xv1", "1", "V1"],
            },
        ]);
    }

    #[test]
    fn a_pattern_cannot_escape_the_anchors() {
        // `\A(?:a)|(?:b)\z` would compile and match any name starting with a.
        let err = Rules::compile(Some("a)|(?:b"), None, None, None).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("name_regex_delete is not a valid regular expression"),
            "{err}"
        );
    }

    #[test]
    fn keep_regex_and_interplay() {
        check(vec![
            Case {
                what: "nameRegexKeep wins over nameRegex",
                rules: rules(Some(".*"), Some("main|release-.*"), None, None),
                tags: &[
                    ("main", 90, "sha256:m"),
                    ("release-1", 90, "sha256:r"),
                    ("feature", 90, "sha256:f"),
                ],
                deleted: &["feature"],
            },
            Case {
                what: "nameRegexKeep .* makes it a no-op (GitLab's API doc)",
                rules: rules(Some(".*"), Some(".*"), Some(0), Some(0)),
                tags: FIVE,
                deleted: &[],
            },
            Case {
                what: "kept-by-regex tags do not use up keepN",
                rules: rules(Some(".*"), Some("main"), Some(1), None),
                tags: &[
                    ("main", 1, "sha256:m"),
                    ("f1", 2, "sha256:1"),
                    ("f2", 3, "sha256:2"),
                    ("f3", 4, "sha256:3"),
                ],
                deleted: &["f2", "f3"],
            },
            Case {
                what: "tags nameRegex does not match do not use up keepN",
                rules: rules(Some("v.+"), None, Some(1), None),
                tags: &[
                    ("main", 0, "sha256:m"),
                    ("v1", 1, "sha256:1"),
                    ("v2", 2, "sha256:2"),
                ],
                deleted: &["v2"],
            },
            Case {
                what: "keepN keeps old tags olderThan would delete",
                rules: rules(Some(".*"), None, Some(2), Some(30)),
                tags: &[
                    ("a", 100, "sha256:a"),
                    ("b", 200, "sha256:b"),
                    ("c", 300, "sha256:c"),
                ],
                deleted: &["c"],
            },
            Case {
                what: "olderThan keeps young tags beyond keepN",
                rules: rules(Some(".*"), None, Some(1), Some(30)),
                tags: &[
                    ("a", 1, "sha256:a"),
                    ("b", 2, "sha256:b"),
                    ("c", 3, "sha256:c"),
                    ("d", 40, "sha256:d"),
                ],
                deleted: &["d"],
            },
            Case {
                what: "olderThan boundary: exactly 7 days old is kept",
                rules: rules(Some(".*"), None, None, Some(7)),
                tags: &[
                    ("six", 6, "sha256:6"),
                    ("seven", 7, "sha256:7"),
                    ("eight", 8, "sha256:8"),
                ],
                deleted: &["eight"],
            },
            Case {
                what: "GitLab's worked example (keep 1, keep production-.*, older than 7d, remove .*)",
                rules: rules(Some(".*"), Some("production-.*"), Some(1), Some(7)),
                tags: GITLAB_EXAMPLE,
                deleted: &["dev-v42", "v43", "v42"],
            },
        ]);
    }

    /// From GitLab's "Example cleanup policy workflow"; `latest` was pushed 2
    /// hours ago, `v44` yesterday.
    const GITLAB_EXAMPLE: &[Row] = &[
        ("latest", 0, "sha256:0"),
        ("production-v44", 3, "sha256:1"),
        ("production-v43", 6, "sha256:2"),
        ("production-v42", 11, "sha256:3"),
        ("dev-v44", 2, "sha256:4"),
        ("dev-v43", 5, "sha256:5"),
        ("dev-v42", 10, "sha256:6"),
        ("v44", 1, "sha256:7"),
        ("v43", 12, "sha256:8"),
        ("v42", 20, "sha256:9"),
    ];

    #[test]
    fn every_verdict_names_the_first_rule_that_kept_the_tag() {
        use Kept::*;
        let tags = tag_infos(GITLAB_EXAMPLE);
        let rules = rules(Some(".*"), Some("production-.*"), Some(1), Some(7));
        let verdicts = evaluate(&tags, &rules, &Guards::NONE, NOW);
        let want = [
            Verdict::Keep(Latest),
            Verdict::Keep(MatchedKeep),
            Verdict::Keep(MatchedKeep),
            Verdict::Keep(MatchedKeep),
            Verdict::Keep(TooNew),
            Verdict::Keep(TooNew),
            Verdict::Delete,
            Verdict::Keep(Newest),
            Verdict::Delete,
            Verdict::Delete,
        ];
        assert_eq!(verdicts, want);
    }

    fn starts_with_v1(name: &str) -> bool {
        name.starts_with("v1")
    }
    fn is_stable(name: &str) -> bool {
        name == "stable"
    }
    fn runs(digest: &str) -> bool {
        digest == "sha256:running"
    }

    /// (what, guards, rules, tags, expected deletions)
    type GuardCase<'g> = (
        &'static str,
        &'g Guards<'g>,
        &'g Rules,
        &'g [Row],
        &'g [&'g str],
    );

    #[test]
    fn guards() {
        let protected = Guards {
            protected: &starts_with_v1,
            ..Guards::NONE
        };
        let immutable = Guards {
            immutable: &is_stable,
            ..Guards::NONE
        };
        let running = Guards {
            in_use: &runs,
            ..Guards::NONE
        };
        let all = rules(Some(".*"), None, None, None);
        let mut no_keep_in_use = all.clone();
        no_keep_in_use.keep_in_use = false;
        let keep_1 = rules(Some(".*"), None, Some(1), None);
        let only_a = rules(Some("a"), None, None, None);

        const SHARED: &[Row] = &[
            ("a", 9, "sha256:running"),
            ("b", 8, "sha256:running"),
            ("c", 7, "sha256:idle"),
        ];
        #[rustfmt::skip]
        let cases: [GuardCase<'_>; 7] = [
            ("protected tags are kept", &protected, &all,
             &[("v1", 9, "sha256:1"), ("v10", 9, "sha256:2"), ("v2", 9, "sha256:3")], &["v2"]),
            ("immutable tags are kept", &immutable, &all,
             &[("stable", 9, "sha256:s"), ("edge", 9, "sha256:e")], &["edge"]),
            ("two tags of a running digest are both kept", &running, &all, SHARED, &["c"]),
            ("keepInUse off: running digests are no shield", &running, &no_keep_in_use, SHARED,
             &["a", "b", "c"]),
            ("a protected tag among the keepN newest takes a place", &protected, &keep_1,
             &[("v1", 1, "sha256:1"), ("b", 2, "sha256:b"), ("c", 3, "sha256:c")], &["b", "c"]),
            ("a protected tag beyond keepN is kept, others go", &protected, &keep_1,
             &[("a", 1, "sha256:a"), ("v1", 2, "sha256:1"), ("c", 3, "sha256:c")], &["c"]),
            ("guards only shield candidates", &protected, &only_a,
             &[("a", 1, "sha256:a"), ("v1", 2, "sha256:1")], &["a"]),
        ];
        for (what, guards, rules, rows, want) in cases {
            assert_eq!(deleted_with(rows, rules, guards), want, "{what}");
        }

        // The first guard that applies is the reason given.
        let everything = Guards {
            protected: &|_| true,
            immutable: &|_| true,
            in_use: &|_| true,
        };
        let tags = tag_infos(&[("v1", 9, "sha256:1")]);
        let verdicts = evaluate(&tags, &all, &everything, NOW);
        assert_eq!(verdicts, [Verdict::Keep(Kept::Protected)]);
        let verdicts = evaluate(
            &tags,
            &all,
            &Guards {
                protected: &never,
                ..everything
            },
            NOW,
        );
        assert_eq!(verdicts, [Verdict::Keep(Kept::Immutable)]);
    }

    #[test]
    fn ties_in_creation_time_are_broken_by_name() {
        let keep_1 = rules(Some(".*"), None, Some(1), None);
        let keep_2 = rules(Some(".*"), None, Some(2), None);
        #[rustfmt::skip]
        let cases: [(&str, &Rules, &[Row], &[&str]); 4] = [
            ("two of an age: the first name is kept", &keep_1,
             &[("a", 5, "sha256:a"), ("b", 5, "sha256:b")], &["b"]),
            ("the same, listed the other way round", &keep_1,
             &[("b", 5, "sha256:b"), ("a", 5, "sha256:a")], &["b"]),
            ("a tie across the keepN boundary", &keep_2,
             &[("z", 5, "sha256:z"), ("new", 1, "sha256:n"), ("y", 5, "sha256:y"), ("x", 5, "sha256:x")],
             &["z", "y"]),
            ("a newer tag beats a name that sorts first", &keep_1,
             &[("a", 5, "sha256:a"), ("b", 4, "sha256:b")], &["a"]),
        ];
        for (what, rules, rows, want) in cases {
            assert_eq!(deleted_with(rows, rules, &Guards::NONE), want, "{what}");
        }
    }

    #[test]
    fn result_does_not_depend_on_input_order() {
        let rules = rules(Some(".*"), Some("production-.*"), Some(1), Some(7));
        let mut rows = GITLAB_EXAMPLE.to_vec();
        for rotation in 0..rows.len() {
            rows.rotate_left(1);
            rows.swap(0, rotation);
            let mut got = deleted_with(&rows, &rules, &Guards::NONE);
            got.sort_unstable();
            assert_eq!(got, ["dev-v42", "v42", "v43"], "order {rows:?}");
        }
    }

    fn spec(yaml: &str) -> CleanupPolicySpec {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn rules_from_a_cleanup_policy() {
        for (older_than, days) in [("7d", 7), ("14d", 14), ("30d", 30), ("90d", 90)] {
            let r = Rules::from_spec(&spec(&format!(
                "projectRef: {{name: p}}\nolderThan: {older_than}"
            )))
            .unwrap();
            assert_eq!(r.older_than, Some(Duration::from_secs(days * DAY)));
        }

        let r = Rules::from_spec(&spec("projectRef: {name: p}")).unwrap();
        assert!(r.keep_in_use, "keepInUse is on by default");
        assert_eq!((r.keep_n, r.older_than), (None, None));
        assert_eq!(deleted_with(FIVE, &r, &Guards::NONE), [] as [&str; 0]);

        let r = Rules::from_spec(&spec(
            "projectRef: {name: p}\nkeepN: 10\nnameRegex: '.*'\nnameRegexKeep: main\nkeepInUse: false",
        ))
        .unwrap();
        assert_eq!(r.keep_n, Some(10));
        assert!(!r.keep_in_use);
        assert!(r.name_regex.as_ref().unwrap().is_match("x"));
        assert!(!r.name_regex_keep.as_ref().unwrap().is_match("mainx"));

        for (yaml, error) in [
            (
                "keepN: 3",
                "keepN must be one of 1, 5, 10, 25, 50 or 100, not 3",
            ),
            (
                "keepN: -1",
                "keepN must be one of 1, 5, 10, 25, 50 or 100, not -1",
            ),
            (
                "nameRegex: '('",
                "nameRegex is not a valid regular expression",
            ),
            (
                "nameRegexKeep: 'a)|(b'",
                "nameRegexKeep is not a valid regular expression",
            ),
        ] {
            let err = Rules::from_spec(&spec(&format!("projectRef: {{name: p}}\n{yaml}")))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(error), "{yaml}: {err}");
        }
    }

    #[test]
    fn api_errors_name_the_api_parameters() {
        let err = Rules::compile(None, Some("["), None, None).unwrap_err();
        assert!(matches!(
            err,
            RuleError::Regex {
                field: "name_regex_keep",
                ..
            }
        ));
        let err = Rules::compile(Some("*"), None, None, None).unwrap_err();
        assert!(matches!(
            err,
            RuleError::Regex {
                field: "name_regex_delete",
                ..
            }
        ));
        assert!(Rules::compile(None, None, None, None).unwrap().keep_in_use);
    }

    #[test]
    fn older_than_free_form() {
        let d = |days: u64| Some(Duration::from_secs(days * DAY));
        let s = |secs: u64| Some(Duration::from_secs(secs));
        #[rustfmt::skip]
        let cases: &[(&str, Option<Duration>)] = &[
            ("7d", d(7)), ("14d", d(14)), ("30d", d(30)), ("90d", d(90)),
            ("1h", s(HOUR)), ("2d", d(2)), ("1month", d(30)), ("3months", d(90)),
            ("1 month", d(30)), ("1mo", d(30)), ("2w", d(14)), ("1week", d(7)),
            ("1y", s(31_557_600)), ("90m", s(90 * MINUTE)), ("10s", s(10)),
            ("1h30m", s(HOUR + 30 * MINUTE)), ("1d 12h", s(DAY + 12 * HOUR)),
            (" 2d ", d(2)), ("1D", d(1)), ("1Month", d(30)), ("0d", d(0)),
            ("", None), ("  ", None), ("d", None), ("7", None), ("7x", None),
            ("-1d", None), ("+1d", None), ("1.5h", None), ("7dd", None), ("1d-", None),
            ("1d2", None), ("month", None), ("99999999999999999999d", None),
            ("999999999999999y", None), ("1 ½d", None),
        ];
        for &(input, want) in cases {
            assert_eq!(parse_older_than(input), want, "{input:?}");
        }
    }

    #[test]
    fn kept_labels_are_distinct() {
        use Kept::*;
        let all = [
            Latest,
            NotMatched,
            MatchedKeep,
            Newest,
            TooNew,
            Protected,
            Immutable,
            InUse,
        ];
        let mut labels: Vec<_> = all.iter().map(|k| k.as_str()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), all.len());
    }
}
