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
use crate::crd::Registry;

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
        Ok(RegistryClient {
            base: format!("http://{host}"),
            tokens,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .map_err(|e| Error::Reconcile(e.to_string()))?,
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
