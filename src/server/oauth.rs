//! OAuth2 client-credentials tokens, for the sink's deliveries and the Genesys Cloud
//! connector's calls alike: one cached token per client shared by every caller, renewed a
//! margin before it expires, single-flight.
//!
//! The cache sits behind one async mutex that is held while a renewal is in flight, so when
//! the token runs out under fifty concurrent callers, one asks the token endpoint and the
//! other forty-nine wait for its answer. A token the server rejects (401) is renewed once per
//! rejection of that token, not once per caller that saw it rejected.

use std::time::{Duration, Instant};

use oauth2::{
    basic::{
        BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
        BasicTokenType,
    },
    AccessToken, AuthType, Client, ClientId, ClientSecret, EndpointNotSet, EndpointSet,
    RefreshToken, RequestTokenError, Scope, StandardRevocableToken, TokenUrl,
};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Deserializer, Serialize};

use crate::server::config::OAuthClientAuth;

/// A token-endpoint failure, worded for logs and dead letters: never the secret or a token.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct TokenError(String);

/// A token as handed to a delivery.
#[derive(Clone)]
pub struct Token {
    value: AccessToken,
    /// Which renewal produced it: a 401 for an older token than the cached one needs no
    /// renewal of its own.
    generation: u64,
    renew_at: Option<Instant>,
}

impl Token {
    pub fn secret(&self) -> &str {
        self.value.secret()
    }

    fn is_fresh(&self) -> bool {
        self.renew_at.is_none_or(|at| Instant::now() < at)
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

type TokenClient = Client<
    BasicErrorResponse,
    LenientTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// A failed renewal answers the deliveries queued behind it for this long, instead of each
/// of them asking a failing endpoint again.
const FAILURE_HOLD: Duration = Duration::from_secs(1);

/// The shared token cache and its endpoint.
pub struct TokenSource {
    client: TokenClient,
    http: reqwest::Client,
    scopes: Vec<Scope>,
    audience: Option<String>,
    margin: Duration,
    purpose: &'static str,
    label: &'static str,
    slot: tokio::sync::Mutex<Slot>,
}

#[derive(Default)]
struct Slot {
    current: Option<Token>,
    generation: u64,
    failed: Option<(Instant, TokenError)>,
}

/// Where a token source asks and as whom: the sink's (from the forwarding settings) or the
/// Genesys Cloud connector's.
pub struct TokenSettings {
    pub token_url: String,
    pub client_id: String,
    pub client_secret: SecretString,
    pub client_auth: OAuthClientAuth,
    pub scopes: Vec<String>,
    pub audience: Option<String>,
    /// A token is renewed this long before it expires.
    pub margin: Duration,
    /// Whom the tokens are for, in logs ("the sink", "Genesys Cloud") and as the `client`
    /// label of the token metrics (`sink`, `genesys`).
    pub purpose: &'static str,
    pub label: &'static str,
}

impl TokenSource {
    /// A token source for `settings`; `setting` names the URL's setting in the error.
    pub fn new(
        settings: TokenSettings,
        setting: &str,
        http: reqwest::Client,
    ) -> anyhow::Result<Self> {
        let url = settings.token_url;
        let token_url = TokenUrl::new(url.clone())
            .map_err(|err| anyhow::anyhow!("{setting} `{url}` is not a URL: {err}"))?;
        if !matches!(token_url.url().scheme(), "http" | "https") {
            anyhow::bail!("{setting} `{url}` must be an http(s) URL");
        }
        let client = Client::new(ClientId::new(settings.client_id))
            .set_client_secret(ClientSecret::new(
                settings.client_secret.expose_secret().to_owned(),
            ))
            .set_token_uri(token_url)
            .set_auth_type(match settings.client_auth {
                OAuthClientAuth::Basic => AuthType::BasicAuth,
                OAuthClientAuth::Body => AuthType::RequestBody,
            });
        Ok(TokenSource {
            client,
            http,
            scopes: settings.scopes.into_iter().map(Scope::new).collect(),
            audience: settings.audience.filter(|a| !a.is_empty()),
            margin: settings.margin,
            purpose: settings.purpose,
            label: settings.label,
            slot: Default::default(),
        })
    }

    /// The cached token while it is fresh, else a new one (one request however many callers).
    pub async fn token(&self) -> Result<Token, TokenError> {
        let mut slot = self.slot.lock().await;
        match &slot.current {
            Some(token) if token.is_fresh() => Ok(token.clone()),
            _ => self.renew(&mut slot).await,
        }
    }

    /// A new token in place of `rejected`, which the sink refused (401). If another delivery
    /// already renewed it, that newer token is the answer.
    pub async fn renew_rejected(&self, rejected: &Token) -> Result<Token, TokenError> {
        let mut slot = self.slot.lock().await;
        match &slot.current {
            Some(token) if token.generation != rejected.generation && token.is_fresh() => {
                Ok(token.clone())
            }
            _ => self.renew(&mut slot).await,
        }
    }

    async fn renew(&self, slot: &mut Slot) -> Result<Token, TokenError> {
        if let Some((at, err)) = &slot.failed {
            if at.elapsed() < FAILURE_HOLD {
                return Err(err.clone());
            }
        }
        let asked_at = Instant::now();
        let mut request = self
            .client
            .exchange_client_credentials()
            .add_scopes(self.scopes.iter().cloned());
        if let Some(audience) = &self.audience {
            request = request.add_extra_param("audience", audience.as_str());
        }
        match request.request_async(&self.http).await {
            Ok(response) => {
                metrics::counter!("gc_status_oauth_token_refreshes_total", "client" => self.label)
                    .increment(1);
                slot.generation += 1;
                let token = Token {
                    value: response.access_token,
                    generation: slot.generation,
                    renew_at: response
                        .expires_in
                        .map(|lifetime| asked_at + renew_after(lifetime, self.margin)),
                };
                tracing::info!(
                    expires_in_secs = response.expires_in.map(|d| d.as_secs()),
                    "obtained a new OAuth2 token for {}",
                    self.purpose
                );
                slot.current = Some(token.clone());
                slot.failed = None;
                Ok(token)
            }
            Err(err) => {
                metrics::counter!("gc_status_oauth_token_failures_total", "client" => self.label)
                    .increment(1);
                let err = TokenError(describe(err));
                tracing::warn!(error = %err, "cannot obtain an OAuth2 token for {}", self.purpose);
                slot.current = None;
                slot.failed = Some((Instant::now(), err.clone()));
                Err(err)
            }
        }
    }
}

/// How long after it was asked for a token of `lifetime` is renewed: `margin` before it
/// expires, or half-way for lifetimes too short for the margin.
pub fn renew_after(lifetime: Duration, margin: Duration) -> Duration {
    lifetime
        .checked_sub(margin)
        .filter(|d| *d >= lifetime / 2)
        .unwrap_or(lifetime / 2)
}

/// The error as the log and the dead letters show it. A token response that does not parse
/// is described by where it failed, never by its body (which may hold a token).
fn describe(
    err: RequestTokenError<oauth2::HttpClientError<reqwest::Error>, BasicErrorResponse>,
) -> String {
    match err {
        RequestTokenError::ServerResponse(response) => {
            let mut text = format!("the token endpoint refused: {}", response.error());
            if let Some(description) = response.error_description() {
                text.push_str(&format!(" ({description})"));
            }
            text
        }
        RequestTokenError::Request(err) => {
            let detail = match err {
                oauth2::HttpClientError::Reqwest(err) => {
                    crate::server::transport::describe_http_error(&err)
                }
                other => other.to_string(),
            };
            format!("the token endpoint could not be reached: {detail}")
        }
        RequestTokenError::Parse(err, _body) => format!(
            "the token endpoint's answer is not a token response (at `{}`)",
            err.path()
        ),
        RequestTokenError::Other(text) => format!("the token endpoint: {text}"),
    }
}

/// A token response, read leniently where real providers differ from RFC 6749: `expires_in`
/// as a string (Azure AD v1), `token_type` missing or in any case.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LenientTokenResponse {
    access_token: AccessToken,
    #[serde(default = "bearer", deserialize_with = "token_type")]
    token_type: BasicTokenType,
    #[serde(
        default,
        deserialize_with = "seconds",
        serialize_with = "serialize_seconds"
    )]
    expires_in: Option<Duration>,
}

fn bearer() -> BasicTokenType {
    BasicTokenType::Bearer
}

fn token_type<'de, D: Deserializer<'de>>(d: D) -> Result<BasicTokenType, D::Error> {
    let text = Option::<String>::deserialize(d)?.unwrap_or_default();
    Ok(match text.to_ascii_lowercase().as_str() {
        "" | "bearer" => BasicTokenType::Bearer,
        "mac" => BasicTokenType::Mac,
        _ => BasicTokenType::Extension(text),
    })
}

fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Seconds {
        Number(f64),
        Text(String),
    }
    let secs = match Option::<Seconds>::deserialize(d)? {
        None => return Ok(None),
        Some(Seconds::Number(n)) => n,
        Some(Seconds::Text(text)) => text
            .trim()
            .parse::<f64>()
            .map_err(|_| serde::de::Error::custom("`expires_in` must be a number of seconds"))?,
    };
    Ok((secs.is_finite() && secs > 0.0).then(|| Duration::from_secs_f64(secs.min(1e9))))
}

fn serialize_seconds<S: serde::Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    v.map(|d| d.as_secs()).serialize(s)
}

impl oauth2::TokenResponse for LenientTokenResponse {
    type TokenType = BasicTokenType;

    fn access_token(&self) -> &AccessToken {
        &self.access_token
    }
    fn token_type(&self) -> &BasicTokenType {
        &self.token_type
    }
    fn expires_in(&self) -> Option<Duration> {
        self.expires_in
    }
    fn refresh_token(&self) -> Option<&RefreshToken> {
        None
    }
    fn scopes(&self) -> Option<&Vec<Scope>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_leaves_the_margin_or_half_the_lifetime() {
        let s = Duration::from_secs;
        assert_eq!(renew_after(s(3600), s(60)), s(3540));
        assert_eq!(renew_after(s(100), s(60)), s(50));
        assert_eq!(renew_after(s(2), s(60)), s(1));
    }

    #[test]
    fn token_responses_as_providers_send_them() {
        let read = |json: &str| serde_json::from_str::<LenientTokenResponse>(json);
        let standard =
            read(r#"{"access_token":"a","token_type":"bearer","expires_in":3600}"#).unwrap();
        assert_eq!(standard.expires_in, Some(Duration::from_secs(3600)));
        let azure_v1 =
            read(r#"{"access_token":"a","token_type":"Bearer","expires_in":"3599"}"#).unwrap();
        assert_eq!(azure_v1.expires_in, Some(Duration::from_secs(3599)));
        let bare = read(r#"{"access_token":"a"}"#).unwrap();
        assert_eq!(bare.expires_in, None);
        assert_eq!(bare.token_type, BasicTokenType::Bearer);
        assert!(read(r#"{"token_type":"bearer"}"#).is_err());
        assert!(read(r#"{"access_token":"a","expires_in":"soon"}"#).is_err());
    }
}
