//! The listen address: host names on the command line (`--listen
//! localhost:8080`), and whether an address is reachable only from this
//! machine (issue 13 items 18 and 4).

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// Why a `--listen` value cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// Not `host:port` / `ip:port` / `[ipv6]:port`.
    #[error("expected HOST:PORT or IP:PORT (e.g. 127.0.0.1:8080, localhost:8080, [::1]:8080)")]
    Syntax,
    /// The host name did not resolve.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        /// The host part.
        host: String,
        /// The resolver's error.
        #[source]
        source: std::io::Error,
    },
    /// The host name resolved to no address.
    #[error("{host} resolves to no address")]
    NoAddress {
        /// The host part.
        host: String,
    },
}

/// Parses `ip:port`, or resolves `host:port` (once, at start). Of a host
/// name's addresses the first IPv4 one is used (`localhost` →
/// `127.0.0.1`, which every client can reach), else the first.
///
/// # Errors
/// [`ListenError`]: bad syntax, a failed lookup, or no address.
pub fn resolve_listen(value: &str) -> Result<SocketAddr, ListenError> {
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let (host, port) = value.rsplit_once(':').ok_or(ListenError::Syntax)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(ListenError::Syntax);
    }
    let addrs: Vec<SocketAddr> = value
        .to_socket_addrs()
        .map_err(|source| ListenError::Resolve {
            host: host.to_owned(),
            source,
        })?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| ListenError::NoAddress {
            host: host.to_owned(),
        })
}

/// Whether only this machine can connect to `addr`: a loopback address
/// (`127.0.0.0/8`, `::1`, or `::ffff:127.x.x.x`). The unspecified
/// addresses (`0.0.0.0`, `::`) listen on every interface, so they are not.
pub fn is_loopback(addr: &SocketAddr) -> bool {
    match addr.ip() {
        IpAddr::V4(ip) => ip.is_loopback(),
        IpAddr::V6(ip) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_host_names_resolve() {
        assert_eq!(
            resolve_listen("127.0.0.1:8080").unwrap(),
            SocketAddr::from(([127, 0, 0, 1], 8080))
        );
        assert_eq!(
            resolve_listen("[::1]:9").unwrap(),
            "[::1]:9".parse::<SocketAddr>().unwrap()
        );
        let local = resolve_listen("localhost:8080").unwrap();
        assert!(is_loopback(&local) && local.port() == 8080, "{local}");
        assert!(matches!(
            resolve_listen("localhost"),
            Err(ListenError::Syntax)
        ));
        assert!(matches!(
            resolve_listen("localhost:99999"),
            Err(ListenError::Syntax)
        ));
        assert!(matches!(resolve_listen(":80"), Err(ListenError::Syntax)));
    }

    #[test]
    fn only_loopback_addresses_count_as_local() {
        for local in [
            "127.0.0.1:1",
            "127.1.2.3:1",
            "[::1]:1",
            "[::ffff:127.0.0.1]:1",
        ] {
            assert!(is_loopback(&local.parse().unwrap()), "{local}");
        }
        for exposed in [
            "0.0.0.0:1",
            "[::]:1",
            "192.168.1.10:1",
            "10.0.0.1:1",
            "[fe80::1]:1",
            "[::ffff:10.0.0.1]:1",
            "8.8.8.8:1",
        ] {
            assert!(!is_loopback(&exposed.parse().unwrap()), "{exposed}");
        }
    }
}
