//! `distsync ratelimit NAME N/PERIOD -- CMD`: one permit, then CMD's exit code; no
//! permit due is exit 1 with `--no-wait` or `--timeout`, waiting is the default.
#![cfg(unix)]

use crate::common;

use std::time::{Duration, Instant};

use common::{servers, unique};

#[tokio::test(flavor = "multi_thread")]
async fn a_permit_runs_the_command_and_the_rate_holds_across_processes() {
    for server in servers() {
        let name = unique("ratelimit-processes");
        let url = Some(server.url.as_str());
        let coordinator = distsync::connect(&server.url).await.expect("connecting");
        if !coordinator.capabilities().rate_limiter {
            // A backend without rate limiters (etcd) says so, as a usage error.
            let (code, _, stderr) = common::run(url, &["ratelimit", &name, "1/1s", "--", "true"]);
            assert_eq!(code, 2, "{}: {stderr}", server.label);
            assert!(stderr.contains("rate limiter"), "{stderr}");
            continue;
        }
        // One permit a minute: the first process runs CMD and exits with its code.
        let (code, _, stderr) = common::run(
            url,
            &["ratelimit", &name, "1/60s", "--", "sh", "-c", "exit 7"],
        );
        assert_eq!(code, 7, "{}: {stderr}", server.label);
        // The next permit is a minute away: not now, and not within 200 ms.
        let (code, _, stderr) = common::run(
            url,
            &["ratelimit", &name, "1/60s", "--no-wait", "--", "true"],
        );
        assert_eq!(code, 1, "{}: {stderr}", server.label);
        let (code, _, stderr) =
            common::run(url, &["ratelimit", &name, "1/60s", "--timeout", "200ms"]);
        assert_eq!(code, 1, "{}: {stderr}", server.label);
        // Another rate while the limiter is live, and a bad rate, are usage errors.
        let (code, _, stderr) = common::run(url, &["ratelimit", &name, "2/60s", "--no-wait"]);
        assert_eq!(code, 2, "{}: {stderr}", server.label);
        let (code, _, stderr) = common::run(url, &["ratelimit", &name, "0/1s"]);
        assert_eq!(code, 2, "{}: {stderr}", server.label);

        // Waiting (the default) takes the permit when it is due on the store's clock.
        let fast = unique("ratelimit-wait");
        let (code, _, stderr) = common::run(url, &["ratelimit", &fast, "1/400ms"]);
        assert_eq!(code, 0, "{}: {stderr}", server.label);
        let started = Instant::now();
        let (code, _, stderr) = common::run(url, &["ratelimit", &fast, "1/400ms", "--", "true"]);
        assert_eq!(code, 0, "{}: {stderr}", server.label);
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "{}: the second permit came after {:?}",
            server.label,
            started.elapsed()
        );
    }
}
