//! Elections: the interactive demo scripted over standard input, two candidates in two
//! processes, `elect NAME VALUE` and `elect --listen`.
#![cfg(unix)]

mod common;

use common::{field, memory, number, servers, unique, Backend, Proc};

fn scripted_session(backend: &Backend) {
    let name = unique("interactive-election");
    let mut repl = Proc::spawn(Some(&backend.url), &["interactive", "election", &name]);
    let label = backend.label;

    repl.send("elect a");
    assert_eq!(repl.line(), "campaigning value=a", "{label}");
    let elected = repl.expect("elected value=a term=");
    let (term, key) = (number(&elected, "term"), field(&elected, "key").to_owned());
    // The key's layout is the backend's (etcd and memory: `<name>/<lease hex>`).
    assert!(!key.is_empty(), "{label}: {elected}");

    repl.send("query");
    assert_eq!(
        repl.line(),
        format!("current leader value=a term={term} key={key}"),
        "{label}"
    );
    repl.send("proclaim b");
    assert_eq!(repl.line(), "proclaimed value=b", "{label}");
    repl.send("query");
    assert_eq!(
        repl.line(),
        format!("current leader value=b term={term} key={key}"),
        "{label}"
    );
    repl.send("rev");
    assert_eq!(repl.line(), format!("current rev={term}"), "{label}");
    repl.send("resign");
    assert_eq!(repl.line(), "resigned", "{label}");
    repl.send("query");
    assert_eq!(repl.line(), "no leader", "{label}");
    repl.send("proclaim c");
    assert_eq!(repl.line(), "error: proclaim: not leader", "{label}");
    repl.send("rev");
    assert_eq!(repl.line(), "current rev=0", "{label}");
    repl.send("nonsense");
    assert_eq!(repl.line(), "unknown action: nonsense", "{label}");

    repl.close_stdin();
    assert_eq!(repl.wait(), 0, "{label}: {}", repl.stderr());
    assert!(repl.rest().is_empty(), "{label}");
}

#[test]
fn an_interactive_election_scripted_over_stdin() {
    scripted_session(&memory());
    for server in servers() {
        scripted_session(&server);
    }
}

#[test]
fn default_values_are_the_go_demos() {
    let mut repl = Proc::spawn(Some("memory://"), &["repl", "election", "e", "--id", "7"]);
    repl.send("elect");
    assert_eq!(repl.line(), "campaigning value=value-7-0");
    repl.expect("elected value=value-7-0 term=");
    repl.send("proclaim");
    assert_eq!(repl.line(), "proclaimed value=value-7-1");
    repl.send("elect");
    assert_eq!(repl.line(), "error: elect: already leader");
    repl.close_stdin();
    assert_eq!(repl.wait(), 0, "{}", repl.stderr());
}

#[test]
fn two_terminals_play_the_election_demo() {
    for server in servers() {
        let label = server.label;
        let name = unique("two-candidates");
        let url = Some(server.url.as_str());
        let mut first = Proc::spawn(url, &["interactive", "election", &name]);
        first.send("elect a");
        first.expect("campaigning value=a");
        let first_term = number(&first.expect("elected value=a term="), "term");

        let mut second = Proc::spawn(url, &["interactive", "election", &name]);
        second.send("elect b");
        second.expect("campaigning value=b");
        second.send("query");
        second.expect(&format!("current leader value=a term={first_term} "));
        second.send("watch");
        assert_eq!(second.line(), "watching", "{label}");
        second.expect(&format!("leader changed value=a term={first_term} "));
        second.quiet();

        first.send("resign");
        assert_eq!(first.line(), "resigned", "{label}");
        // The campaign's result and the watch's line come from two tasks: either order.
        let mut lines = [second.line(), second.line()];
        lines.sort();
        assert!(
            lines[0].starts_with("elected value=b term="),
            "{label}: {lines:?}"
        );
        assert!(
            lines[1].starts_with("leader changed value=b term="),
            "{label}: {lines:?}"
        );
        let second_term = number(&lines[0], "term");
        assert_eq!(number(&lines[1], "term"), second_term, "{label}");
        assert!(
            second_term > first_term,
            "{label}: {first_term} then {second_term}"
        );

        first.send("query");
        first.expect(&format!("current leader value=b term={second_term} "));
        first.close_stdin();
        second.close_stdin();
        assert_eq!(first.wait(), 0, "{label}: {}", first.stderr());
        assert_eq!(second.wait(), 0, "{label}: {}", second.stderr());
    }
}

#[test]
fn elect_holds_until_interrupted_and_listen_prints_every_leader() {
    for server in servers() {
        let label = server.label;
        let name = unique("elect-listen");
        let url = Some(server.url.as_str());
        let mut listener = Proc::spawn(url, &["elect", "--listen", &name]);
        listener.quiet();

        let mut one = Proc::spawn(url, &["elect", &name, "one"]);
        let elected = one.expect(&format!("leader {name} value=one term="));
        let one_term = number(&elected, "term");
        assert_eq!(listener.line(), format!("one term={one_term}"), "{label}");

        let mut two = Proc::spawn(url, &["elect", &name, "two"]);
        two.quiet();
        one.signal(libc::SIGINT);
        assert_eq!(one.wait(), 130, "{label}: {}", one.stderr());
        let elected = two.expect(&format!("leader {name} value=two term="));
        let two_term = number(&elected, "term");
        assert!(two_term > one_term, "{label}: {one_term} then {two_term}");
        assert_eq!(listener.line(), format!("two term={two_term}"), "{label}");

        two.signal(libc::SIGTERM);
        assert_eq!(two.wait(), 130, "{label}: {}", two.stderr());
        listener.signal(libc::SIGINT);
        assert_eq!(listener.wait(), 130, "{label}: {}", listener.stderr());
    }
}
