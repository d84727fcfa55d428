//! `distsync stm-bank` on every real server, at every level the server offers.
#![cfg(unix)]

use crate::common;

use common::{number, run, servers, unique};

#[test]
fn the_bank_keeps_its_sum_where_the_level_promises_it() {
    for server in servers() {
        let label = server.label;
        for level in ["serializable-snapshot", "serializable", "repeatable-reads"] {
            let prefix = unique(&format!("bank-{level}"));
            let (code, lines, stderr) = run(
                Some(&server.url),
                &[
                    "stm-bank",
                    "--accounts",
                    "4",
                    "--workers",
                    "4",
                    "--transfers",
                    "10",
                    "--isolation",
                    level,
                    "--prefix",
                    &prefix,
                ],
            );
            if code == 2 && stderr.contains("not supported") {
                eprintln!("{label} does not offer STM at {level}: {stderr}");
                continue;
            }
            assert_eq!(code, 0, "{label} {level}: {stderr}");
            let summary = lines.last().unwrap();
            assert_eq!(number(summary, "sum"), 400, "{label} {level}: {summary}");
            assert_eq!(
                number(summary, "expected"),
                400,
                "{label} {level}: {summary}"
            );
            assert_eq!(number(summary, "commits"), 40, "{label} {level}: {summary}");
        }
    }
}
