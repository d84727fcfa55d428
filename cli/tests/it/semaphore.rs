//! `distsync semaphore NAME N -- CMD`: N processes hold at once, the next waits.
#![cfg(unix)]

use crate::common;

use common::{number, servers, unique, Proc};

/// A command that waits for one line on its standard input, then exits with 7.
const WAIT_FOR_A_LINE: &str = "read line; exit 7";

#[tokio::test(flavor = "multi_thread")]
async fn two_permits_admit_two_processes_and_the_third_waits() {
    for server in servers() {
        let name = unique("semaphore-three-processes");
        let url = Some(server.url.as_str());
        let args = ["semaphore", &name, "2", "--", "sh", "-c", WAIT_FOR_A_LINE];
        let coordinator = distsync::connect(&server.url).await.expect("connecting");
        if !coordinator.capabilities().semaphore {
            // A backend without semaphores says so, as a usage error.
            let (code, _, stderr) = common::run(url, &args);
            assert_eq!(code, 2, "{}: {stderr}", server.label);
            assert!(stderr.contains("semaphore"), "{stderr}");
            continue;
        }
        let mut first = Proc::spawn(url, &args);
        let first_line = first.expect(&format!("{name} key="));
        let mut second = Proc::spawn(url, &args);
        let second_token = number(&second.expect(&format!("{name} key=")), "token");
        assert!(
            second_token > number(&first_line, "token"),
            "{}",
            server.label
        );
        let mut third = Proc::spawn(url, &args);
        third.quiet();
        first.send("done");
        assert_eq!(first.wait(), 7, "{}: {}", server.label, first.stderr());
        let third_token = number(&third.expect(&format!("{name} key=")), "token");
        assert!(third_token > second_token, "{}", server.label);
        second.send("done");
        third.send("done");
        assert_eq!(second.wait(), 7, "{}", server.label);
        assert_eq!(third.wait(), 7, "{}", server.label);
        let (code, _, stderr) = common::run(url, &["semaphore", &name, "0"]);
        assert_eq!(
            code, 2,
            "{}: zero permits is a usage error: {stderr}",
            server.label
        );
    }
}
