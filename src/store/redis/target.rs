//! What `[store] url` names: one standalone Redis (or Valkey) primary, or
//! a Redis Cluster given by some of its nodes.
//!
//! - `redis://[user:pass@]host:port[/db]`, `rediss://…` (TLS) — standalone.
//! - `redis+cluster://[user:pass@]host:port[,host:port…]`,
//!   `rediss+cluster://…` — a Redis Cluster; the nodes listed are where
//!   the client starts (it learns the rest from `CLUSTER SLOTS`). A cluster
//!   has only database 0, so no `/db`. The same form as Lettuce's and
//!   ioredis' seed lists; the scheme names the mode, so a cluster is never
//!   mistaken for a standalone node.

/// The Redis deployment a `url` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One standalone primary: the URL as given.
    Single(String),
    /// A Redis Cluster: one `redis://` (or `rediss://`) URL per seed node,
    /// each with the credentials and query of the original.
    Cluster(Vec<String>),
}

/// Why a `url` is not a store URL (shown as the config error's text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadUrl(pub String);

impl Target {
    /// Parses `url` (module docs for the forms). Only the shape is checked
    /// here; host names are resolved on connect.
    ///
    /// # Errors
    /// [`BadUrl`]: another scheme, no host, an empty or port-less cluster
    /// node, or a `/db` on a cluster URL.
    pub fn parse(url: &str) -> Result<Self, BadUrl> {
        if url.starts_with("redis://") || url.starts_with("rediss://") {
            return if url
                .split_once("://")
                .is_some_and(|(_, rest)| !rest.is_empty())
            {
                Ok(Self::Single(url.to_owned()))
            } else {
                Err(BadUrl("names no host".into()))
            };
        }
        let (scheme, rest) = if let Some(rest) = url.strip_prefix("redis+cluster://") {
            ("redis", rest)
        } else if let Some(rest) = url.strip_prefix("rediss+cluster://") {
            ("rediss", rest)
        } else {
            return Err(BadUrl(
                "must start with redis://, rediss://, redis+cluster:// or rediss+cluster://".into(),
            ));
        };
        // `#insecure` (TLS without certificate checks) is a fragment for the
        // redis crate; `?…` a query; both go to every node's URL.
        let (rest, fragment) = match rest.split_once('#') {
            Some((r, f)) => (r, Some(f)),
            None => (rest, None),
        };
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (userinfo, rest) = match rest.rsplit_once('@') {
            Some((u, r)) => (Some(u), r),
            None => (None, rest),
        };
        let (hosts, db) = rest.split_once('/').unwrap_or((rest, ""));
        if !db.is_empty() && db != "0" {
            return Err(BadUrl(format!(
                "a Redis Cluster has only database 0, not /{db}"
            )));
        }
        let mut nodes = Vec::new();
        for node in hosts.split(',') {
            let node = node.trim();
            let port_ok = node
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !port_ok {
                return Err(BadUrl(format!(
                    "cluster node `{node}` is not host:port (list nodes as host:port,host:port)"
                )));
            }
            let mut one = format!("{scheme}://");
            if let Some(u) = userinfo {
                one.push_str(u);
                one.push('@');
            }
            one.push_str(node);
            if let Some(q) = query {
                one.push('?');
                one.push_str(q);
            }
            if let Some(f) = fragment {
                one.push('#');
                one.push_str(f);
            }
            nodes.push(one);
        }
        Ok(Self::Cluster(nodes))
    }

    /// The URLs of the nodes a pub/sub connection may use, in order of
    /// preference: the one standalone URL, or every seed node.
    pub fn nodes(&self) -> &[String] {
        match self {
            Self::Single(url) => std::slice::from_ref(url),
            Self::Cluster(nodes) => nodes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standalone_urls_are_kept_as_given() {
        for url in ["redis://127.0.0.1:6379", "rediss://u:p@h:6380/2"] {
            assert_eq!(Target::parse(url), Ok(Target::Single(url.into())));
        }
    }

    #[test]
    fn a_cluster_url_lists_its_seed_nodes_with_credentials_and_query() {
        let t = Target::parse("rediss+cluster://u:p%2Fq@a:7000, b:7001?protocol=resp3#insecure")
            .expect("parses");
        assert_eq!(
            t,
            Target::Cluster(vec![
                "rediss://u:p%2Fq@a:7000?protocol=resp3#insecure".into(),
                "rediss://u:p%2Fq@b:7001?protocol=resp3#insecure".into()
            ])
        );
        assert_eq!(
            Target::parse("redis+cluster://[::1]:7000/#x"),
            Ok(Target::Cluster(vec!["redis://[::1]:7000#x".into()]))
        );
        // The redis crate reads each node URL as we meant it.
        for node in t.nodes() {
            let info: redis::ConnectionInfo =
                redis::IntoConnectionInfo::into_connection_info(node.as_str()).expect("valid");
            assert_eq!(info.redis_settings().username(), Some("u"));
            assert!(
                matches!(
                    info.addr(),
                    redis::ConnectionAddr::TcpTls { insecure: true, .. }
                ),
                "{:?}",
                info.addr()
            );
        }
        assert_eq!(
            Target::parse("redis+cluster://a:7000/0"),
            Ok(Target::Cluster(vec!["redis://a:7000".into()]))
        );
    }

    #[test]
    fn bad_urls_say_why() {
        for (url, why) in [
            ("http://a:1", "must start with"),
            ("redis://", "no host"),
            ("redis+cluster://a:7000,", "is not host:port"),
            ("redis+cluster://a", "is not host:port"),
            ("redis+cluster://a:7000/3", "only database 0"),
        ] {
            let err = Target::parse(url).expect_err(url);
            assert!(err.0.contains(why), "{url}: {err}");
        }
    }
}
