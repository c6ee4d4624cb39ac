//! Header checks every MCP endpoint request passes first: `Host` and
//! `Origin` (SPEC.md 18), `Accept` and `Content-Type` (SPEC.md 8), and
//! `MCP-Protocol-Version` (SPEC.md 7).

use http::{HeaderMap, header};

use super::DownstreamError;
use crate::config::ServerConfig;
use crate::mcp;

/// The `Mcp-Session-Id` header.
pub const SESSION_HEADER: &str = "mcp-session-id";
/// The `MCP-Protocol-Version` header.
pub const VERSION_HEADER: &str = "mcp-protocol-version";

/// Rejects a foreign `Host` (or HTTP/2 `:authority`) or `Origin` with 403.
///
/// # Errors
/// [`DownstreamError::ForbiddenHost`], [`DownstreamError::ForbiddenOrigin`].
pub(super) fn check_host_and_origin(
    headers: &HeaderMap,
    authority: Option<&http::uri::Authority>,
    cfg: &ServerConfig,
) -> Result<(), DownstreamError> {
    if !cfg.allowed_hosts.iter().any(|h| h == "*") {
        // HTTP/2 carries the host in `:authority`, not in a Host header.
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| authority.map(http::uri::Authority::as_str))
            .unwrap_or("");
        let name = strip_port(host);
        if !cfg
            .allowed_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(name))
        {
            return Err(DownstreamError::ForbiddenHost);
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin
            .to_str()
            .map_err(|_| DownstreamError::ForbiddenOrigin)?;
        if !origin_allowed(origin, &cfg.allowed_origins) {
            return Err(DownstreamError::ForbiddenOrigin);
        }
    }
    Ok(())
}

/// `host:port` → `host`; `[::1]:8080` → `[::1]`.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// An allow-list entry `scheme://host` matches any port; `scheme://host:port`
/// matches exactly; `*` matches all.
pub(super) fn origin_allowed(origin: &str, allowed: &[String]) -> bool {
    let (scheme, rest) = origin.split_once("://").unwrap_or(("", origin));
    let host = strip_port(rest);
    allowed.iter().any(|a| {
        a == "*" || a.eq_ignore_ascii_case(origin) || {
            let (s, h) = a.split_once("://").unwrap_or(("", a));
            s.eq_ignore_ascii_case(scheme) && h.eq_ignore_ascii_case(host)
        }
    })
}

/// What a POST's `Accept` allows.
#[derive(Debug, Clone, Copy)]
pub(super) struct Accepts {
    /// `application/json` (or a wildcard).
    pub(super) json: bool,
    /// `text/event-stream` (or a wildcard).
    pub(super) sse: bool,
}

/// Reads `Accept`. An absent header accepts anything.
pub(super) fn accepts(headers: &HeaderMap) -> Accepts {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Accepts {
            json: true,
            sse: true,
        };
    };
    let mut a = Accepts {
        json: false,
        sse: false,
    };
    for part in accept.split(',') {
        let media = part
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match media.as_str() {
            "*/*" => {
                a.json = true;
                a.sse = true;
            }
            "application/json" | "application/*" => a.json = true,
            "text/event-stream" | "text/*" => a.sse = true,
            _ => {}
        }
    }
    a
}

/// Requires `Content-Type: application/json` (parameters allowed).
///
/// # Errors
/// [`DownstreamError::UnsupportedMediaType`].
pub(super) fn check_content_type(headers: &HeaderMap) -> Result<(), DownstreamError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = ct.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(DownstreamError::UnsupportedMediaType)
    }
}

/// Checks `MCP-Protocol-Version` when present (absent means 2025-03-26).
///
/// # Errors
/// [`DownstreamError::BadProtocolVersion`] for an unknown version.
pub(super) fn check_protocol_version(headers: &HeaderMap) -> Result<(), DownstreamError> {
    match headers.get(VERSION_HEADER) {
        None => Ok(()),
        Some(v) => match v.to_str() {
            Ok(v) if mcp::is_supported_version(v) => Ok(()),
            Ok(v) => Err(DownstreamError::BadProtocolVersion(v.to_owned())),
            Err(_) => Err(DownstreamError::BadProtocolVersion("(not ASCII)".into())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn host_and_origin_defaults_accept_loopback_only() {
        let cfg = ServerConfig::default();
        assert!(check_host_and_origin(&headers(&[("host", "127.0.0.1:8080")]), None, &cfg).is_ok());
        assert!(check_host_and_origin(&headers(&[("host", "[::1]:9")]), None, &cfg).is_ok());
        assert!(
            check_host_and_origin(
                &headers(&[("host", "localhost"), ("origin", "http://localhost:3000")]),
                None,
                &cfg
            )
            .is_ok()
        );
        assert!(matches!(
            check_host_and_origin(&headers(&[("host", "evil.example.com")]), None, &cfg),
            Err(DownstreamError::ForbiddenHost)
        ));
        assert!(matches!(
            check_host_and_origin(
                &headers(&[
                    ("host", "localhost"),
                    ("origin", "https://evil.example.com")
                ]),
                None,
                &cfg
            ),
            Err(DownstreamError::ForbiddenOrigin)
        ));
    }

    #[test]
    fn http2_authority_stands_in_for_host() {
        let cfg = ServerConfig::default();
        let ok: http::uri::Authority = "127.0.0.1:8080".parse().unwrap();
        let evil: http::uri::Authority = "evil.example.com".parse().unwrap();
        assert!(check_host_and_origin(&HeaderMap::new(), Some(&ok), &cfg).is_ok());
        assert!(check_host_and_origin(&HeaderMap::new(), Some(&evil), &cfg).is_err());
    }

    #[test]
    fn accept_parsing() {
        let a = accepts(&headers(&[(
            "accept",
            "application/json, text/event-stream",
        )]));
        assert!(a.json && a.sse);
        let a = accepts(&headers(&[("accept", "text/html")]));
        assert!(!a.json && !a.sse);
    }
}
