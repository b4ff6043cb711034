//! berth: a container registry for Kubernetes, run by its own operator.
//!
//! Modules, from the bottom up (ARCHITECTURE.md has the map):
//! - [`config`]: the configuration file's shape; a leaf, imports nothing;
//! - the core, which never imports Kubernetes: [`oci`] (digests, names,
//!   manifests: pure), [`storage`] (content-addressed blob store behind a small
//!   trait), [`metadata`] (repositories, manifests, tags and links in a
//!   database), [`auth`] (the access model and tokens), [`lifecycle`] (cleanup
//!   policies: specs and pure evaluation), [`registry`] (the OCI Distribution
//!   API, the management API and web UI over HTTP, garbage collection sweeps);
//! - the adapters: [`server`] runs `berth serve` (standalone: manifest
//!   directory and its cleanup scheduler), [`kubernetes`] holds the CRDs, the
//!   in-cluster source of projects and tokens, and the operator; [`fsck`] is
//!   the offline check; [`observability`] logs and metrics.
//!
//! `.ci/layering.py` fails CI when a core module reaches `kube`,
//! `k8s_openapi` or [`kubernetes`], or when modules import in a circle.
// One measured exception: the memory map blob downloads are served from
// (`storage::fs::map_blob`; figures in its comment).
#![deny(unsafe_code)]

pub mod auth;
pub mod config;
pub mod fsck;
pub mod kubernetes;
pub mod lifecycle;
pub mod metadata;
pub mod observability;
pub mod oci;
pub mod registry;
pub mod server;
pub mod signal;
pub mod storage;
