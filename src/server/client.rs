//! Who the client is: the TCP peer, or, when the peer is a trusted reverse proxy, the address
//! it names in `X-Forwarded-For`.
//!
//! Every per-client rule (sign-in lock-outs, stream caps, the audit trail) keys on
//! [`ClientIp`]. Behind a proxy every connection comes from the proxy, so without
//! `GC_STATUS_TRUSTED_PROXIES` one guesser would lock everyone out; with it, a header from any
//! other peer is ignored, so nobody can pick an address by sending the header themselves.

use std::net::{IpAddr, SocketAddr};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::HeaderMap,
    middleware::Next,
    response::Response,
};
use ipnet::IpNet;

/// The addresses whose `X-Forwarded-For` is believed (none by default).
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses `GC_STATUS_TRUSTED_PROXIES` entries: addresses (`10.0.0.5`) or ranges
    /// (`10.0.0.0/8`, `fd00::/8`).
    pub fn parse(entries: &[String]) -> anyhow::Result<Self> {
        let mut nets = Vec::new();
        for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            let net = entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    anyhow::anyhow!(
                        "GC_STATUS_TRUSTED_PROXIES entry `{entry}` must be an address or a range \
                         such as 10.0.0.5 or 10.0.0.0/8"
                    )
                })?;
            nets.push(net);
        }
        Ok(TrustedProxies(nets))
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client behind `peer`: the right-most `X-Forwarded-For` entry that is not itself a
    /// trusted proxy (entries left of it were written by the client and prove nothing).
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        for hop in hops.iter().rev() {
            match hop.parse::<IpAddr>() {
                Ok(ip) if self.trusts(ip) => continue,
                Ok(ip) => return canonical(ip),
                // A garbled entry: nothing left of it can be believed.
                Err(_) => return peer,
            }
        }
        peer
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, from a dual-stack listener) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The client of a request (a request extension, set by [`resolve`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl ClientIp {
    /// What per-client limits count by: the address, or for IPv6 its /64 (one subscriber
    /// usually holds a whole /64 and could otherwise rotate through it).
    pub fn bucket(self) -> IpAddr {
        match self.0 {
            IpAddr::V6(v6) => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
            v4 => v4,
        }
    }
}

impl std::fmt::Display for ClientIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Middleware over every route: records the request's [`ClientIp`].
pub async fn resolve(
    State(proxies): State<std::sync::Arc<TrustedProxies>>,
    mut request: Request,
    next: Next,
) -> Response {
    if let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>() {
        let client = proxies.client(peer.ip(), request.headers());
        request.extensions_mut().insert(ClientIp(client));
    }
    next.run(request).await
}

/// The client of a request, where [`resolve`] recorded it (not in router unit tests).
pub fn of(extensions: &axum::http::Extensions) -> Option<ClientIp> {
    extensions.get::<ClientIp>().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", value.parse().expect("header"));
        headers
    }

    #[test]
    fn forwarded_for_is_believed_only_from_a_trusted_proxy() {
        let proxies =
            TrustedProxies::parse(&["10.0.0.5".into(), "192.168.0.0/16".into()]).expect("valid");
        let proxy: IpAddr = "10.0.0.5".parse().expect("ip");
        let stranger: IpAddr = "203.0.113.9".parse().expect("ip");
        // From a stranger the header is ignored: nobody picks their own address.
        assert_eq!(
            proxies.client(stranger, &forwarded("198.51.100.1")),
            stranger
        );
        // From the proxy, the right-most untrusted hop is the client; what the client wrote
        // left of it is ignored.
        assert_eq!(
            proxies.client(proxy, &forwarded("1.2.3.4, 198.51.100.1, 192.168.3.3")),
            "198.51.100.1".parse::<IpAddr>().expect("ip")
        );
        assert_eq!(proxies.client(proxy, &HeaderMap::new()), proxy);
        assert_eq!(proxies.client(proxy, &forwarded("garbage")), proxy);
        assert!(TrustedProxies::parse(&["not-an-address".into()]).is_err());
        // Nothing is trusted by default.
        let none = TrustedProxies::default();
        assert_eq!(none.client(proxy, &forwarded("198.51.100.1")), proxy);
    }

    #[test]
    fn ipv6_clients_count_per_64() {
        let a = ClientIp("2001:db8:1:2:aaaa::1".parse().expect("ip"));
        let b = ClientIp("2001:db8:1:2:bbbb::9".parse().expect("ip"));
        let other = ClientIp("2001:db8:1:3::1".parse().expect("ip"));
        assert_eq!(a.bucket(), b.bucket());
        assert_ne!(a.bucket(), other.bucket());
        let v4 = ClientIp("10.1.2.3".parse().expect("ip"));
        assert_eq!(v4.bucket(), v4.0);
    }
}
