//! berth: a container registry for Kubernetes, run by its own operator.
//!
//! Modules, from the bottom up:
//! - [`oci`]: digests, names, manifests: pure, no I/O;
//! - [`storage`]: content-addressed blob store behind a small trait;
//! - [`metadata`]: repositories, manifests, tags and links in a database;
//! - [`registry`]: the OCI Distribution API over HTTP, on top of the two;
//! - [`lifecycle`]: cleanup policy evaluation (pure); [`gc`]: online garbage
//!   collection sweeps; [`fsck`]: the offline check;
//! - [`config`], [`observability`], [`server`]: running `berth serve`;
//!   [`scheduler`]: cleanup policies of a standalone registry.
//!
//! The `registry` module never depends on Kubernetes: the cluster reaches it
//! only through the access model (`auth::cluster`) and the operator ([`crd`],
//! [`operator`]).
#![forbid(unsafe_code)]

pub mod auth;
pub mod config;
pub mod crd;
pub mod fsck;
pub mod gc;
pub mod lifecycle;
pub mod metadata;
pub mod observability;
pub mod oci;
pub mod operator;
pub mod registry;
pub mod scheduler;
pub mod server;
pub mod storage;
