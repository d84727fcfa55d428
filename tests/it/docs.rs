//! The docs read against the code, so that they cannot drift from it: every URL scheme
//! a driver answers is in README's, docs/CONNECTING.md's and cli/README's URL tables;
//! every URL key a store's parser accepts (read from the parser's own refusal, which
//! lists them) is documented in that store's section of docs/CONNECTING.md; and a
//! sentence there that says a primitive is not built (`Error::Unsupported`, "not
//! yet", "only the ...") agrees with the store's `Capabilities`; and the table of size
//! limits in docs/ERRORS.md gives each store's declared `max_value_size`.
#![cfg(feature = "full")]

use distsync::store::DRIVERS;
use distsync::{Capabilities, Error};

fn read(path: &str) -> String {
    let full = concat!(env!("CARGO_MANIFEST_DIR"), "/").to_owned() + path;
    std::fs::read_to_string(&full).unwrap_or_else(|error| panic!("{full}: {error}"))
}

/// The section of `text` under the `## ` heading that starts with `heading`, up to the
/// next `## ` heading.
fn section<'a>(text: &'a str, heading: &str) -> &'a str {
    let start = text
        .find(&format!("\n## {heading}"))
        .unwrap_or_else(|| panic!("docs/CONNECTING.md has no section `## {heading}`"));
    let rest = &text[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |end| end + 3);
    &rest[..end]
}

/// Whether `text` names `scheme://` as a scheme of its own (not the tail of another,
/// as `redis://` is not in `rediss://` but `tls://` would be in `rediss+tls://`).
fn mentions(text: &str, scheme: &str) -> bool {
    let needle = format!("{scheme}://");
    text.match_indices(&needle).any(|(at, _)| {
        text[..at]
            .chars()
            .next_back()
            .is_none_or(|before| !(before.is_ascii_alphanumeric() || "+.-".contains(before)))
    })
}

/// A URL of `scheme` that its parser refuses for one unknown key, and the heading of
/// the store's section in docs/CONNECTING.md.
fn probe(scheme: &str) -> Option<(String, &'static str)> {
    let (rest, heading) = match scheme {
        "memory" => return None,
        "etcd" => ("127.0.0.1:9/", "etcd"),
        "redis" | "rediss" | "redis+cluster" | "rediss+cluster" => ("127.0.0.1:9/", "Redis"),
        "redis+sentinel" => ("127.0.0.1:9/service", "Redis"),
        "postgres" | "postgresql" => ("u@127.0.0.1:9/db", "PostgreSQL"),
        "zk" | "zks" => ("127.0.0.1:9/", "ZooKeeper"),
        "mysql" | "mariadb" => ("u@127.0.0.1:9/db", "MySQL"),
        "nats" | "tls" => ("127.0.0.1:9/", "NATS"),
        other => panic!("scheme `{other}` has no section here: add it, and to docs/CONNECTING.md"),
    };
    Some((format!("{scheme}://{rest}?docs_probe_key=1"), heading))
}

#[test]
fn every_scheme_is_in_every_url_table() {
    let docs = [
        ("README.md", read("README.md")),
        ("docs/CONNECTING.md", read("docs/CONNECTING.md")),
        ("cli/README.md", read("cli/README.md")),
    ];
    let mut missing = Vec::new();
    for driver in DRIVERS {
        for scheme in driver.schemes {
            for (path, text) in &docs {
                // CONNECTING.md is about servers; the memory store is in the others.
                if *scheme == "memory" && *path == "docs/CONNECTING.md" {
                    continue;
                }
                if !mentions(text, scheme) {
                    missing.push(format!("{path} lacks `{scheme}://`"));
                }
            }
        }
    }
    assert!(missing.is_empty(), "{missing:#?}");
}

#[tokio::test]
async fn every_url_key_is_documented_in_its_stores_section() {
    let connecting = read("docs/CONNECTING.md");
    let mut missing = Vec::new();
    for driver in DRIVERS {
        for scheme in driver.schemes {
            let Some((url, heading)) = probe(scheme) else {
                continue;
            };
            let text = section(&connecting, heading);
            let reason = match distsync::connect(&url).await {
                Err(Error::InvalidUrl { reason, .. }) => reason,
                // A scheme the store refuses whole must say so in its section.
                Err(Error::Unsupported { .. }) => {
                    if !(mentions(text, scheme) && text.contains("Unsupported")) {
                        missing.push(format!(
                            "`{scheme}://` refused (Unsupported) in `## {heading}`"
                        ));
                    }
                    continue;
                }
                other => panic!("{url}: {other:?}"),
            };
            let accepted = reason
                .split_once("(accepted: ")
                .unwrap_or_else(|| panic!("{url}: the refusal lists no keys: {reason}"))
                .1;
            for key in accepted.split('`').skip(1).step_by(2) {
                if !text.contains(&format!("`{key}`")) && !text.contains(&format!("{key}=")) {
                    missing.push(format!("`{key}` ({scheme}://) in `## {heading}`"));
                }
            }
        }
    }
    missing.dedup();
    assert!(
        missing.is_empty(),
        "docs/CONNECTING.md does not document: {missing:#?}"
    );
}

/// Whether a store's capabilities say it builds a primitive.
type Builds = fn(&Capabilities) -> bool;

/// The primitives a sentence may name, with the flag of [`Capabilities`] that says
/// whether a store builds each. Longer names first, so that "read-write lock" is not
/// read as "lock".
const PRIMITIVES: &[(&str, Builds)] = &[
    ("read-write lock", |c| c.rwlock),
    ("unfair lock", |c| c.unfair_lock),
    ("double barrier", |c| c.double_barrier),
    ("rate limiter", |c| c.rate_limiter),
    ("hand-over", |c| c.hand_over),
    ("election", |c| c.election),
    ("semaphore", |c| c.semaphore),
    ("barrier", |c| c.barrier),
    ("counter", |c| c.counter),
    ("latch", |c| c.latch),
    ("queue", |c| c.queue),
    ("lock", |c| c.lock),
];

/// The primitives `sentence` names (each once), by [`PRIMITIVES`]' words: a word counts
/// when no letter or `-` joins it to the next (`lock-delay` is no lock).
fn named(sentence: &str) -> Vec<&'static str> {
    let mut text = sentence.to_lowercase();
    let mut found = Vec::new();
    for (word, _) in PRIMITIVES {
        while let Some(at) = text.find(word) {
            let next = text[at + word.len()..].chars().next();
            let before = text[..at].chars().next_back();
            let joined = next.is_some_and(|c| c.is_ascii_alphabetic() && c != 's' || c == '-')
                || before.is_some_and(|c| c.is_ascii_alphabetic() || c == '-');
            if !joined && !found.contains(word) {
                found.push(*word);
            }
            text.replace_range(at..at + word.len(), &" ".repeat(word.len()));
        }
    }
    found
}

#[test]
fn a_primitive_the_docs_call_unbuilt_is_unbuilt() {
    let connecting = read("docs/CONNECTING.md");
    let mut wrong = Vec::new();
    for driver in DRIVERS {
        let Some(heading) = driver
            .schemes
            .iter()
            .find_map(|scheme| probe(scheme))
            .map(|(_, heading)| heading)
        else {
            continue;
        };
        let capabilities = (driver.capabilities)();
        let builds = |word: &str| {
            PRIMITIVES
                .iter()
                .find(|(name, _)| *name == word)
                .is_some_and(|(_, flag)| flag(&capabilities))
        };
        let text = section(&connecting, heading).replace('\n', " ");
        for sentence in text.split(". ") {
            let lower = sentence.to_lowercase();
            let says_unbuilt = lower.contains("unsupported")
                || lower.contains("not yet")
                || lower.contains("not built")
                || lower.contains("only the ");
            if !says_unbuilt {
                continue;
            }
            let words = named(sentence);
            // "Only the lock is built": the lock is, and every other primitive is not.
            if let Some(rest) = lower.split_once("only the ").map(|(_, rest)| rest) {
                if rest.contains("built") || rest.contains("offered") {
                    for (word, _) in PRIMITIVES {
                        if builds(word) != words.contains(word) {
                            wrong.push(format!(
                                "{heading}: {sentence:?}: {} the {word}",
                                if builds(word) { "builds" } else { "lacks" }
                            ));
                        }
                    }
                }
                continue;
            }
            for word in words {
                if builds(word) {
                    wrong.push(format!(
                        "{heading}: {sentence:?}: the {} builds the {word}",
                        driver.name
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "docs/CONNECTING.md contradicts the capabilities: {wrong:#?}"
    );
}

/// The rows of docs/ERRORS.md's table of size limits: the store's name (its first cell,
/// in backticks) and its second cell.
fn size_limit_rows(errors: &str) -> Vec<(String, String)> {
    let start = errors
        .find("\n## Size limits per store")
        .expect("docs/ERRORS.md has no section `## Size limits per store`");
    let rest = &errors[start + 1..];
    let section = &rest[..rest[3..].find("\n## ").map_or(rest.len(), |end| end + 3)];
    section
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let store = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            Some((store.to_owned(), (*cells.get(2)?).to_owned()))
        })
        .collect()
}

/// docs/ERRORS.md gives every store's limit as its driver declares it: the figure in
/// bytes, or for a limit read from the server at connect, "from the server" and the
/// figure of the server's default, which is what the driver declares without a
/// connection.
#[test]
fn every_stores_size_limit_is_documented_as_declared() {
    let rows = size_limit_rows(&read("docs/ERRORS.md"));
    let mut wrong = Vec::new();
    for driver in DRIVERS {
        let declared = (driver.capabilities)().max_value_size;
        let Some((_, cell)) = rows.iter().find(|(store, _)| store == driver.name) else {
            wrong.push(format!("{}: no row", driver.name));
            continue;
        };
        let figure: Option<usize> = cell
            .split(|c: char| !c.is_ascii_digit())
            .find(|digits| !digits.is_empty())
            .and_then(|digits| digits.parse().ok());
        let from_server = cell.starts_with("from the server; default ");
        if figure != Some(declared) || !(from_server || cell.parse::<usize>().is_ok()) {
            wrong.push(format!(
                "{}: the table says {cell:?}, the driver declares {declared}",
                driver.name
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "docs/ERRORS.md's size limits differ from the drivers': {wrong:#?}"
    );
}
