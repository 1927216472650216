//! The settings an attempt runs under: the config's HTTP part, handed to the workers
//! with each job (a reload swaps the whole value; no lock is shared).

use std::time::Duration;

use crate::deliver::allowlist::Allowed;
use crate::deliver::signing::Secret;

#[derive(Debug, Clone, PartialEq)]
pub struct HttpSettings {
    /// `signingSecret`: each signs every callback (Standard Webhooks); empty: none.
    pub signing: Vec<Secret>,
    /// `denyPrivateNetworks`: connect to public addresses only.
    pub deny_private_networks: bool,
    /// `caFile`: PEM certificates trusted for HTTPS instead of the built-in roots.
    pub ca_pem: Option<Vec<u8>>,
    /// `allowedCallbacks`: where callbacks (and redirects) may go; empty allows all.
    pub allowed: Vec<Allowed>,
    /// `followRedirects`: 307 and 308 answers followed per attempt (0: none).
    pub follow_redirects: u32,
    pub connect_timeout: Duration,
    /// Bound on the whole call: connect, send, headers and the body read.
    pub timeout: Duration,
    pub max_response_bytes: u64,
    pub success: SuccessRule,
}

/// When an attempt counts as delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SuccessRule {
    /// The old daemon's rule: the body contains the text, any case; status ignored.
    BodyContains(String),
    /// Any 2xx status, whatever the body.
    Status2xx,
    /// A 2xx status and the body contains the text, any case.
    Status2xxAndBodyContains(String),
}
