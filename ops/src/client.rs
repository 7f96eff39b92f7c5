//! The CLI's side of the admin API: where the node is, and plain requests
//! with readable errors (above all: the node is not running).

use std::net::SocketAddr;

use anyhow::{anyhow, bail};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub struct AdminClient {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl AdminClient {
    pub fn new(addr: SocketAddr, token: Option<String>) -> AdminClient {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(10)))
            .build();
        AdminClient { base: format!("http://{addr}"), token, agent: config.into() }
    }

    fn unreachable(&self, error: ureq::Error) -> anyhow::Error {
        anyhow!("cannot reach the node's admin API at {} ({error}); is `magicmx run` running?", self.base)
    }

    fn check(&self, response: &mut ureq::http::Response<ureq::Body>) -> anyhow::Result<()> {
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.body_mut().read_to_string().unwrap_or_default();
        if status == 401 {
            bail!("the admin API wants a token (admin.token in the configuration; pass --config)");
        }
        bail!("{}: {}", status, text.trim())
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let mut request = self.agent.get(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let mut response = request.call().map_err(|e| self.unreachable(e))?;
        self.check(&mut response)?;
        Ok(response.body_mut().read_json()?)
    }

    pub fn post<B: Serialize>(&self, path: &str, body: &B) -> anyhow::Result<()> {
        let mut request = self.agent.post(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let mut response = request.send_json(body).map_err(|e| self.unreachable(e))?;
        self.check(&mut response)
    }

    pub fn delete(&self, path: &str) -> anyhow::Result<()> {
        let mut request = self.agent.delete(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let mut response = request.call().map_err(|e| self.unreachable(e))?;
        self.check(&mut response)
    }
}
