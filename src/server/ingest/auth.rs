//! Sender authentication: HMAC-SHA256 of the raw body, a static token header, or HTTP Basic.
//!
//! Every mode accepts several secrets at once so a secret can be rotated without dropping
//! deliveries. All comparisons are constant-time: MACs through `Mac::verify_slice`, tokens and
//! passwords as SHA-256 digests through `subtle` (hashing first also hides their length).

use axum::http::{header::AUTHORIZATION, HeaderMap, HeaderName};
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::server::config::{Config, SignatureEncoding};

type HmacSha256 = Hmac<Sha256>;

/// Why a request was not authenticated. The detail goes to the log, never to the sender.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("no credentials: send {0}")]
    Missing(String),
    #[error("the signature header is not valid {0}")]
    MalformedSignature(&'static str),
    #[error("credentials did not match any configured secret")]
    Mismatch,
}

/// A mistake in the authentication settings, reported at start-up.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error(
        "no way to authenticate webhook senders is configured: set GC_STATUS_HMAC_SECRETS, \
         GC_STATUS_TOKENS or GC_STATUS_BASIC_USERS (or pass --insecure-accept-unsigned for a \
         local trial)"
    )]
    NothingConfigured,
    #[error("{setting} is not a valid header name")]
    BadHeaderName { setting: &'static str },
    #[error("GC_STATUS_BASIC_USERS entry {index} is not of the form user:password")]
    BadBasicUser { index: usize },
}

/// What [`SenderAuth::check_headers`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderCheck {
    /// A token or Basic credential matched: the body needs no further check.
    Authenticated,
    /// A signature header is present: the body decides ([`SenderAuth::verify`]).
    NeedsBody,
}

/// The configured ways a webhook sender may prove who it is.
pub struct SenderAuth {
    hmac: Option<HmacCheck>,
    token: Option<TokenCheck>,
    basic: Option<BasicCheck>,
    /// Set only by `--insecure-accept-unsigned` with nothing else configured.
    accept_all: bool,
}

struct HmacCheck {
    header: HeaderName,
    encoding: SignatureEncoding,
    /// Keyed once at start-up; cloned per request (cheaper than re-keying).
    keys: Vec<HmacSha256>,
}

struct TokenCheck {
    header: HeaderName,
    digests: Vec<[u8; 32]>,
}

struct BasicCheck {
    /// SHA-256 of `user:password`.
    digests: Vec<[u8; 32]>,
}

fn non_empty(secrets: &[SecretString]) -> impl Iterator<Item = &str> {
    secrets
        .iter()
        .map(|s| s.expose_secret().trim())
        .filter(|s| !s.is_empty())
}

fn digest(value: &[u8]) -> [u8; 32] {
    Sha256::digest(value).into()
}

fn any_digest_matches(digests: &[[u8; 32]], presented: &[u8]) -> bool {
    let presented = digest(presented);
    // Check every digest so the time taken does not tell which one matched.
    digests
        .iter()
        .fold(subtle::Choice::from(0), |acc, d| acc | d.ct_eq(&presented))
        .into()
}

fn header_name(value: &str, setting: &'static str) -> Result<HeaderName, AuthConfigError> {
    HeaderName::try_from(value.trim()).map_err(|_| AuthConfigError::BadHeaderName { setting })
}

impl SenderAuth {
    pub fn from_config(config: &Config) -> Result<Self, AuthConfigError> {
        let hmac_keys: Vec<HmacSha256> = non_empty(&config.hmac_secrets)
            .map(|secret| {
                HmacSha256::new_from_slice(secret.as_bytes())
                    .expect("HMAC accepts keys of any size")
            })
            .collect();
        let hmac = if hmac_keys.is_empty() {
            None
        } else {
            Some(HmacCheck {
                header: header_name(&config.hmac_header, "GC_STATUS_HMAC_HEADER")?,
                encoding: config.hmac_encoding,
                keys: hmac_keys,
            })
        };

        let token_digests: Vec<[u8; 32]> = non_empty(&config.tokens)
            .map(|t| digest(t.as_bytes()))
            .collect();
        let token = if token_digests.is_empty() {
            None
        } else {
            Some(TokenCheck {
                header: header_name(&config.token_header, "GC_STATUS_TOKEN_HEADER")?,
                digests: token_digests,
            })
        };

        let mut basic_digests = Vec::new();
        for (index, pair) in non_empty(&config.basic_users).enumerate() {
            match pair.split_once(':') {
                Some((user, _)) if !user.is_empty() => basic_digests.push(digest(pair.as_bytes())),
                _ => return Err(AuthConfigError::BadBasicUser { index: index + 1 }),
            }
        }
        let basic = (!basic_digests.is_empty()).then_some(BasicCheck {
            digests: basic_digests,
        });

        let nothing = hmac.is_none() && token.is_none() && basic.is_none();
        if nothing && !config.insecure_accept_unsigned {
            return Err(AuthConfigError::NothingConfigured);
        }
        Ok(SenderAuth {
            hmac,
            token,
            basic,
            accept_all: nothing,
        })
    }

    /// True when webhooks are accepted without credentials (`--insecure-accept-unsigned`).
    pub fn accepts_unsigned(&self) -> bool {
        self.accept_all
    }

    /// Names of the enabled modes, for the start-up log line.
    pub fn modes(&self) -> Vec<&'static str> {
        let mut modes = Vec::new();
        if self.hmac.is_some() {
            modes.push("hmac-sha256");
        }
        if self.token.is_some() {
            modes.push("token");
        }
        if self.basic.is_some() {
            modes.push("basic");
        }
        modes
    }

    /// What the headers alone decide, before any of the body is read: a matching token or
    /// Basic credential authenticates at once; a signature header needs the body; no
    /// credential at all (or only wrong header credentials) is refused at once, so such an
    /// upload holds no slot or memory while its body arrives.
    pub fn check_headers(&self, headers: &HeaderMap) -> Result<HeaderCheck, AuthError> {
        if self.accept_all {
            return Ok(HeaderCheck::Authenticated);
        }
        let mut presented = false;
        if let Some(check) = &self.token {
            if let Some(value) = headers.get(&check.header) {
                presented = true;
                if any_digest_matches(&check.digests, value.as_bytes()) {
                    return Ok(HeaderCheck::Authenticated);
                }
            }
        }
        if let Some(check) = &self.basic {
            if let Some(credentials) = basic_credentials(headers) {
                presented = true;
                if any_digest_matches(&check.digests, &credentials) {
                    return Ok(HeaderCheck::Authenticated);
                }
            }
        }
        if let Some(check) = &self.hmac {
            if headers.contains_key(&check.header) {
                return Ok(HeaderCheck::NeedsBody);
            }
        }
        if presented {
            Err(AuthError::Mismatch)
        } else {
            Err(AuthError::Missing(self.expected()))
        }
    }

    /// Accepts the request if any configured mode accepts the credentials it carries.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), AuthError> {
        if self.accept_all {
            return Ok(());
        }
        let mut presented = false;
        let mut malformed = None;

        if let Some(check) = &self.hmac {
            if let Some(value) = headers.get(&check.header) {
                presented = true;
                match check.verify(value.as_bytes(), body) {
                    Ok(()) => return Ok(()),
                    Err(AuthError::MalformedSignature(e)) => malformed = Some(e),
                    Err(_) => {}
                }
            }
        }
        if let Some(check) = &self.token {
            if let Some(value) = headers.get(&check.header) {
                presented = true;
                if any_digest_matches(&check.digests, value.as_bytes()) {
                    return Ok(());
                }
            }
        }
        if let Some(check) = &self.basic {
            if let Some(credentials) = basic_credentials(headers) {
                presented = true;
                if any_digest_matches(&check.digests, &credentials) {
                    return Ok(());
                }
            }
        }

        match (presented, malformed) {
            (false, _) => Err(AuthError::Missing(self.expected())),
            (true, Some(encoding)) => Err(AuthError::MalformedSignature(encoding)),
            (true, None) => Err(AuthError::Mismatch),
        }
    }

    /// True when a 401 should invite HTTP Basic (`WWW-Authenticate`).
    pub fn offers_basic(&self) -> bool {
        self.basic.is_some()
    }

    fn expected(&self) -> String {
        let mut ways = Vec::new();
        if let Some(h) = &self.hmac {
            ways.push(format!("an HMAC-SHA256 signature in {}", h.header));
        }
        if let Some(t) = &self.token {
            ways.push(format!("a token in {}", t.header));
        }
        if self.basic.is_some() {
            ways.push("HTTP Basic credentials".to_owned());
        }
        ways.join(" or ")
    }
}

impl HmacCheck {
    fn verify(&self, header: &[u8], body: &[u8]) -> Result<(), AuthError> {
        let signature = decode_signature(header, self.encoding)?;
        let mut matched = false;
        for key in &self.keys {
            let mut mac = key.clone();
            mac.update(body);
            // `verify_slice` compares in constant time.
            matched |= mac.verify_slice(&signature).is_ok();
        }
        if matched {
            Ok(())
        } else {
            Err(AuthError::Mismatch)
        }
    }
}

/// Decodes a signature header: optional `sha256=` prefix, then hex or base64.
fn decode_signature(header: &[u8], encoding: SignatureEncoding) -> Result<Vec<u8>, AuthError> {
    let text = std::str::from_utf8(header)
        .map_err(|_| AuthError::MalformedSignature(encoding_name(encoding)))?
        .trim();
    let text = match text.get(..7) {
        Some(prefix) if prefix.eq_ignore_ascii_case("sha256=") => &text[7..],
        _ => text,
    };
    let decoded = match encoding {
        SignatureEncoding::Hex => hex::decode(text).ok(),
        SignatureEncoding::Base64 => base64::engine::general_purpose::STANDARD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
            .ok(),
    };
    decoded.ok_or(AuthError::MalformedSignature(encoding_name(encoding)))
}

fn encoding_name(encoding: SignatureEncoding) -> &'static str {
    match encoding {
        SignatureEncoding::Hex => "hex",
        SignatureEncoding::Base64 => "base64",
    }
}

/// The decoded `user:password` of an `Authorization: Basic …` header.
fn basic_credentials(headers: &HeaderMap) -> Option<Vec<u8>> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
}

/// Signs `body` as a sender would: lower-case hex HMAC-SHA256. Used by tests and the benchmark.
pub fn sign_hex(secret: &str, body: &[u8]) -> String {
    let mut mac =
        HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any size");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn auth(args: &[&str]) -> SenderAuth {
        let mut argv = vec!["gc-status"];
        argv.extend_from_slice(args);
        SenderAuth::from_config(&Config::parse_from(argv)).expect("valid auth config")
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(
                HeaderName::try_from(*k).expect("name"),
                v.parse().expect("value"),
            );
        }
        map
    }

    #[test]
    fn known_vector_from_rfc_4231_case_2_is_accepted() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        assert_eq!(sign_hex("Jefe", b"what do ya want for nothing?"), expected);
        let auth = auth(&["--hmac-secrets", "Jefe"]);
        let h = headers(&[("x-gc-signature", expected)]);
        assert_eq!(auth.verify(&h, b"what do ya want for nothing?"), Ok(()));
    }

    #[test]
    fn prefixed_and_uppercase_hex_signatures_are_accepted() {
        let auth = auth(&["--hmac-secrets", "s3cret"]);
        let sig = sign_hex("s3cret", b"{}").to_uppercase();
        let h = headers(&[("x-gc-signature", &format!("sha256={sig}"))]);
        assert_eq!(auth.verify(&h, b"{}"), Ok(()));
    }

    #[test]
    fn base64_signature_in_a_custom_header_is_accepted() {
        let auth = auth(&[
            "--hmac-secrets",
            "k",
            "--hmac-header",
            "X-Hub-Signature-256",
            "--hmac-encoding",
            "base64",
        ]);
        let raw = hex::decode(sign_hex("k", b"body")).expect("hex");
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
        let h = headers(&[("x-hub-signature-256", &format!("sha256={b64}"))]);
        assert_eq!(auth.verify(&h, b"body"), Ok(()));
    }

    #[test]
    fn tampered_body_is_rejected() {
        let auth = auth(&["--hmac-secrets", "k"]);
        let h = headers(&[("x-gc-signature", &sign_hex("k", b"body"))]);
        assert_eq!(auth.verify(&h, b"bodY"), Err(AuthError::Mismatch));
    }

    #[test]
    fn both_secrets_are_accepted_during_rotation_and_the_old_one_after() {
        let rotating = auth(&["--hmac-secrets", "new,old"]);
        for secret in ["new", "old"] {
            let h = headers(&[("x-gc-signature", &sign_hex(secret, b"x"))]);
            assert_eq!(rotating.verify(&h, b"x"), Ok(()), "{secret}");
        }
        let rotated = auth(&["--hmac-secrets", "new"]);
        let h = headers(&[("x-gc-signature", &sign_hex("old", b"x"))]);
        assert_eq!(rotated.verify(&h, b"x"), Err(AuthError::Mismatch));
    }

    #[test]
    fn missing_header_and_malformed_signature_are_told_apart() {
        let auth = auth(&["--hmac-secrets", "k"]);
        assert!(matches!(
            auth.verify(&HeaderMap::new(), b"x"),
            Err(AuthError::Missing(_))
        ));
        let h = headers(&[("x-gc-signature", "not-hex")]);
        assert_eq!(
            auth.verify(&h, b"x"),
            Err(AuthError::MalformedSignature("hex"))
        );
    }

    #[test]
    fn empty_secrets_do_not_count_as_configured() {
        let config = Config::parse_from(["gc-status", "--hmac-secrets", " ,"]);
        assert!(matches!(
            SenderAuth::from_config(&config),
            Err(AuthConfigError::NothingConfigured)
        ));
    }

    #[test]
    fn tokens_and_basic_users_are_checked() {
        let auth = auth(&["--tokens", "t1,t2", "--basic-users", "genesys:pw"]);
        assert_eq!(auth.verify(&headers(&[("x-gc-token", "t2")]), b""), Ok(()));
        assert_eq!(
            auth.verify(&headers(&[("x-gc-token", "t3")]), b""),
            Err(AuthError::Mismatch)
        );
        let good = base64::engine::general_purpose::STANDARD.encode("genesys:pw");
        let bad = base64::engine::general_purpose::STANDARD.encode("genesys:px");
        let ok = headers(&[("authorization", &format!("Basic {good}"))]);
        assert_eq!(auth.verify(&ok, b""), Ok(()));
        let wrong = headers(&[("authorization", &format!("Basic {bad}"))]);
        assert_eq!(auth.verify(&wrong, b""), Err(AuthError::Mismatch));
    }

    #[test]
    fn a_basic_user_without_a_password_separator_is_a_config_error() {
        let config = Config::parse_from(["gc-status", "--basic-users", "nocolon"]);
        assert!(matches!(
            SenderAuth::from_config(&config),
            Err(AuthConfigError::BadBasicUser { index: 1 })
        ));
    }
}
