//! wait-for-socket: one attempt = connect to a unix socket and close at once; ready when
//! the server behind it accepts (a sidecar's socket in a shared emptyDir), not merely when
//! the file exists (a socket file outlives the server that made it).

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

use tokio::net::UnixStream;

use crate::exit::{Error, Result};
use crate::reason;
use crate::wait::{self, Attempt, Probe, WaitArgs};

/// Wait until unix sockets accept connections.
#[derive(Debug, Clone, clap::Args)]
pub struct SocketArgs {
    /// Paths of unix stream sockets.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub wait: WaitArgs,
    #[command(flatten)]
    pub then: crate::exec::Then,
}

pub struct SocketProbe {
    path: PathBuf,
    label: String,
}

impl Probe for SocketProbe {
    type Output = ();

    fn target(&self) -> &str {
        &self.label
    }

    fn may_overlap(&self) -> bool {
        true
    }

    async fn attempt(&self) -> Attempt {
        match UnixStream::connect(&self.path).await {
            // Dropping the stream closes it: the server sees a client that left at once.
            Ok(stream) => {
                drop(stream);
                Attempt::ready("accepted a connection")
            }
            Err(error) => self.refused(&error),
        }
    }
}

impl SocketProbe {
    fn refused(&self, error: &io::Error) -> Attempt {
        match error.kind() {
            io::ErrorKind::PermissionDenied => Attempt::Fatal(Error::Failed(format!(
                "connecting to {}: permission denied (connecting needs write permission on the \
                 socket and search permission on its directories: give the pod an fsGroup the \
                 socket's group has and have the server make it group-writable, or run as its owner)",
                self.label
            ))),
            io::ErrorKind::NotFound => Attempt::NotYet("does not exist".into()),
            // A path that exists but is no socket answers "connection refused" too: say what it is.
            io::ErrorKind::ConnectionRefused => match std::fs::metadata(&self.path) {
                Ok(metadata) if !metadata.file_type().is_socket() => {
                    Attempt::NotYet("exists but is not a socket".into())
                }
                _ => Attempt::NotYet("connection refused (no server is listening on it)".into()),
            },
            _ => Attempt::NotYet(reason::io(error)),
        }
    }
}

impl crate::cli::Task for SocketArgs {
    fn execute(self) -> impl std::future::Future<Output = Result<()>> + Send {
        run(self)
    }

    fn then(&self) -> &[std::ffi::OsString] {
        &self.then.command
    }

    /// Checks across the waiting flags (`--stable-for` within `--timeout`).
    fn validate(&self) -> std::result::Result<(), crate::cli::Invalid> {
        self.wait.validate()
    }
}

pub async fn run(args: SocketArgs) -> Result<()> {
    let options = args.wait.options();
    let probes = args
        .paths
        .into_iter()
        .map(|path| SocketProbe {
            label: path.display().to_string(),
            path,
        })
        .collect();
    wait::wait_for_all("socket", probes, options)
        .await
        .map(drop)
}
