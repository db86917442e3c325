//! The connector's settings, checked at start: incomplete ones stop the start saying what to set.

use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};

use crate::server::{config::GenesysConfig, worker::retry::Backoff};

/// The waits between tries after failures in a row (calls, channels): 1 s, 2 s, 4 s, … up to
/// a minute.
pub const RETRY: Backoff = Backoff {
    base: Duration::from_secs(1),
    cap: Duration::from_secs(60),
};

/// Where the connector calls, as whom, what it watches and how often.
#[derive(Debug, Clone)]
pub struct GenesysSettings {
    /// The Platform API, e.g. `https://api.mypurecloud.com` (no trailing slash).
    pub api_url: reqwest::Url,
    /// The token endpoint, e.g. `https://login.mypurecloud.com/oauth/token`.
    pub token_url: reqwest::Url,
    pub client_id: String,
    pub client_secret: SecretString,
    /// Which queues to watch (ids, names, `prefix*`); empty: every queue.
    pub watch: Vec<String>,
    pub poll: Duration,
    pub notifications: bool,
    /// How often today's figures are asked for again.
    pub aggregates_every: Duration,
    /// How often the queue list (names, targets) is read again.
    pub queues_every: Duration,
    /// A websocket without a heartbeat (or any message) for this long is dead.
    pub heartbeat_timeout: Duration,
    /// A channel is replaced this long before it expires.
    pub renew_channel_before: Duration,
    /// A poll that finds a group's figures unchanged stores them again only once they are
    /// this old (a third of the observation TTL, at most a minute).
    pub repeat_after: Duration,
}

impl GenesysSettings {
    /// The connector the settings ask for: `None` when none of them is set. Polled figures
    /// count as current for `observation_ttl` (`GC_STATUS_OBSERVATION_TTL_SECS`).
    pub fn from_config(
        c: &GenesysConfig,
        observation_ttl: Duration,
    ) -> anyhow::Result<Option<Self>> {
        fn given(v: &Option<String>) -> Option<&str> {
            v.as_deref().map(str::trim).filter(|v| !v.is_empty())
        }
        let environment = given(&c.genesys_environment);
        let (api, login) = (given(&c.genesys_api_url), given(&c.genesys_login_url));
        let client_id = given(&c.genesys_client_id);
        // An empty value (a blank line in `.env`) is unset.
        let client_secret = c
            .genesys_client_secret
            .clone()
            .filter(|s| !s.expose_secret().trim().is_empty());
        let any = environment.is_some()
            || api.is_some()
            || login.is_some()
            || client_id.is_some()
            || client_secret.is_some();
        if !any {
            return Ok(None);
        }
        if let Some(env) = environment {
            anyhow::ensure!(
                !env.contains(['/', ':']) && env.contains('.'),
                "GC_STATUS_GENESYS_ENVIRONMENT `{env}` must be a region's domain such as \
                 mypurecloud.com, mypurecloud.ie or usw2.pure.cloud (no https://, no path)"
            );
        }
        let base = |explicit: Option<&str>, host: &str, setting: &str| -> anyhow::Result<_> {
            let text = match (explicit, environment) {
                (Some(url), _) => url.trim_end_matches('/').to_owned(),
                (None, Some(env)) => format!("https://{host}.{env}"),
                (None, None) => anyhow::bail!(
                    "the Genesys Cloud connector needs GC_STATUS_GENESYS_ENVIRONMENT (e.g. \
                     mypurecloud.com), or {setting}"
                ),
            };
            let url = reqwest::Url::parse(&text)
                .map_err(|e| anyhow::anyhow!("{setting} `{text}` is not a URL: {e}"))?;
            match url.scheme() {
                "https" => {}
                "http" if is_loopback(&url) => {}
                "http" => anyhow::bail!(
                    "{setting} `{text}` is plain http: the client secret and tokens would cross \
                     the network unencrypted (plain http is only for loopback addresses)"
                ),
                _ => anyhow::bail!("{setting} `{text}` must be an https URL"),
            }
            Ok(url)
        };
        let api_url = base(api, "api", "GC_STATUS_GENESYS_API_URL")?;
        let login_url = base(login, "login", "GC_STATUS_GENESYS_LOGIN_URL")?;
        let token_url = reqwest::Url::parse(&format!(
            "{}/oauth/token",
            login_url.as_str().trim_end_matches('/')
        ))?;
        let (Some(client_id), Some(client_secret)) = (client_id, client_secret) else {
            anyhow::bail!(
                "the Genesys Cloud connector needs both GC_STATUS_GENESYS_CLIENT_ID and \
                 GC_STATUS_GENESYS_CLIENT_SECRET (an OAuth client with the client-credentials \
                 grant; see README, \"Connect to Genesys Cloud\")"
            );
        };
        anyhow::ensure!(
            c.genesys_poll_secs >= 1,
            "GC_STATUS_GENESYS_POLL_SECS must be at least 1"
        );
        Ok(Some(GenesysSettings {
            api_url,
            token_url,
            client_id: client_id.to_owned(),
            client_secret,
            watch: c
                .genesys_queues
                .iter()
                .map(|q| q.trim().to_owned())
                .filter(|q| !q.is_empty())
                .collect(),
            poll: Duration::from_secs(c.genesys_poll_secs),
            notifications: c.genesys_notifications,
            aggregates_every: Duration::from_secs(c.genesys_aggregates_secs.max(1)),
            queues_every: Duration::from_secs(c.genesys_queues_refresh_secs.max(1)),
            heartbeat_timeout: Duration::from_secs(c.genesys_heartbeat_timeout_secs.max(1)),
            renew_channel_before: Duration::from_secs(5 * 60),
            repeat_after: (observation_ttl / 3).min(Duration::from_secs(60)),
        }))
    }
}

/// `localhost` or a loopback address: the only places plain http may go.
pub fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::server::config::Config;

    fn settings(args: &[&str]) -> anyhow::Result<Option<GenesysSettings>> {
        let mut all = vec!["gc-status"];
        all.extend_from_slice(args);
        GenesysSettings::from_config(&Config::parse_from(all).genesys, Duration::from_secs(300))
    }

    #[test]
    fn the_environment_names_both_hosts_and_incomplete_settings_say_what_to_set() {
        assert!(settings(&[]).expect("valid").is_none());
        let s = settings(&[
            "--genesys-environment",
            "mypurecloud.ie",
            "--genesys-client-id",
            "id",
            "--genesys-client-secret",
            "secret",
        ])
        .expect("valid")
        .expect("a connector");
        assert_eq!(s.api_url.as_str(), "https://api.mypurecloud.ie/");
        assert_eq!(
            s.token_url.as_str(),
            "https://login.mypurecloud.ie/oauth/token"
        );
        assert_eq!(s.poll, Duration::from_secs(10));
        assert!(s.notifications);

        let err = settings(&["--genesys-environment", "mypurecloud.com"]).expect_err("no client");
        assert!(
            err.to_string().contains("GC_STATUS_GENESYS_CLIENT_ID"),
            "{err}"
        );
        let err = settings(&["--genesys-client-id", "id", "--genesys-client-secret", "s"])
            .expect_err("no environment");
        assert!(
            err.to_string().contains("GC_STATUS_GENESYS_ENVIRONMENT"),
            "{err}"
        );
        let err = settings(&[
            "--genesys-environment",
            "https://api.mypurecloud.com",
            "--genesys-client-id",
            "id",
            "--genesys-client-secret",
            "s",
        ])
        .expect_err("a URL is not an environment");
        assert!(err.to_string().contains("no https://"), "{err}");
    }

    #[test]
    fn blank_values_are_unset() {
        let blank = settings(&[
            "--genesys-environment",
            "",
            "--genesys-client-id",
            "",
            "--genesys-client-secret",
            " ",
        ]);
        assert!(blank.expect("valid").is_none());
    }

    #[test]
    fn plain_http_is_only_for_loopback() {
        let with_api = |url: &str| {
            settings(&[
                "--genesys-api-url",
                url,
                "--genesys-login-url",
                "http://127.0.0.1:9",
                "--genesys-client-id",
                "id",
                "--genesys-client-secret",
                "s",
            ])
        };
        assert!(with_api("http://127.0.0.1:8080")
            .expect("loopback")
            .is_some());
        assert!(with_api("http://localhost:8080")
            .expect("loopback")
            .is_some());
        let err = with_api("http://genesys-proxy.internal").expect_err("plain http elsewhere");
        assert!(err.to_string().contains("plain http"), "{err}");
    }
}
