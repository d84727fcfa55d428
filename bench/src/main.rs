//! `distsync-bench`: see the crate docs of `distsync_bench` and `--help`.

#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use distsync_bench::args::Args;
use distsync_bench::{guard, plot, report, run};
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
        if let Err(error) = write(out, &report) {
            eprintln!("distsync-bench: writing to {}: {error}", out.display());
            return ExitCode::FAILURE;
        }
        eprintln!(
            "distsync-bench: wrote {} and {}",
            out.join("BENCHMARKS.md").display(),
            out.join("bench").display()
        );
    }
    print!("{}", report::tables(&report));
    ExitCode::SUCCESS
}

/// Writes `BENCHMARKS.md` (keeping the analysis of the one it replaces) and the plots.
fn write(out: &Path, report: &run::Report) -> std::io::Result<()> {
    let plots = out.join("bench");
    std::fs::create_dir_all(&plots)?;
    std::fs::write(out.join(report::CYCLE_SVG), plot::cycle_svg(report))?;
    std::fs::write(out.join(report::HANDOFF_SVG), plot::handoff_svg(report))?;
    for (path, svg) in distsync_bench::scale::plots::svgs(report) {
        std::fs::write(out.join(path), svg)?;
    }
    let file = out.join("BENCHMARKS.md");
    let previous = std::fs::read_to_string(&file).unwrap_or_default();
    let markdown = report::markdown(report, report::analysis_of(&previous), true);
    std::fs::write(file, markdown)
}
