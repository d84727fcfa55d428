//! The Lua scripts (in `lua/`), each run as one `EVALSHA` round trip.
//!
//! Every grant, release and renewal is one script call, so it is atomic on the
//! server. Each script is sent with the shared definitions of `lua/lib.lua` it uses,
//! and only those ([`compose`]): Redis runs a script's whole text on every call,
//! defining each of its functions anew, so a definition the script never calls still
//! costs server time on each call (the whole library's definitions cost about 1.7 µs
//! per call).
//!
//! The grant and release scripts of the waiter lines serve every kind of entry, so
//! they need most of the library; their common case, a lock taken and let go with
//! nobody else in line, needs a handful of definitions. Such a script is written in
//! two parts split by a line `-- @cold`: the first part handles the common case and
//! gets, at top level, only the definitions its code uses; the second, wrapped in a
//! function that runs only when the first part did not return, gets the rest. Lua
//! creates a nested function's inner functions only when it runs, so the common case
//! does not pay for the whole protocol's definitions (docs/BENCHMARKS.md, "Redis
//! cycle, and the peers", gives the server time per cycle either way).

use std::collections::HashSet;
use std::sync::LazyLock;

use redis::Script;

const LIB: &str = include_str!("../lua/lib.lua");

/// A Lua script: its source (sent as `EVAL` after a `NOSCRIPT`, see [`crate::call`]) and
/// its redis-rs [`Script`] (its SHA1, for `EVALSHA`).
pub(crate) struct Lua {
    pub(crate) script: Script,
    pub(crate) code: String,
}

impl Lua {
    /// The script of `code`.
    pub(crate) fn new(code: &str) -> Self {
        Self {
            script: Script::new(code),
            code: code.to_owned(),
        }
    }

    /// The script of `body`, after the definitions of `lua/lib.lua` it uses
    /// ([`compose`]).
    pub(crate) fn with_lib(body: &str) -> Self {
        Self::new(&compose(body))
    }
}

/// One top-level definition of `lua/lib.lua` (`local function NAME` or `local NAME =`),
/// with the comment lines just above it.
struct Definition<'a> {
    name: &'a str,
    text: &'a str,
}

/// The library split into its definitions, in order. Text before the first definition
/// (the file's header comment) goes with it.
fn definitions(lib: &str) -> Vec<Definition<'_>> {
    // Byte offsets of the definitions' first lines, moved up over their comments.
    let mut starts = Vec::new();
    let mut names = Vec::new();
    let mut offset = 0;
    let mut comment_start = None;
    for line in lib.split_inclusive('\n') {
        if line.starts_with("--") {
            comment_start.get_or_insert(offset);
        } else if let Some(rest) = line.strip_prefix("local ") {
            let rest = rest.strip_prefix("function ").unwrap_or(rest);
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            starts.push(comment_start.unwrap_or(offset));
            names.push(&rest[..end]);
            comment_start = None;
        } else if !line.starts_with(' ') && !line.starts_with('\t') {
            comment_start = None;
        }
        offset += line.len();
    }
    if let Some(first) = starts.first_mut() {
        *first = 0;
    }
    starts
        .iter()
        .enumerate()
        .map(|(i, &start)| Definition {
            name: names[i],
            text: &lib[start..starts.get(i + 1).copied().unwrap_or(lib.len())],
        })
        .collect()
}

/// The identifiers `text` names (in code or comments: a definition named only in a
/// comment is sent too, which costs a little and is safe). Read once per text, so
/// composing every script stays a few milliseconds even in a debug build: a process's
/// first Redis call pays for it.
fn identifiers(text: &str) -> HashSet<&str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|token| !token.is_empty())
        .collect()
}

/// The line that ends a script's first part (see the module docs).
const COLD: &str = "\n-- @cold\n";

/// Which definitions `body` uses, directly or through other definitions. With
/// `code_only`, names that only comments mention do not count.
fn needed(definitions: &[Definition<'_>], body: &str, code_only: bool) -> Vec<bool> {
    let text = |text: &str| {
        if code_only {
            without_comments(text)
        } else {
            text.to_owned()
        }
    };
    let mut needed = vec![false; definitions.len()];
    let mut pending = vec![text(body)];
    while let Some(text_now) = pending.pop() {
        let named = identifiers(&text_now);
        for (i, definition) in definitions.iter().enumerate() {
            if !needed[i] && named.contains(definition.name) {
                needed[i] = true;
                pending.push(text(definition.text));
            }
        }
    }
    needed
}

/// `text` without its Lua line comments (`--` outside a quoted string, to the end of
/// the line).
fn without_comments(text: &str) -> String {
    let mut code = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let mut quote = None;
        let mut end = line.len();
        let bytes = line.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            match (quote, bytes[i]) {
                (None, b'\'' | b'"') => quote = Some(bytes[i]),
                (Some(_), b'\\') => i += 1,
                (Some(q), c) if c == q => quote = None,
                (None, b'-') if bytes.get(i + 1) == Some(&b'-') => {
                    end = i;
                    break;
                }
                _ => {}
            }
            i += 1;
        }
        code.push_str(&line[..end]);
        if end < line.len() && line.ends_with('\n') {
            code.push('\n');
        }
    }
    code
}

/// The definitions marked in `needed`, in the library's order (each is defined before
/// its users there).
fn push_definitions(script: &mut String, definitions: &[Definition<'_>], needed: &[bool]) {
    for (definition, _) in definitions.iter().zip(needed).filter(|(_, &n)| n) {
        script.push_str(definition.text);
    }
}

/// `body` after the definitions of `lua/lib.lua` it uses, directly or through other
/// definitions, in the library's order.
///
/// A body with a `-- @cold` line is composed in two parts (see the module docs): the
/// definitions the code before that line uses, that code, then a function `cold` made
/// of the other definitions the script uses and the code after the line, called when
/// the first part did not return. The first part's locals are visible in the second.
pub(crate) fn compose(body: &str) -> String {
    let definitions = definitions(LIB);
    let all = needed(&definitions, body, false);
    let mut script = String::with_capacity(LIB.len() + body.len() + 64);
    let Some(split) = body.find(COLD) else {
        push_definitions(&mut script, &definitions, &all);
        script.push('\n');
        script.push_str(body);
        return script;
    };
    let (first, second) = (&body[..=split], &body[split + COLD.len()..]);
    let hot = needed(&definitions, first, true);
    let cold: Vec<bool> = all.iter().zip(&hot).map(|(&a, &h)| a && !h).collect();
    push_definitions(&mut script, &definitions, &hot);
    script.push('\n');
    script.push_str(first);
    script.push_str("local function cold()\n");
    push_definitions(&mut script, &definitions, &cold);
    script.push('\n');
    script.push_str(second);
    script.push_str("\nend\nreturn cold()\n");
    script
}

/// Declares the scripts of `lua/<name>.lua` that the modules share: [`Scripts`], one
/// field per name, [`SCRIPTS`], and [`script_source`], from one list of names, each
/// with the [`Lua`] constructor it needs (`with_lib` for a script that uses
/// `lua/lib.lua`).
macro_rules! scripts {
    ($(#[$source_doc:meta])* ; $($name:ident: $make:ident),* $(,)?) => {
        /// Every script, compiled (hashed) once per process.
        pub(crate) struct Scripts {
            $(pub(crate) $name: Lua,)*
        }

        pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
            $($name: Lua::$make(include_str!(concat!("../lua/", stringify!($name), ".lua"))),)*
        });

        $(#[$source_doc])*
        pub fn script_source(name: &str) -> Option<&'static str> {
            let scripts = &*SCRIPTS;
            let lua = match name {
                $(stringify!($name) => &scripts.$name,)*
                _ => return None,
            };
            Some(&lua.code)
        }
    };
}

scripts! {
    /// The Lua text distsync sends for the script of `lua/<name>.lua` (with the library
    /// definitions it uses, as the backend composes it), or `None` for an unknown name.
    /// For review, and for tools that run the scripts as the backend does (the bench's
    /// diagnostic row).
    ///
    /// ```
    /// let release = distsync::store::redis::script_source("release").unwrap();
    /// assert!(release.contains("local function release_hold"));
    /// assert!(!release.contains("local function queue_sweep"));
    /// ```
    ;
    session_open: new,
    keepalive: with_lib,
    keepalive_held: new,
    registry: new,
    revoke: with_lib,
    fair_acquire: with_lib,
    fair_count: with_lib,
    release: with_lib,
    leader: with_lib,
    proclaim: with_lib,
    queue_pop: with_lib,
    queue_cancel: with_lib,
    barrier_release: with_lib,
    dbar_enter: with_lib,
    dbar_leave: with_lib,
    stm_read: new,
    stm_commit: new,
    export: new,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_library_splits_into_its_definitions_and_nothing_is_lost() {
        let definitions = definitions(LIB);
        let joined: String = definitions.iter().map(|d| d.text).collect();
        assert_eq!(joined, LIB);
        let names: Vec<&str> = definitions.iter().map(|d| d.name).collect();
        for name in [
            "CHP",
            "publish",
            "counter_next",
            "fq_settle",
            "release_hold",
            "session_left",
        ] {
            assert!(names.contains(&name), "{name} not found in {names:?}");
        }
        // A definition starts with its own comment.
        let counter = definitions
            .iter()
            .find(|d| d.name == "counter_next")
            .unwrap();
        assert!(counter.text.starts_with("-- The next value of a counter"));
    }

    #[test]
    fn a_script_gets_what_it_uses_and_what_that_uses_in_order() {
        let script = compose("return counter_next(KEYS[1])");
        assert!(script.contains("local function counter_next"));
        assert!(!script.contains("local function fq_settle"));
        let release = compose(include_str!("../lua/release.lua"));
        // release_hold calls fq_settle, which calls publish, which reads CHP.
        let order: Vec<usize> = [
            "local CHP",
            "local function publish",
            "local function fq_settle",
            "local function release_hold",
        ]
        .iter()
        .map(|d| release.find(d).unwrap_or_else(|| panic!("{d} missing")))
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
        assert!(!release.contains("local function queue_now"));
        assert!(release.len() < LIB.len());
    }

    #[test]
    fn a_split_script_defines_only_what_its_first_part_runs_before_it() {
        let release = compose(include_str!("../lua/release.lua"));
        let cold = release
            .find("local function cold()")
            .expect("no second part");
        let (first, second) = release.split_at(cold);
        assert!(first.contains("local function session_unlist"), "{first}");
        assert!(first.contains("local FAIR_IDLE_MS"), "{first}");
        // Named in the first part's comments only: defined in the second.
        assert!(!first.contains("local function release_hold"), "{first}");
        assert!(second.contains("local function release_hold"), "{second}");
        assert!(
            second.trim_end().ends_with("end\nreturn cold()"),
            "{second}"
        );
        // Nothing is defined twice.
        assert!(
            !second.contains("local function session_unlist"),
            "{second}"
        );

        let acquire = compose(include_str!("../lua/fair_acquire.lua"));
        let cold = acquire
            .find("local function cold()")
            .expect("no second part");
        let (first, second) = acquire.split_at(cold);
        for used in [
            "session_left",
            "session_list",
            "fq_grant_alone",
            "counter_next",
        ] {
            assert!(first.contains(&format!("local function {used}")), "{used}");
            assert!(
                !second.contains(&format!("local function {used}")),
                "{used}"
            );
        }
        for cold_only in [
            "fq_settle",
            "epoch_start",
            "promotion_left",
            "release_hold",
            "sem_agree",
        ] {
            assert!(
                !first.contains(&format!("local function {cold_only}")),
                "{cold_only}"
            );
            assert!(
                second.contains(&format!("local function {cold_only}")),
                "{cold_only}"
            );
        }
        // A script without the marker is composed in one part.
        assert!(!compose("return counter_next(KEYS[1])").contains("cold"));
    }

    #[test]
    fn comments_are_cut_but_not_inside_strings() {
        assert_eq!(
            without_comments("local a = 'x--y' -- fq_settle\nb(\"--\") --c\n--d\n"),
            "local a = 'x--y' \nb(\"--\") \n\n"
        );
        assert_eq!(without_comments("a = 'it\\'s' -- c"), "a = 'it\\'s' ");
    }

    #[test]
    fn every_library_script_compiles_into_known_sources() {
        for name in [
            "fair_acquire",
            "release",
            "keepalive",
            "queue_pop",
            "stm_commit",
        ] {
            assert!(script_source(name).is_some(), "{name}");
        }
        assert!(script_source("nope").is_none());
    }
}
