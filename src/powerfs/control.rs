//! The control socket: a Unix socket on which a mounted powerfs takes
//! commands from other processes (`keel-powerfs power-loss` and `status`).
//! One JSON request per connection, one JSON line back.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::model::{PowerLossReport, Stats};
use super::PowerHandle;

/// Longest request line accepted.
const MAX_REQUEST: u64 = 64 * 1024;
/// How long either side waits on the other.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Cut the power, optionally tearing the last unsynced write.
    PowerLoss {
        /// Seed choosing the torn prefix; `None`: no torn write.
        tear: Option<u64>,
    },
    /// Report the counters.
    Status,
}

/// The answer to a command.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    /// What the power loss did.
    PowerLoss {
        /// The report.
        report: PowerLossReport,
    },
    /// The counters.
    Status {
        /// The counters.
        stats: Stats,
    },
    /// The command failed.
    Error {
        /// Why.
        message: String,
    },
}

/// Errors of a control client.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The socket could not be reached or the exchange failed.
    #[error("control socket {path}: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The answer was not understood.
    #[error("control socket {path}: bad answer: {reason}")]
    Protocol {
        /// The socket.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The server answered with an error.
    #[error("powerfs: {0}")]
    Remote(String),
}

/// Serves commands on `listener` for the mounted file system behind
/// `handle`, on a background thread, until the process exits.
pub fn serve(listener: UnixListener, handle: PowerHandle) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("powerfs-control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(stream) => {
                        if let Err(e) = answer(stream, &handle) {
                            tracing::warn!(error = %e, "powerfs: control connection failed");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "powerfs: control accept failed"),
                }
            }
        })
}

fn answer(stream: UnixStream, handle: &PowerHandle) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new((&stream).take(MAX_REQUEST)).read_line(&mut line)?;
    let response = match serde_json::from_str::<Request>(line.trim()) {
        Err(e) => Response::Error {
            message: format!("bad request: {e}"),
        },
        Ok(Request::Status) => Response::Status {
            stats: handle.stats(),
        },
        Ok(Request::PowerLoss { tear }) => match handle.power_loss(tear) {
            Ok(report) => Response::PowerLoss { report },
            Err(e) => Response::Error {
                message: format!("power loss: {e}"),
            },
        },
    };
    let mut out = serde_json::to_vec(&response).map_err(io::Error::other)?;
    out.push(b'\n');
    (&stream).write_all(&out)
}

/// Sends one command to the control socket at `path` and returns the answer
/// (an error answer becomes [`ControlError::Remote`]).
pub fn request(path: &Path, req: &Request) -> Result<Response, ControlError> {
    let io_err = |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    };
    let stream = UnixStream::connect(path).map_err(io_err)?;
    stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(io_err)?;
    stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(io_err)?;
    let mut line = serde_json::to_vec(req).map_err(|e| io_err(io::Error::other(e)))?;
    line.push(b'\n');
    (&stream).write_all(&line).map_err(io_err)?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .map_err(io_err)?;
    match serde_json::from_str::<Response>(answer.trim()) {
        Ok(Response::Error { message }) => Err(ControlError::Remote(message)),
        Ok(r) => Ok(r),
        Err(e) => Err(ControlError::Protocol {
            path: path.to_path_buf(),
            reason: format!("{e}: {answer:?}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_json() {
        let r = Request::PowerLoss { tear: Some(7) };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(s, r#"{"op":"power_loss","tear":7}"#);
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"op":"status"}"#).unwrap(),
            Request::Status
        );
        assert!(serde_json::from_str::<Request>(r#"{"op":"reboot"}"#).is_err());
    }
}
