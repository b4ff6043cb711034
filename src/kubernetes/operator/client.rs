//! The operator's client for a registry's HTTP API. It signs its own
//! short-lived tokens with the Registry's signing key (which the operator
//! made and owns), so no admin password is stored anywhere.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;

use super::children::{self, Names, SIGNING_KEY};
use super::{Connect, Context, Error};
use crate::auth::token::{Access, TokenService};
use crate::kubernetes::crd::Registry;
use crate::lifecycle::report::{CleanupReport, CleanupRequest};
use crate::registry::api::{GcStatus, SweepCounts};

pub struct RegistryClient {
    base: String,
    tokens: TokenService,
    http: reqwest::Client,
}

impl RegistryClient {
    pub async fn new(reg: &Registry, ctx: &Context) -> Result<RegistryClient, Error> {
        let ns = reg.namespace().unwrap_or_default();
        let secret = Api::<Secret>::namespaced(ctx.client.clone(), &ns)
            .get(&Names::of(reg).signing_key)
            .await?;
        let pem = secret
            .data
            .as_ref()
            .and_then(|d| d.get(SIGNING_KEY))
            .ok_or_else(|| Error::Reconcile("the signing key Secret has no key.pem".into()))?;
        let config = children::serve_config(reg);
        let tokens = TokenService::from_pem(
            &pem.0,
            &config.auth.issuer,
            &config.auth.service,
            Duration::from_secs(120),
        )
        .map_err(Error::Reconcile)?;
        let host = match ctx.settings.connect {
            Connect::Service => children::service_host(reg),
            Connect::PublicHost => children::endpoint(reg),
        };
        let mut http = reqwest::Client::builder().timeout(Duration::from_secs(60));
        let scheme = match children::tls_secret(reg) {
            None => "http",
            Some(name) => {
                // The pods' certificate is checked against the system's roots
                // and the CA the TLS Secret carries (`ca.crt`: cert-manager
                // writes it; a private CA's Secret should have it).
                let tls = Api::<Secret>::namespaced(ctx.client.clone(), &ns)
                    .get_opt(&name)
                    .await?;
                if let Some(ca) = tls
                    .as_ref()
                    .and_then(|s| s.data.as_ref())
                    .and_then(|d| d.get("ca.crt"))
                    .filter(|ca| !ca.0.is_empty())
                {
                    for cert in reqwest::Certificate::from_pem_bundle(&ca.0).map_err(|e| {
                        Error::Reconcile(format!("Secret {name}: ca.crt is not PEM: {e}"))
                    })? {
                        http = http.add_root_certificate(cert);
                    }
                }
                "https"
            }
        };
        Ok(RegistryClient {
            base: format!("{scheme}://{host}"),
            tokens,
            http: http.build().map_err(|e| Error::Reconcile(e.to_string()))?,
        })
    }

    fn token(&self, access: Vec<Access>) -> Result<String, Error> {
        Ok(self
            .tokens
            .issue("admin", access)
            .map_err(Error::Reconcile)?
            .0)
    }

    fn failed(what: &str, e: impl std::fmt::Display) -> Error {
        Error::Registry(format!("{what}: {e}"))
    }

    /// The token of the instance admin: what the management API's admin
    /// calls (garbage collection, cleanup runs) check for.
    fn admin_token(&self) -> Result<String, Error> {
        self.token(vec![Access {
            kind: "registry".into(),
            name: "catalog".into(),
            actions: vec!["*".into()],
        }])
    }

    /// The body of a successful answer as JSON, or an error with the status
    /// and the start of the body.
    async fn json<T: serde::de::DeserializeOwned>(
        what: &str,
        resp: reqwest::Response,
    ) -> Result<T, Error> {
        let status = resp.status();
        if !status.is_success() {
            let mut body = resp.text().await.unwrap_or_default();
            super::clip(&mut body, 300);
            return Err(Self::failed(what, format!("{status}: {body}")));
        }
        resp.json().await.map_err(|e| Self::failed(what, e))
    }

    /// `GET /api/v1/gc`: pending reviews, last sweep, totals deleted.
    pub async fn gc_status(&self) -> Result<GcStatus, Error> {
        let what = "reading garbage collection figures";
        let resp = self
            .http
            .get(format!("{}/api/v1/gc", self.base))
            .bearer_auth(self.admin_token()?)
            .send()
            .await
            .map_err(|e| Self::failed(what, e))?;
        Self::json(what, resp).await
    }

    /// `POST /api/v1/gc/sweep`: one sweep of what is due now.
    pub async fn gc_sweep(&self) -> Result<SweepCounts, Error> {
        let what = "running a garbage collection sweep";
        let resp = self
            .http
            .post(format!("{}/api/v1/gc/sweep", self.base))
            .bearer_auth(self.admin_token()?)
            .send()
            .await
            .map_err(|e| Self::failed(what, e))?;
        Self::json(what, resp).await
    }

    /// `POST /api/v1/projects/<path, URL-encoded>/cleanup`: runs a cleanup
    /// policy over the project's repositories. A project the registry does
    /// not know (404 with the registry's error body) has no repositories: an
    /// empty report. A bare 404 (a registry without this API) is an error,
    /// never a silent "nothing deleted".
    pub async fn cleanup(
        &self,
        project: &str,
        request: &CleanupRequest,
    ) -> Result<CleanupReport, Error> {
        let what = format!("running the cleanup policy on project {project}");
        let resp = self
            .http
            .post(cleanup_url(&self.base, project))
            .bearer_auth(self.admin_token()?)
            .json(request)
            .send()
            .await
            .map_err(|e| Self::failed(&what, e))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            let body = resp.text().await.unwrap_or_default();
            if !is_registry_error(&body) {
                return Err(Self::failed(
                    &what,
                    "404 without a registry error: this registry has no cleanup API (an older berth?)",
                ));
            }
            return Ok(CleanupReport {
                dry_run: request.policy.dry_run,
                ..CleanupReport::default()
            });
        }
        Self::json(&what, resp).await
    }

    /// Every repository name, following `Link` pages.
    pub async fn catalog(&self) -> Result<Vec<String>, Error> {
        let token = self.token(vec![Access {
            kind: "registry".into(),
            name: "catalog".into(),
            actions: vec!["*".into()],
        }])?;
        let mut repos = Vec::new();
        let mut next = Some(format!("{}/v2/_catalog?n=1000", self.base));
        while let Some(url) = next.take() {
            let resp = self
                .http
                .get(&url)
                .bearer_auth(&token)
                .send()
                .await
                .map_err(|e| Self::failed("listing repositories", e))?;
            if !resp.status().is_success() {
                return Err(Self::failed("listing repositories", resp.status()));
            }
            next = resp
                .headers()
                .get("link")
                .and_then(|l| l.to_str().ok())
                .and_then(|l| l.split(';').next())
                .map(|l| {
                    format!(
                        "{}{}",
                        self.base,
                        l.trim().trim_matches(|c| c == '<' || c == '>')
                    )
                });
            let body: serde_json::Value = resp
                .json()
                .await
                .map_err(|e| Self::failed("listing repositories", e))?;
            repos.extend(
                body["repositories"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r.as_str().map(String::from)),
            );
        }
        Ok(repos)
    }

    pub async fn delete_repository(&self, repo: &str) -> Result<(), Error> {
        let token = self.token(vec![Access {
            kind: "repository".into(),
            name: repo.into(),
            actions: vec!["delete".into()],
        }])?;
        let resp = self
            .http
            .delete(format!(
                "{}/api/v1/repositories/{repo}?project_deleted=true",
                self.base
            ))
            .bearer_auth(&token)
            .send()
            .await
            .map_err(|e| Self::failed(&format!("deleting {repo}"), e))?;
        match resp.status().as_u16() {
            204 | 404 => Ok(()),
            s => Err(Self::failed(&format!("deleting {repo}"), s)),
        }
    }
}

/// Whether a body is the registry's JSON error (`{"errors": [...]}`): a
/// 404 with one is an unknown project; a bare 404 is a path the registry
/// does not serve at all.
fn is_registry_error(body: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("errors")?.as_array().map(|a| !a.is_empty()))
        .unwrap_or(false)
}

/// The cleanup URL of a project: its path is one URL segment (`a/b` →
/// `a%2Fb`), as GitLab's API takes project paths.
fn cleanup_url(base: &str, project: &str) -> String {
    let encoded: String = form_urlencoded::byte_serialize(project.as_bytes()).collect();
    format!("{base}/api/v1/projects/{encoded}/cleanup")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_registry_error_means_an_unknown_project() {
        assert!(is_registry_error(
            r#"{"errors":[{"code":"NAME_UNKNOWN","message":"project demo/x is unknown"}]}"#
        ));
        assert!(!is_registry_error(""));
        assert!(!is_registry_error("404 page not found"));
        assert!(!is_registry_error(r#"{"errors":[]}"#));
        assert!(!is_registry_error(r#"{"message":"not found"}"#));
    }

    #[test]
    fn project_paths_are_one_url_segment() {
        assert_eq!(
            cleanup_url("http://reg:5000", "group/sub.x/app_1-b"),
            "http://reg:5000/api/v1/projects/group%2Fsub.x%2Fapp_1-b/cleanup"
        );
    }
}
