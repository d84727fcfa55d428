//! URLs that name several hosts, `scheme://[userinfo@]host[:port][,...][/path][?query]`
//! (etcd, ZooKeeper, NATS, Redis Sentinel and Cluster), which the `url` crate does not
//! parse.

/// A URL naming several hosts, split into its parts.
#[derive(Clone, PartialEq, Eq)]
pub struct MultiHostUrl<'a> {
    /// The scheme, as written.
    pub scheme: &'a str,
    /// The user info before the `@`, as written (it may hold a password).
    pub userinfo: Option<&'a str>,
    /// Each host (an IPv6 host without its brackets) and port, in URL order.
    pub hosts: Vec<(String, u16)>,
    /// The path with its leading `/`; empty when the URL has none.
    pub path: &'a str,
    /// The query without its `?`; empty when the URL has none.
    pub query: &'a str,
}

/// Shows `***` for the user info, which may hold a password.
impl std::fmt::Debug for MultiHostUrl<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultiHostUrl")
            .field("scheme", &self.scheme)
            .field("userinfo", &self.userinfo.map(|_| "***"))
            .field("hosts", &self.hosts)
            .field("path", &self.path)
            .field("query", &self.query)
            .finish()
    }
}

impl<'a> MultiHostUrl<'a> {
    /// Splits `url`, each host read by [`parse_host_port`] with `default_port`.
    ///
    /// # Errors
    /// The reason (never the user info) for no `://`, a fragment, or a bad host.
    pub fn parse(url: &'a str, default_port: Option<u16>) -> Result<Self, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or("expected scheme://host:port[,host:port...]")?;
        if rest.contains('#') {
            return Err("fragments are not supported".into());
        }
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => (Some(userinfo), hosts),
            None => (None, authority),
        };
        if hosts.is_empty() {
            return Err("no host: expected host:port".into());
        }
        let hosts = hosts
            .split(',')
            .map(|host| parse_host_port(host, default_port))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            scheme,
            userinfo,
            hosts,
            path,
            query,
        })
    }

    /// The user info as a login, `user:password`, each percent-decoded (a `+` stays a
    /// `+`); `None` without user info.
    ///
    /// # Errors
    /// The reason, never the password, for no password or an empty user.
    pub fn login(&self) -> Result<Option<super::Login>, String> {
        let Some(userinfo) = self.userinfo else {
            return Ok(None);
        };
        let (user, password) = userinfo
            .split_once(':')
            .ok_or("the user info needs a password: `user:password@host`")?;
        let decode = |text: &str| {
            url::form_urlencoded::parse(format!("x={}", text.replace('+', "%2B")).as_bytes())
                .next()
                .map(|(_, value)| value.into_owned())
                .unwrap_or_default()
        };
        let (user, password) = (decode(user), decode(password));
        if user.is_empty() {
            return Err("the user info has an empty user name".into());
        }
        Ok(Some(super::Login::new(user, password)))
    }
}

/// Parses `host[:port]` (IPv6 in brackets: `[::1]:2379`) into a valid host, without
/// brackets, and a port above zero, `default_port` when none is given (`None`: required).
///
/// # Errors
/// The reason, naming `text`.
pub fn parse_host_port(text: &str, default_port: Option<u16>) -> Result<(String, u16), String> {
    let bad = |why: &str| format!("host {text:?}: {why}");
    let (host, port) = match text.strip_prefix('[') {
        Some(bracketed) => {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| bad("unclosed `[`"))?;
            match after {
                "" => (host, None),
                after => (
                    host,
                    Some(
                        after
                            .strip_prefix(':')
                            .ok_or_else(|| bad("no `:` after `]`"))?,
                    ),
                ),
            }
        }
        None => match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        },
    };
    if host.is_empty() {
        return Err(bad("no host name (two commas, or a trailing comma?)"));
    }
    let bracketed = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    url::Host::parse(&bracketed).map_err(|error| bad(&format!("bad host: {error}")))?;
    let port = match port {
        Some(port) => port
            .parse()
            .ok()
            .filter(|&port| port != 0)
            .ok_or_else(|| bad("bad port"))?,
        None => default_port.ok_or_else(|| bad("needs a port (host:port)"))?,
    };
    Ok((host.to_owned(), port))
}

/// `host:port`, an IPv6 host in brackets (`[::1]:2379`): the form clients take.
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_split_into_its_parts() {
        let url = MultiHostUrl::parse("zk://u:p%40ss@a:1,b:2/x/y?timeout=1s", None).unwrap();
        assert_eq!(url.scheme, "zk");
        assert_eq!(url.userinfo, Some("u:p%40ss"));
        assert_eq!(url.hosts, [("a".to_owned(), 1), ("b".to_owned(), 2)]);
        assert_eq!((url.path, url.query), ("/x/y", "timeout=1s"));
        assert!(!format!("{url:?}").contains("p%40ss"));
        let bare = MultiHostUrl::parse("etcd://h", Some(7)).unwrap();
        assert_eq!((bare.userinfo, bare.path, bare.query), (None, "", ""));
        assert_eq!(bare.hosts, [("h".to_owned(), 7)]);
        assert_eq!(MultiHostUrl::parse("etcd://h/", Some(7)).unwrap().path, "/");
    }

    #[test]
    fn bad_urls_are_refused_without_the_password() {
        for (url, reason) in [
            ("etcd:/h:1", "expected scheme://"),
            ("etcd://u:hunter2@h:1#f", "fragments"),
            ("etcd://u:hunter2@", "no host"),
            ("etcd:///ns", "no host"),
            ("etcd://h:1,", "no host name"),
            ("etcd://h:1,,b:2", "no host name"),
            ("etcd://[::1", "unclosed"),
            ("etcd://[::1]x", "no `:`"),
            ("etcd://a b:1", "bad host"),
            ("etcd://h:0", "bad port"),
            ("etcd://h:x", "bad port"),
            ("etcd://h:70000", "bad port"),
            ("zk://h", "needs a port"),
        ] {
            let default = url.starts_with("etcd").then_some(2379);
            let error = MultiHostUrl::parse(url, default).unwrap_err();
            assert!(error.contains(reason), "{url}: {error}");
            assert!(!error.contains("hunter2"), "{error}");
        }
    }

    #[test]
    fn hosts_keep_ipv6_in_brackets_only_when_joined() {
        assert_eq!(parse_host_port("[::1]:5", None), Ok(("::1".to_owned(), 5)));
        assert_eq!(parse_host_port("[::1]", Some(9)), Ok(("::1".to_owned(), 9)));
        assert!(parse_host_port("::1", Some(9)).is_err());
        assert_eq!(join_host_port("::1", 5), "[::1]:5");
        assert_eq!(join_host_port("db", 5), "db:5");
    }

    #[test]
    fn a_login_is_a_user_and_a_password_never_shown() {
        let login = |userinfo: &str| {
            MultiHostUrl {
                userinfo: Some(userinfo),
                ..MultiHostUrl::parse("x://h:1", None).unwrap()
            }
            .login()
        };
        assert_eq!(
            login("u:p%3Aw+d"),
            Ok(Some(super::super::Login::new("u", "p:w+d")))
        );
        assert_eq!(login("u:"), Ok(Some(super::super::Login::new("u", ""))));
        for bad in ["u", ":hunter2", "%20x"] {
            let reason = login(bad).unwrap_err();
            assert!(!reason.contains("hunter2"), "{reason}");
        }
    }
}
