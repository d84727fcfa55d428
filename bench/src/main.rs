//! `distsync-bench`: see the crate docs of `distsync_bench` and `--help`.

#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use distsync_bench::args::Args;
use distsync_bench::{guard, markdown, plot, report, run};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
    let args = Args::parse();
    if args.scale_child.is_some() {
        print!("{}", distsync_bench::scale::isolated::child(&args).await);
        return ExitCode::SUCCESS;
    }
    if args.guard || args.write_baseline {
        return match guard::run(&args).await {
            Ok(run) => {
                print!("{}", run.text);
                if run.passed {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(error) => {
                eprintln!("distsync-bench: {error}");
                ExitCode::from(2)
            }
        };
    }
    let report = run::run(&args).await;
    if report.backends.is_empty() {
        eprintln!("distsync-bench: no backend could be measured");
        for (kind, reason) in &report.skipped {
            eprintln!("  {kind}: {reason}");
        }
        return ExitCode::from(2);
    }
    if let Some(out) = &args.out {
        let plots = out.join("bench");
        let drawn = distsync_bench::plot::draw_all(&report, &plots);
        if !drawn.is_empty() {
            eprintln!(
                "distsync-bench: drew {} into {}",
                drawn
                    .iter()
                    .map(|plot| plot.file)
                    .collect::<Vec<_>>()
                    .join(", "),
                plots.display()
            );
        }
        let file = out.join("BENCHMARKS.md");
        if let Err(error) = write(&file, &report, &drawn) {
            eprintln!("distsync-bench: writing {}: {error}", file.display());
            return ExitCode::FAILURE;
        }
        eprintln!("distsync-bench: wrote the tables into {}", file.display());
    }
    print!("{}", report::text(&report));
    ExitCode::SUCCESS
}

/// Writes the tables of `report` between their markers in `file`, each with a link to
/// the plots `drawn` beside it, keeping every other line (a missing file is created with
/// the tables alone).
fn write(file: &Path, report: &run::Report, drawn: &[plot::Drawn]) -> std::io::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let previous = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(error) => return Err(error),
    };
    let sections = report::sections_with(report, drawn);
    std::fs::write(file, markdown::splice(&previous, &sections))
}
