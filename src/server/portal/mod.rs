//! The portal: who may see and do what in gc-status's own pages.
//!
//! - [`Portal`]: its settings (viewer token, session lengths, origins, framing, the board);
//! - [`signin`]: what a signed-in session carries, and when it ends;
//! - [`sessions`]: where sessions live (tower-sessions over gc-status's database);
//! - [`csrf`]: the cross-site check on every state-changing browser request;
//! - [`gate`]: which pages need which sign-in, and the viewer link;
//! - [`context`]: the sign-in and client of a server function's request.
//!
//! The webhook endpoint and the bearer-token admin API are outside all of this: they
//! authenticate each request themselves and never read cookies.

pub mod context;
pub mod csrf;
pub mod gate;
pub mod sessions;
pub mod signin;

use std::time::Duration;

use axum::http::{HeaderValue, Uri};
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::{
    model::{BoardSettings, Role},
    server::config::Config,
};

/// Portal settings, from the configuration.
#[derive(Debug, Clone)]
pub struct Portal {
    /// SHA-256 of `GC_STATUS_VIEWER_TOKEN`; when set, viewing needs it.
    viewer_token: Option<[u8; 32]>,
    /// Which secret grants each role's sessions now: a session granted by another (an
    /// admin token since rotated, a removed viewer token) ends at its next request.
    admin_grant: Option<Grant>,
    viewer_grant: Option<Grant>,
    pub session_idle: Duration,
    pub session_max: Duration,
    /// `scheme://host[:port]` the portal is reached at, when configured.
    public_origin: Option<String>,
    /// Cookies are `Secure` and `__Host-` prefixed (the portal is served over https).
    pub secure_cookies: bool,
    /// `frame-ancestors` of the widget: itself and the origins allowed to frame it.
    pub widget_csp: HeaderValue,
    pub board: BoardSettings,
}

/// A keyed digest of the secret that granted a session: stored in the session instead of the
/// secret, it tells whether the secret is still the one configured without revealing it.
#[derive(Clone, PartialEq, Eq)]
pub struct Grant(String);

impl Grant {
    fn of(role: Role, secret: &str) -> Self {
        // Keyed by the secret itself: only someone who knows the secret can compute it.
        let mut mac =
            Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any size");
        mac.update(format!("gc-status session grant for {role:?}").as_bytes());
        Grant(hex::encode(&mac.finalize().into_bytes()[..16]))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `recorded` (from a session) is this grant; constant time.
    pub fn matches(&self, recorded: &str) -> bool {
        bool::from(self.0.as_bytes().ct_eq(recorded.as_bytes()))
    }
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Grant(..)")
    }
}

fn configured(secret: Option<&secrecy::SecretString>) -> Option<&str> {
    secret
        .map(secrecy::ExposeSecret::expose_secret)
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

impl Portal {
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let public_origin = match config.public_url.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(url) => Some(origin_of(url).ok_or_else(|| {
                anyhow::anyhow!(
                    "GC_STATUS_PUBLIC_URL `{url}` must be an http(s) URL such as https://status.example.com"
                )
            })?),
        };
        let secure_cookies = public_origin
            .as_deref()
            .is_some_and(|o| o.starts_with("https://"));
        let mut frame_ancestors = Vec::new();
        for origin in &config.frame_ancestors {
            let origin = origin.trim();
            if origin.is_empty() {
                continue;
            }
            if origin.contains(['\'', ';', ' ', '"']) || !origin.contains("://") {
                anyhow::bail!(
                    "GC_STATUS_FRAME_ANCESTORS entry `{origin}` must be an origin such as https://portal.example.com"
                );
            }
            frame_ancestors.push(origin.trim_end_matches('/').to_owned());
        }
        let viewer = configured(config.viewer_token.as_ref());
        let admin = configured(config.admin_token.as_ref());
        Ok(Portal {
            viewer_token: viewer.map(digest),
            admin_grant: admin.map(|s| Grant::of(Role::Admin, s)),
            viewer_grant: viewer.map(|s| Grant::of(Role::Viewer, s)),
            session_idle: Duration::from_secs(config.session_idle_minutes.max(1) * 60),
            session_max: Duration::from_secs(config.session_max_hours.max(1) * 3600),
            public_origin,
            secure_cookies,
            widget_csp: {
                let mut sources = vec!["'self'".to_owned()];
                sources.extend(frame_ancestors.iter().cloned());
                HeaderValue::from_str(&format!("frame-ancestors {}", sources.join(" ")))?
            },
            board: BoardSettings {
                stale_after_secs: config.stale_after_secs,
                frame_origins: frame_ancestors
                    .iter()
                    .filter(|o| !o.contains('*'))
                    .cloned()
                    .collect(),
                ..BoardSettings::default()
            },
        })
    }

    /// Whether viewing the dashboard needs a viewer sign-in.
    pub fn viewers_need_token(&self) -> bool {
        self.viewer_token.is_some()
    }

    /// Whether `presented` is the viewer token; constant time (as SHA-256 digests).
    pub fn viewer_token_matches(&self, presented: &str) -> bool {
        self.viewer_token
            .as_ref()
            .is_some_and(|expected| bool::from(digest(presented.trim()).ct_eq(expected)))
    }

    /// What grants `role`'s sessions now (`None`: that sign-in is disabled).
    pub fn grant(&self, role: Role) -> Option<&Grant> {
        match role {
            Role::Admin => self.admin_grant.as_ref(),
            Role::Viewer => self.viewer_grant.as_ref(),
        }
    }

    /// The configured public origin, for the cross-site check behind a proxy.
    pub fn public_origin(&self) -> Option<&str> {
        self.public_origin.as_deref()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// `scheme://host[:port]` of an absolute http(s) URL.
fn origin_of(url: &str) -> Option<String> {
    let uri: Uri = url.parse().ok()?;
    let scheme = uri.scheme_str()?;
    if !matches!(scheme, "http" | "https") {
        return None;
    }
    Some(format!("{scheme}://{}", uri.authority()?).to_ascii_lowercase())
}
