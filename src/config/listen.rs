//! The listen address: host names on the command line (`--listen
//! localhost:8080`), whether an address is reachable only from this
//! machine, and the start-up WARN when it is not (issue 13 items 18 and 4).
//! Ballast has no client authentication yet: beyond loopback, anyone who
//! can reach the address can call every upstream tool.

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

/// Logs one WARN when `addr` (the bound listener's address) is reachable
/// from other machines: Ballast has no authentication yet, so every client
/// that reaches it can use every upstream's tools. Nothing for loopback.
pub fn warn_if_exposed(addr: &SocketAddr) {
    if !is_loopback(addr) {
        tracing::warn!(
            %addr,
            "listening beyond loopback without authentication: Ballast has no client \
             authentication yet, so anyone who can reach {addr} can call every upstream's \
             tools; listen on 127.0.0.1 or put an authenticating proxy in front (README: Security)"
        );
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

    /// The log lines `warn_if_exposed(addr)` writes.
    fn logged_by_warn_if_exposed(addr: &str) -> String {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            warn_if_exposed(&addr.parse().unwrap());
        });
        let out = buf.0.lock().unwrap().clone();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn listening_beyond_loopback_warns_once_naming_the_risk() {
        for exposed in ["0.0.0.0:8080", "[::]:8080", "192.168.1.10:8080"] {
            let log = logged_by_warn_if_exposed(exposed);
            assert_eq!(log.lines().count(), 1, "{log}");
            assert!(log.contains("WARN"), "{log}");
            assert!(log.contains("without authentication"), "{log}");
            assert!(log.contains(exposed), "{log}");
        }
        assert_eq!(logged_by_warn_if_exposed("127.0.0.1:8080"), "");
        assert_eq!(logged_by_warn_if_exposed("[::1]:8080"), "");
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
