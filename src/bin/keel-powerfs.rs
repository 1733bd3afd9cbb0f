//! keel-powerfs: mount a power-loss fault file system (FUSE) over a backing
//! directory, and cut its power from another process. See docs/POWERFS.md.

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use keel::powerfs::control::{self, Request, Response};
use keel::powerfs::PowerFs;

#[derive(Parser)]
#[command(
    name = "keel-powerfs",
    about = "A FUSE file system that loses unsynced writes on command"
)]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Mount over BACKING at MOUNTPOINT and serve until SIGTERM or SIGINT,
    /// then unmount.
    Mount {
        /// Existing directory holding the durable state.
        #[arg(long)]
        backing: PathBuf,
        /// Existing, empty directory to mount on.
        #[arg(long)]
        mountpoint: PathBuf,
        /// Unix socket to take `power-loss` and `status` commands on.
        #[arg(long)]
        control: PathBuf,
    },
    /// Cut the power: drop every unsynced change. Prints the report (JSON).
    PowerLoss {
        /// The mount's control socket.
        #[arg(long)]
        control: PathBuf,
        /// Also tear the most recent unsynced write to a prefix chosen by
        /// this seed.
        #[arg(long)]
        tear: Option<u64>,
    },
    /// Print the counters (JSON).
    Status {
        /// The mount's control socket.
        #[arg(long)]
        control: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Mount {
            backing,
            mountpoint,
            control,
        } => mount(&backing, &mountpoint, &control),
        Cmd::PowerLoss { control, tear } => ask(&control, Request::PowerLoss { tear }),
        Cmd::Status { control } => ask(&control, Request::Status),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keel-powerfs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn ask(socket: &Path, req: Request) -> Result<(), String> {
    let json = match control::request(socket, &req).map_err(|e| e.to_string())? {
        Response::PowerLoss { report } => serde_json::to_string_pretty(&report),
        Response::Status { stats } => serde_json::to_string_pretty(&stats),
        Response::Error { message } => return Err(message),
    };
    println!("{}", json.map_err(|e| e.to_string())?);
    Ok(())
}

fn mount(backing: &Path, mountpoint: &Path, socket: &Path) -> Result<(), String> {
    // A socket file left by a process that is gone is replaced; a live one
    // means another powerfs serves it.
    if socket.exists() {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return Err(format!(
                "{} is in use by a running powerfs",
                socket.display()
            ));
        }
        std::fs::remove_file(socket)
            .map_err(|e| format!("removing stale {}: {e}", socket.display()))?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("signal runtime: {e}"))?;
    // Install the handlers before mounting, so a signal that arrives while
    // mounting still unmounts cleanly.
    let (mut term, mut int) = runtime
        .block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            Ok::<_, std::io::Error>((
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
            ))
        })
        .map_err(|e| format!("installing signal handlers: {e}"))?;
    let mounted = PowerFs::mount(backing, mountpoint).map_err(|e| {
        format!(
            "mounting {} over {}: {e}",
            mountpoint.display(),
            backing.display()
        )
    })?;
    let listener =
        UnixListener::bind(socket).map_err(|e| format!("binding {}: {e}", socket.display()))?;
    control::serve(listener, mounted.handle()).map_err(|e| format!("control thread: {e}"))?;
    println!(
        "keel-powerfs: mounted {} at {}, control socket {}",
        backing.display(),
        mounted.mountpoint().display(),
        socket.display()
    );
    runtime.block_on(async {
        tokio::select! {
            _ = term.recv() => tracing::info!("powerfs: SIGTERM"),
            _ = int.recv() => tracing::info!("powerfs: SIGINT"),
        }
    });
    let _ = std::fs::remove_file(socket);
    mounted.unmount().map_err(|e| e.to_string())
}
