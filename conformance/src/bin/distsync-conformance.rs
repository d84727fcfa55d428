//! `distsync-conformance`: runs the conformance suite against backends given by URL
//! and prints the guarantee matrix (markdown or JSON) on stdout; progress goes to
//! stderr. Exits 1 if any case fails (a violated guarantee that is claimed or part of
//! the contract, or a contradiction between capabilities and behaviour), 2 if a
//! backend cannot be reached or the arguments are wrong.

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, ValueEnum};
use distsync_conformance::{matrix, run_suite, Harness, Report, CASES};

/// Runs the distsync conformance suite and prints the guarantee matrix.
#[derive(Parser, Debug)]
#[command(name = "distsync-conformance", version)]
struct Args {
    /// A backend URL (memory://, etcd://..., redis://..., postgres://...); repeat for
    /// several backends, one matrix column each.
    #[arg(long = "backend", value_name = "URL", default_value = "memory://")]
    backends: Vec<String>,

    /// Output format of the matrix.
    #[arg(long, value_enum, default_value_t = Format::Markdown)]
    format: Format,

    /// Run only cases whose id contains this text; repeat to widen.
    #[arg(long = "case", value_name = "TEXT")]
    cases: Vec<String>,

    /// List the case ids and exit.
    #[arg(long)]
    list: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    Markdown,
    Json,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if args.list {
        for case in CASES {
            println!("{}\t{}\t{}", case.id, case.primitive, case.guarantee);
        }
        return ExitCode::SUCCESS;
    }
    let selected = |id: &str| {
        args.cases.is_empty() || args.cases.iter().any(|filter| id.contains(filter.as_str()))
    };
    if !CASES.iter().any(|case| selected(case.id)) {
        eprintln!("no case matches {:?}; see --list", args.cases);
        return ExitCode::from(2);
    }

    let mut harnesses = Vec::new();
    for url in &args.backends {
        eprintln!("connecting to {url}");
        match distsync::connect(url).await {
            Ok(coordinator) => {
                harnesses.push((url.clone(), Harness::new(Arc::clone(coordinator.backend()))))
            }
            Err(error) => {
                eprintln!("cannot use {url}: {error}");
                return ExitCode::from(2);
            }
        }
    }

    let kinds: Vec<&'static str> = harnesses
        .iter()
        .map(|(_, harness)| harness.capabilities().backend)
        .collect();
    let mut reports: Vec<Report> = Vec::new();
    for (url, harness) in harnesses {
        let name = harness.capabilities().backend;
        let same_kind = kinds.iter().filter(|kind| **kind == name).count();
        let label = if same_kind > 1 {
            url.clone()
        } else {
            name.to_owned()
        };
        let harness = harness.calibrate().await;
        eprintln!(
            "running the suite against {label} ({url}), settle {:?}",
            harness.settle()
        );
        let mut ran = run_suite(
            &harness,
            &label,
            |case| selected(case.id),
            |report| eprintln!("{report}"),
        )
        .await;
        reports.append(&mut ran);
    }

    match args.format {
        Format::Markdown => println!("{}", matrix::markdown(&reports)),
        Format::Json => println!("{}", matrix::json(&reports)),
    }
    let failures = reports.iter().filter(|report| report.is_failure()).count();
    if failures > 0 {
        eprintln!("{failures} case(s) failed");
        ExitCode::FAILURE
    } else {
        eprintln!("all {} case run(s) passed", reports.len());
        ExitCode::SUCCESS
    }
}
