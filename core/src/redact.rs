//! Secrets out of printed URLs.

/// `url` with its secrets masked, for errors, logs and `Debug` output: the password of
/// the user info (`user:***@host`) and the values of query parameters that carry
/// secrets (`password`, `pass`, `pwd`, `token`, `secret`, `key_password`). Works on
/// URLs that name several hosts (`etcd://u:p@h1:1,h2:2/ns`), which are not valid
/// generic URLs; anything it cannot parse is returned unchanged.
///
/// ```
/// assert_eq!(
///     distsync::store::redact_url("rediss://app:s3cret@10.0.0.1:6380/0?timeout=5s"),
///     "rediss://app:***@10.0.0.1:6380/0?timeout=5s"
/// );
/// assert_eq!(
///     distsync::store::redact_url("postgres://app@db/app?password=s3cret&sslmode=require"),
///     "postgres://app@db/app?password=***&sslmode=require"
/// );
/// ```
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{hosts}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    format!("{scheme}://{authority}{}", redact_query(tail))
}

/// The query of `tail` (path, `?query`, `#fragment`) with secret values masked.
fn redact_query(tail: &str) -> String {
    let Some((path, after)) = tail.split_once('?') else {
        return tail.to_owned();
    };
    let (query, fragment) = match after.split_once('#') {
        Some((query, fragment)) => (query, Some(fragment)),
        None => (after, None),
    };
    let masked: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if is_secret(key) => format!("{key}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    let mut out = format!("{path}?{}", masked.join("&"));
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

fn is_secret(key: &str) -> bool {
    matches!(
        key.to_ascii_lowercase().as_str(),
        "password" | "pass" | "pwd" | "token" | "secret" | "key_password"
    )
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_masked_and_the_rest_kept() {
        for (url, shown) in [
            (
                "etcd://root:pw@h1:1,h2:2/ns?tls=true",
                "etcd://root:***@h1:1,h2:2/ns?tls=true",
            ),
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("redis://user@host:1", "redis://user@host:1"),
            (
                "postgres://u:p%40ss@h/db?schema=x&PASSWORD=y#f",
                "postgres://u:***@h/db?schema=x&PASSWORD=***#f",
            ),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redact_url(url), shown);
            assert!(!redact_url(url).contains("pw@") && !redact_url(url).contains("p%40ss"));
        }
    }
}
