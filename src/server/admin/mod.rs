//! Admin operations: who may run them (the admin token, guarded against guessing) and the
//! bearer-token JSON API over the dead letters ([`api`]).

pub mod api;

use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Notify;

use super::{
    client::ClientIp,
    error::ApiError,
    guard::{SignInGuard, Throttled, Verdict},
};

/// Who may run admin operations, and what follows one (waking workers). Shared by the JSON
/// API and the page's server functions.
#[derive(Clone, Debug)]
pub struct AdminAccess {
    /// SHA-256 of the admin token; `None` disables admin operations.
    token_digest: Option<Arc<[u8; 32]>>,
    wake_workers: Arc<Notify>,
    /// Wrong secrets slow down the guessing client (shared with the viewer token).
    guard: SignInGuard,
}

/// Why an admin operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AdminDenied {
    #[error("send `Authorization: Bearer <GC_STATUS_ADMIN_TOKEN>`")]
    Missing,
    #[error("the admin token is not valid")]
    Wrong {
        /// Failures to write to the audit trail now (see [`SignInGuard`]).
        audit: Option<u32>,
    },
    #[error("admin operations are disabled: set GC_STATUS_ADMIN_TOKEN")]
    Disabled,
    #[error("too many wrong admin tokens from this address; retry in {retry_after_secs} s")]
    Throttled { retry_after_secs: u64 },
}

impl From<AdminDenied> for ApiError {
    fn from(denied: AdminDenied) -> Self {
        match denied {
            AdminDenied::Missing => ApiError::AdminUnauthorized,
            AdminDenied::Throttled { retry_after_secs } => {
                ApiError::TooManyRequests { retry_after_secs }
            }
            other => ApiError::Forbidden(other.to_string()),
        }
    }
}

impl AdminAccess {
    pub fn new(token: Option<&str>, wake_workers: Arc<Notify>, guard: SignInGuard) -> Self {
        let token_digest = token
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| Arc::new(digest(t)));
        AdminAccess {
            token_digest,
            wake_workers,
            guard,
        }
    }

    pub fn enabled(&self) -> bool {
        self.token_digest.is_some()
    }

    /// Compares `presented` with the admin token in constant time (as SHA-256 digests, which
    /// also hides the token's length). An empty token never matches.
    fn matches(&self, presented: &str) -> bool {
        let presented = presented.trim();
        match &self.token_digest {
            Some(expected) if !presented.is_empty() => {
                bool::from(digest(presented).ct_eq(&**expected))
            }
            _ => false,
        }
    }

    /// Checks `presented` for a request from `client` under the sign-in guard: an empty or
    /// wrong token counts as a failure of that client; a locked-out client gets
    /// [`AdminDenied::Throttled`] whatever it sends. With no admin token configured, every
    /// attempt is [`AdminDenied::Disabled`] (and costs nothing).
    pub fn check_from(&self, client: Option<ClientIp>, presented: &str) -> Result<(), AdminDenied> {
        if !self.enabled() {
            return Err(AdminDenied::Disabled);
        }
        match self
            .guard
            .attempt(client, "admin token", || self.matches(presented))
        {
            Ok(Verdict::Granted) => Ok(()),
            Ok(Verdict::Denied { audit }) => Err(AdminDenied::Wrong { audit }),
            Err(throttled @ Throttled { .. }) => Err(AdminDenied::Throttled {
                retry_after_secs: throttled.retry_after_secs(),
            }),
        }
    }

    /// What wakes this process's workers (a replay has work for them).
    pub fn wake_workers(&self) -> &Notify {
        &self.wake_workers
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(token: &str) -> AdminAccess {
        AdminAccess::new(Some(token), Arc::new(Notify::new()), SignInGuard::default())
    }

    #[test]
    fn admin_tokens_are_checked() {
        let client = Some(ClientIp([10, 0, 0, 1].into()));
        let access = access(" s3cret ");
        assert_eq!(access.check_from(client, "s3cret"), Ok(()));
        assert!(matches!(
            access.check_from(client, "s3cre"),
            Err(AdminDenied::Wrong { .. })
        ));
        assert!(matches!(
            access.check_from(client, ""),
            Err(AdminDenied::Wrong { .. })
        ));
        let disabled =
            super::AdminAccess::new(Some("  "), Arc::new(Notify::new()), SignInGuard::default());
        assert_eq!(
            disabled.check_from(client, "anything"),
            Err(AdminDenied::Disabled)
        );
    }

    #[test]
    fn empty_secrets_count_as_failures() {
        let client = Some(ClientIp([10, 0, 0, 2].into()));
        let access = access("s3cret");
        let answers: Vec<_> = (0..8).map(|_| access.check_from(client, "")).collect();
        assert!(
            answers
                .iter()
                .any(|a| matches!(a, Err(AdminDenied::Throttled { .. }))),
            "{answers:?}"
        );
    }
}
