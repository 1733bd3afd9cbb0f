//! Node-to-node messaging over QUIC (work in progress: codec and config).

mod config;
mod error;
pub mod frame;

pub use config::{PeerAddr, TransportConfig};
pub use error::{FrameError, RemoteError, TlsError, TransportError};
