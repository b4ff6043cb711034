//! Tag lifecycle: which tags a cleanup policy or a bulk delete removes.
//!
//! Decisions only, as pure functions over plain values. This module owns the
//! semantics; it must not touch the metadata database, the blob store or
//! Kubernetes — whoever runs a policy lists the tags, asks [`policy::evaluate`]
//! and performs the deletions itself. [`spec`] is a policy as declared (the
//! spec the `CleanupPolicy` custom resource wraps), [`report`] the plain
//! values a run is asked and answers.

pub mod policy;
pub mod report;
pub mod spec;
