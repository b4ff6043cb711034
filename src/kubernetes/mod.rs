//! The Kubernetes adapters, the only part of berth that imports `kube` and
//! `k8s_openapi`:
//! - [`crd`]: the custom resources (`Registry`, and the kube wrappers of the
//!   core's project and cleanup policy specs) and their CRD YAML;
//! - [`projects`]: in-cluster mode of `berth serve`, the access model from
//!   watched `Project`s and token Secrets, ServiceAccount tokens by TokenReview;
//! - [`operator`]: `berth operator`, which reconciles the custom resources
//!   into registry pods and drives their cleanup and garbage collection
//!   through the registries' management API.
//!
//! The standalone adapter beside it reads the same specs from a manifest
//! directory (`crate::auth::directory`) and runs cleanup policies itself
//! (`crate::server::scheduler`). Nothing in the core (oci, storage, metadata,
//! auth, lifecycle, registry) imports this module; `.ci/layering.py` checks.

pub mod crd;
pub mod operator;
pub mod projects;
