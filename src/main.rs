//! The `chime` binary: parses flags, sets up logging, calls the library.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use chime::cli::{Cli, Command};

/// mimalloc instead of the system allocator: a delivery or a create makes
/// many small short-lived allocations (JSON, headers, records), and glibc's
/// malloc was ~15% of a delivery burst's CPU under perf.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use chime::server::{Server, stop_signal};

fn main() -> ExitCode {
    let cli = Cli::parse();
    chime::cli::init_logging(match &cli.command {
        Command::Serve(args) => args.log_format,
        Command::Log { .. } => chime::cli::LogFormat::Text,
    });
    match cli.command {
        Command::Serve(args) => {
            let json = args.log_format == chime::cli::LogFormat::Json;
            match serve(*args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    // A log shipper reads every line as JSON: the reason a
                    // start failed too.
                    if json {
                        tracing::error!(error = %format!("{e:#}"), "chime serve failed");
                    } else {
                        eprintln!("chime serve: {e:#}");
                    }
                    ExitCode::from(2)
                }
            }
        }
        Command::Log { command } => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let mut err = std::io::stderr();
            let progress = std::io::IsTerminal::is_terminal(&err);
            ExitCode::from(chime::logcli::run(&command, &mut out, &mut err, progress))
        }
    }
}

/// Returns to the OS the memory mimalloc holds freed: restoring a snapshot
/// frees large temporary buffers (a map's smaller tables as it grows), and
/// mimalloc keeps freed memory until later allocations on the same thread
/// purge it, which an idle server never makes. Measured with
/// `cargo bench --bench compaction -- restart` (`docs/performance.md`).
fn give_back_freed_memory() {
    // SAFETY: `mi_collect` takes no pointer and may be called at any time
    // from any thread; it only frees memory mimalloc itself holds unused.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

fn serve(args: chime::cli::ServeArgs) -> anyhow::Result<()> {
    let config = args.into_config();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let server = Server::open(config)?;
        give_back_freed_memory();
        let listener = server.bind().await?;
        // Before the listening line: a SIGTERM sent as soon as it is read
        // must find the handlers installed.
        let stop = stop_signal();
        // The machine-readable line (see `Listening`), flushed at once so a
        // parent reading a pipe sees it before the first request.
        let listening = server.listening(&listener)?;
        {
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{listening}")?;
            stdout.flush()?;
        }
        server.run(listener, stop).await?;
        Ok(())
    })
}
