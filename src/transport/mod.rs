//! Node-to-node messaging over QUIC (work in progress: codec, config,
//! certificates and the fault-injecting socket).

mod config;
mod error;
mod fault;
pub mod frame;
pub mod tls;

pub use config::{PeerAddr, TransportConfig};
pub use error::{FrameError, RemoteError, TlsError, TransportError};
pub use fault::{AddrRule, FaultCounters, FaultFilter, FaultRule, FaultSocket};
pub use tls::{CaCert, ClusterCa, NodeIdentity};
