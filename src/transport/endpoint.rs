//! The node's single quinn endpoint: socket, stateless-reset key, and the
//! QUIC client/server configs.

use super::config::TransportConfig;
use super::error::{TlsError, TransportError};
use super::fault::{FaultFilter, FaultSocket};
use super::tls::{self, CaCert, NodeIdentity};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{AsyncUdpSocket, Runtime, TokioRuntime};
use std::sync::{Arc, Weak};

/// A bound endpoint plus what the transport needs to dial and to know when
/// the port has really been released.
pub(crate) struct Bound {
    pub endpoint: quinn::Endpoint,
    pub client: quinn::ClientConfig,
    /// The OS socket; gone once the endpoint and every connection are.
    pub socket: Weak<dyn AsyncUdpSocket>,
}

/// Binds `cfg.listen` and starts quinn over a [`FaultSocket`].
pub(crate) fn bind(
    cfg: &TransportConfig,
    identity: &NodeIdentity,
    ca: &CaCert,
    fault: FaultFilter,
) -> Result<Bound, TransportError> {
    let std_socket = std::net::UdpSocket::bind(cfg.listen)?;
    std_socket.set_nonblocking(true)?;
    let inner = TokioRuntime.wrap_udp_socket(std_socket)?;
    let socket = Arc::downgrade(&inner);
    let faulty = FaultSocket::new(inner, fault);
    let mut endpoint_config = quinn::EndpointConfig::new(Arc::new(reset_key(identity, ca)));
    endpoint_config.cid_generator(|| Box::new(RandomCids));
    let endpoint = quinn::Endpoint::new_with_abstract_socket(
        endpoint_config,
        Some(server_config(identity, ca, cfg)?),
        faulty,
        Arc::new(TokioRuntime),
    )?;
    Ok(Bound {
        endpoint,
        client: client_config(identity, ca, cfg)?,
        socket,
    })
}

/// Stateless-reset key: stable for a node across restarts (so peers accept
/// the resets a restarted node sends for connections it forgot), distinct
/// per node and per cluster, and secret (keyed by the node's private key).
fn reset_key(identity: &NodeIdentity, ca: &CaCert) -> ring::hmac::Key {
    let master = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, identity.key.secret_der());
    let mut ctx = ring::hmac::Context::with_key(&master);
    ctx.update(b"keel/1 stateless reset");
    ctx.update(&identity.node.0.to_be_bytes());
    ctx.update(ca.der());
    ring::hmac::Key::new(ring::hmac::HMAC_SHA256, ctx.sign().as_ref())
}

/// Connection ids from the OS-seeded CSPRNG, accepted without validation.
///
/// quinn's default generator signs its ids with a key drawn per process, so
/// a restarted endpoint would silently drop packets addressed to its
/// predecessor's connections instead of answering them with a stateless
/// reset, leaving peers to wait out the idle timeout. With unvalidated ids
/// every packet for an unknown connection earns a reset (rate-limited by
/// quinn, and always smaller than the packet that caused it).
struct RandomCids;

impl quinn::ConnectionIdGenerator for RandomCids {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        quinn::ConnectionId::new(&rand::random::<[u8; 8]>())
    }

    fn cid_len(&self) -> usize {
        8
    }

    fn cid_lifetime(&self) -> Option<std::time::Duration> {
        None
    }
}

/// QUIC tuning shared by both directions.
pub fn transport_config(cfg: &TransportConfig) -> Result<quinn::TransportConfig, TransportError> {
    let idle = quinn::IdleTimeout::try_from(cfg.idle_timeout)
        .map_err(|e| TransportError::Config(format!("idle_timeout: {e}")))?;
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(cfg.keep_alive))
        .max_idle_timeout(Some(idle))
        .initial_rtt(cfg.initial_rtt)
        // One long-lived stream per direction; a little slack, no bidi, no datagrams.
        .max_concurrent_uni_streams(4u32.into())
        .max_concurrent_bidi_streams(0u32.into())
        .datagram_receive_buffer_size(None);
    Ok(t)
}

/// The accepting side: mutual TLS under the cluster CA.
pub fn server_config(
    identity: &NodeIdentity,
    ca: &CaCert,
    cfg: &TransportConfig,
) -> Result<quinn::ServerConfig, TransportError> {
    let crypto =
        QuicServerConfig::try_from(tls::server_crypto(identity, ca)?).map_err(TlsError::from)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport_config(cfg)?));
    // Peers have fixed addresses; a migrating "peer" is more likely an attack.
    server.migration(false);
    Ok(server)
}

/// The dialing side. Public so tools (and tests) can speak to a node as a peer.
pub fn client_config(
    identity: &NodeIdentity,
    ca: &CaCert,
    cfg: &TransportConfig,
) -> Result<quinn::ClientConfig, TransportError> {
    let crypto =
        QuicClientConfig::try_from(tls::client_crypto(identity, ca)?).map_err(TlsError::from)?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(Arc::new(transport_config(cfg)?));
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::tls::ClusterCa;
    use crate::types::NodeId;

    #[test]
    fn reset_key_is_stable_per_node_and_differs_between_nodes() {
        let ca = ClusterCa::generate().unwrap();
        let a = ca.issue_node_cert(NodeId(1)).unwrap();
        let b = ca.issue_node_cert(NodeId(2)).unwrap();
        let tag = |id: &NodeIdentity| {
            ring::hmac::sign(&reset_key(id, &ca.cert()), b"cid")
                .as_ref()
                .to_vec()
        };
        assert_eq!(tag(&a), tag(&a.clone()));
        assert_ne!(tag(&a), tag(&b));
    }
}
