//! The control API as the bench calls it, and the workers' `/metrics`.

use std::time::Duration;

use anyhow::{Context, bail};
use courier_core::{Compression, Format};
use courier_test_support::S3Key;
use serde_json::{Value, json};

/// An HTTP client for one `courier api`, with the bench's token.
#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

/// A refused request: the status and the body the API sent.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: Value,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}: {}", self.status, self.body)
    }
}

impl std::error::Error for Refused {}

impl Refused {
    /// The API's `error.message`, and each `fields[].field: message`.
    pub fn reason(&self) -> String {
        let err = &self.body["error"];
        let mut out = err["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| self.body.to_string());
        for f in err["fields"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "; {}: {}",
                f["field"].as_str().unwrap_or("?"),
                f["message"].as_str().unwrap_or("?")
            ));
        }
        format!("HTTP {}: {out}", self.status)
    }
}

impl Api {
    pub fn new(base: &str, token: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .build()
            .expect("reqwest client");
        Api {
            http,
            base: base.to_owned(),
            token: token.to_owned(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Whether a GET of `url` (any URL, without the token) answers 2xx.
    pub async fn get_ok(&self, url: &str) -> bool {
        matches!(self.http.get(url).send().await, Ok(r) if r.status().is_success())
    }

    /// The body of a GET of `url` (without the token).
    pub async fn get_text(&self, url: &str) -> anyhow::Result<String> {
        let resp = self.http.get(url).send().await?.error_for_status()?;
        Ok(resp.text().await?)
    }

    /// POSTs `body` to `path`; the JSON answer if the status is `expected`, else [`Refused`].
    pub async fn post(&self, path: &str, body: Vec<u8>, expected: u16) -> anyhow::Result<Value> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status != expected {
            return Err(Refused { status, body }.into());
        }
        Ok(body)
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await?;
        if status != 200 {
            return Err(Refused { status, body }.into());
        }
        Ok(body)
    }

    /// Creates an active S3 destination on the shared Garage; returns its id.
    pub async fn create_destination(
        &self,
        garage_endpoint: &str,
        bucket: &str,
        key: &S3Key,
        path_prefix: &str,
        format: Format,
        compression: Compression,
    ) -> anyhow::Result<String> {
        let body = json!({
            "type": "S3",
            "name": format!("bench {path_prefix}"),
            "s3": {
                "bucket": bucket,
                "region": courier_test_support::GARAGE_REGION,
                "accessKeyId": key.id,
                "secretAccessKey": key.secret,
                "endpointUrl": garage_endpoint,
                "pathPrefix": path_prefix,
            },
            "format": format,
            "compression": compression,
            "status": "ACTIVE",
        });
        let created = self
            .post(
                "/api/v1/delivery-destinations",
                body.to_string().into(),
                201,
            )
            .await
            .context("creating a destination")?;
        id_of(&created)
    }

    /// Enqueues one job; returns the delivery id.
    pub async fn enqueue(&self, body: Vec<u8>) -> anyhow::Result<String> {
        let accepted = self.post("/api/v1/deliveries", body, 202).await?;
        id_of(&accepted)
    }
}

fn id_of(body: &Value) -> anyhow::Result<String> {
    match body["id"].as_str() {
        Some(id) => Ok(id.to_owned()),
        None => bail!("no `id` in {body}"),
    }
}

/// `courier_deliveries_total` of one or more workers, by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Outcomes {
    pub delivered: u64,
    pub retried: u64,
    /// Dead-lettered or held: these never complete on their own.
    pub stuck: u64,
}

impl Outcomes {
    /// Sums the `courier_deliveries_total` lines of a Prometheus text page.
    pub fn add_page(&mut self, text: &str) {
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("courier_deliveries_total{") else {
                continue;
            };
            let Some((labels, value)) = rest.rsplit_once(' ') else {
                continue;
            };
            let n = value.trim().parse::<f64>().unwrap_or(0.0) as u64;
            if labels.contains(r#"outcome="delivered""#) {
                self.delivered += n;
            } else if labels.contains(r#"outcome="retried""#) {
                self.retried += n;
            } else if labels.contains(r#"outcome="dead""#) || labels.contains(r#"outcome="parked""#)
            {
                self.stuck += n;
            }
        }
    }
}

/// The summed outcomes of the workers at `metrics_urls`.
pub async fn outcomes(api: &Api, metrics_urls: &[String]) -> anyhow::Result<Outcomes> {
    let mut total = Outcomes::default();
    for url in metrics_urls {
        let page = api
            .get_text(&format!("{url}/metrics"))
            .await
            .with_context(|| format!("scraping {url}/metrics (did the worker exit?)"))?;
        total.add_page(&page);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_outcomes_across_formats() {
        let mut o = Outcomes::default();
        o.add_page(
            "# TYPE courier_deliveries_total counter\n\
             courier_deliveries_total{outcome=\"delivered\",format=\"csv\"} 12\n\
             courier_deliveries_total{outcome=\"delivered\",format=\"json\"} 3\n\
             courier_deliveries_total{outcome=\"retried\",format=\"csv\"} 1\n\
             courier_deliveries_total{outcome=\"dead\",format=\"csv\"} 0\n\
             courier_delivery_attempts_total{outcome=\"success\",class=\"none\"} 15\n",
        );
        assert_eq!(
            o,
            Outcomes {
                delivered: 15,
                retried: 1,
                stuck: 0
            }
        );
    }
}
