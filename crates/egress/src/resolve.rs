//! DNS resolvers that check every address before a connection is made to it, for the two
//! HTTP stacks Courier talks to tenants' hosts with: the AWS SDK's (S3 destinations,
//! connection tests) and reqwest (`rowsUrl` fetches).
//!
//! The check happens at connect time, on the very addresses the connection will use, so a
//! name that resolved to a public address when a destination was saved and to a private
//! one later (DNS rebinding) is refused then. A name that resolves to several addresses is
//! refused if any of them is: a mixed answer is an attack, not a configuration.
//!
//! Hosts written as address literals never reach a resolver; [`EgressPolicy::check_literal`]
//! checks those before a client is built.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::dns::{DnsFuture, ResolveDns, ResolveDnsError};
use aws_smithy_runtime_api::client::http::SharedHttpClient;

use crate::policy::EgressPolicy;

/// Resolves names for connections to one port, and refuses what the policy refuses.
#[derive(Debug, Clone)]
pub struct CheckedResolver {
    policy: Arc<EgressPolicy>,
    /// The port the connection will be made to (allow-list entries can name one port).
    port: u16,
}

impl CheckedResolver {
    pub fn new(policy: Arc<EgressPolicy>, port: u16) -> Self {
        Self { policy, port }
    }

    /// Resolves `host` and checks every address.
    pub async fn resolve(&self, host: &str) -> std::io::Result<Vec<SocketAddr>> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, self.port)).await?.collect();
        for addr in &addrs {
            if let Err(refused) = self.policy.check(host, *addr) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    refused,
                ));
            }
        }
        Ok(addrs)
    }
}

impl ResolveDns for CheckedResolver {
    fn resolve_dns<'a>(&'a self, name: &'a str) -> DnsFuture<'a> {
        DnsFuture::new(async move {
            self.resolve(name)
                .await
                .map(|addrs| addrs.into_iter().map(|a| a.ip()).collect::<Vec<IpAddr>>())
                .map_err(ResolveDnsError::new)
        })
    }
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let this = self.clone();
        Box::pin(async move {
            let addrs = this.resolve(name.as_str()).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// An HTTPS client for the AWS SDK whose connections go only where `policy` allows, to a
/// store at `port`. No proxy: a proxy would connect on the tenant's behalf unchecked.
pub fn aws_http_client(policy: Arc<EgressPolicy>, port: u16) -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
        .build_with_resolver(CheckedResolver::new(policy, port))
}

/// A reqwest client builder whose connections go only where `policy` allows, for URLs on
/// `port`. Redirects are not followed (a redirect could lead anywhere; a reference must
/// name where its rows are) and no proxy is used.
pub fn reqwest_builder(policy: Arc<EgressPolicy>, port: u16) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .dns_resolver(Arc::new(CheckedResolver::new(policy, port)))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
}

/// The refusal behind an error of either HTTP stack, if it was one.
pub fn find_refusal<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a crate::EgressRefused> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<crate::EgressRefused>() {
            return Some(r);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(r) = inner.downcast_ref::<crate::EgressRefused>()
        {
            return Some(r);
        }
        cur = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused_unless_allowed() {
        let strict = Arc::new(EgressPolicy::public_only());
        let err = CheckedResolver::new(strict, 3900)
            .resolve("localhost")
            .await
            .unwrap_err();
        let refused = find_refusal(&err).expect("the refusal is in the error");
        assert_eq!(refused.host, "localhost");
        assert_eq!(refused.purpose, "loopback");

        let allowing =
            Arc::new(EgressPolicy::from_settings("127.0.0.1:3900,[::1]:3900", false).unwrap());
        let addrs = CheckedResolver::new(allowing.clone(), 3900)
            .resolve("localhost")
            .await
            .unwrap();
        assert!(
            addrs
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 3900)
        );
        // The same name on another port is not allowed.
        CheckedResolver::new(allowing, 3901)
            .resolve("localhost")
            .await
            .unwrap_err();
    }

    #[tokio::test]
    async fn reqwest_refuses_at_connect_time_and_says_why() {
        // Nothing listens there; the refusal comes before any connection attempt.
        let policy = Arc::new(EgressPolicy::public_only());
        let client = reqwest_builder(policy, 9).build().unwrap();
        let err = client
            .get("http://localhost:9/rows.ndjson")
            .send()
            .await
            .unwrap_err();
        let refused = find_refusal(&err).expect("the refusal is in the error chain");
        assert_eq!(refused.purpose, "loopback");
    }
}
