//! `distsync break NAME` against a `distsync lock NAME -- CMD` holder in another
//! process, on a real server: the holder loses its hold (its CMD is stopped, exit 3),
//! and the break names the holder's token.
#![cfg(unix)]

use crate::common;

use common::{number, run, servers, unique, Proc, RUN_UNTIL_TERMINATED};

#[test]
fn a_break_ends_another_processs_hold() {
    for server in servers() {
        let name = unique("break-cli");
        let url = Some(server.url.as_str());
        let (code, _, _) = run(url, &["break", &name]);
        assert_eq!(code, 1, "{}: a break of a lock nobody holds", server.label);

        let mut holder = Proc::spawn(
            url,
            &["lock", &name, "--", "sh", "-c", RUN_UNTIL_TERMINATED],
        );
        let held = holder.expect(&format!("{name} key="));
        let token = number(&held, "token");

        let (code, lines, stderr) = run(url, &["break", &name]);
        assert_eq!(code, 0, "{}: {stderr}", server.label);
        let broke = lines.first().expect("one line");
        assert!(
            broke.starts_with(&format!("broke {name} ")),
            "{}: {broke}",
            server.label
        );
        assert_eq!(number(broke, "token"), token, "{}", server.label);

        // The holder learns that its hold is gone, stops CMD and says so (exit 3).
        assert_eq!(holder.wait(), 3, "{}: {}", server.label, holder.stderr());
        let (code, _, _) = run(url, &["break", &name]);
        assert_eq!(code, 1, "{}: nobody holds it after the break", server.label);
    }
}
