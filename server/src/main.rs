//! The `chunkup-server` binary: parses the command line, starts the server
//! (or, with `--proxy-to`, the fault-injecting proxy), prints the single
//! `listening on` line test scripts wait for, and runs until Ctrl-C or
//! SIGTERM (removing the data dir if it was a temporary one; test scripts
//! usually stop the server with SIGTERM).

use std::io::Write as _;
use std::process::ExitCode;

use chunkup_server::config::{self, Command, Config, USAGE};
use chunkup_server::proxy::Upstream;

fn main() -> ExitCode {
    let mut config = match config::parse_args(std::env::args().skip(1)) {
        Ok(Command::Run(config)) => config,
        Ok(Command::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("chunkup-server: {msg}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chunkup-server: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let shutdown = match Shutdown::install() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("chunkup-server: cannot install signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        };
        if let Some(upstream) = config.proxy_to.take() {
            return run_proxy(upstream, *config, shutdown).await;
        }
        let store_line = config.store.as_ref().map(|s| {
            format!(
                "store bucket {} at {} (browsers: {})",
                s.bucket, s.endpoint, s.public_endpoint
            )
        });
        let server = match chunkup_server::start(*config).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("chunkup-server: {e}");
                return ExitCode::FAILURE;
            }
        };
        // Exactly one stdout line; scripts parse the port from it, so flush
        // now rather than when the buffer fills.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "chunkup-server listening on {}", server.url());
        let _ = out.flush();
        drop(out);
        // The store's endpoints and bucket, never its key.
        let store = match (&server.state.object_store, &store_line) {
            (Some(_), Some(line)) => line.clone(),
            _ => "no object store".to_owned(),
        };
        eprintln!(
            "chunkup-server: data dir {}, faults {}, seed {}, {store}",
            server.data_dir.display(),
            server.state.faults.global_spec(),
            server.state.faults.seed()
        );
        shutdown.wait().await;
        if server.temp_data_dir {
            let _ = std::fs::remove_dir_all(&server.data_dir);
        }
        ExitCode::SUCCESS
    })
}

/// Proxy mode: the same startup line (with `proxy`, so a script waiting
/// for a server cannot mistake one for the other) and the same shutdown.
async fn run_proxy(upstream: Upstream, config: Config, shutdown: Shutdown) -> ExitCode {
    let proxy = match chunkup_server::proxy::start(
        upstream,
        &config.host,
        config.port,
        config.faults,
        config.seed,
    )
    .await
    {
        Ok(p) => p,
        Err(e) => {
            eprintln!("chunkup-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "chunkup-server proxy listening on {}", proxy.url());
    let _ = out.flush();
    drop(out);
    eprintln!(
        "chunkup-server: proxy to {}, faults {}, seed {}",
        proxy.upstream,
        proxy.faults.global_spec(),
        proxy.faults.seed()
    );
    shutdown.wait().await;
    ExitCode::SUCCESS
}

/// Shutdown signals, registered before the `listening` line is printed: a
/// script that sends SIGTERM as soon as it has read the line must still get
/// a clean exit rather than the default signal action.
struct Shutdown {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Shutdown {
    #[cfg(unix)]
    fn install() -> std::io::Result<Shutdown> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Shutdown {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    #[cfg(not(unix))]
    fn install() -> std::io::Result<Shutdown> {
        Ok(Shutdown {})
    }

    /// Resolves on SIGINT (Ctrl-C) or SIGTERM.
    #[cfg(unix)]
    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }

    #[cfg(not(unix))]
    async fn wait(self) {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
