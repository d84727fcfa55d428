//! `distsync revoke NAME` against a `distsync lock --revocable NAME -- CMD` holder in
//! another process, on a real server.
#![cfg(unix)]

use crate::common;

use common::{number, run, servers, unique, Proc, RUN_UNTIL_TERMINATED};

#[test]
fn a_revoke_request_stops_a_revocable_holders_command() {
    for server in servers() {
        let name = unique("revoke-cli");
        let url = Some(server.url.as_str());
        let (code, _, _) = run(url, &["revoke", &name]);
        assert_eq!(code, 1, "{}: a revoke of a lock nobody holds", server.label);

        let mut holder = Proc::spawn(
            url,
            &[
                "lock",
                &name,
                "--revocable",
                "--",
                "sh",
                "-c",
                RUN_UNTIL_TERMINATED,
            ],
        );
        let held = holder.expect(&format!("{name} key="));
        let token = number(&held, "token");

        let (code, lines, stderr) = run(url, &["revoke", &name]);
        assert_eq!(code, 0, "{}: {stderr}", server.label);
        let asked = lines.first().expect("one line");
        assert!(
            asked.starts_with(&format!("asked {name} ")),
            "{}: {asked}",
            server.label
        );
        assert_eq!(number(asked, "token"), token, "{}", server.label);

        assert_eq!(holder.wait(), 143, "{}: {}", server.label, holder.stderr());
        let (code, _, _) = run(url, &["revoke", &name]);
        assert_eq!(code, 1, "{}: the lock was released", server.label);
    }
}
