//! The cluster CA, node certificates and the rustls configs built from them.
//!
//! Every node holds a certificate signed by one cluster CA whose only DNS
//! name is `n<id>.keel`. Both directions are authenticated: the dialer checks
//! the server certificate against the CA *and* the expected node name, the
//! acceptor requires a CA-signed client certificate and then reads the
//! dialer's node id from it ([`identify_peer`]). ring is the only crypto
//! provider, passed explicitly; there is no 0-RTT and no session resumption,
//! so every connection proves its identity afresh.

use super::error::TlsError;
use crate::types::NodeId;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// ALPN protocol id; bump with incompatible wire changes.
pub const ALPN: &[u8] = b"keel/1";

const CA_COMMON_NAME: &str = "keel cluster CA";

/// The DNS name a node's certificate carries, e.g. `n3.keel`.
pub fn node_name(node: NodeId) -> String {
    format!("n{}.keel", node.0)
}

/// The ring provider, the only one this crate links.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The trust anchor every node is configured with (public; no key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaCert {
    der: CertificateDer<'static>,
}

impl CaCert {
    pub fn der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    pub fn to_pem(&self) -> String {
        pem_block("CERTIFICATE", &self.der)
    }

    pub fn from_pem(pem: &str) -> Result<Self, TlsError> {
        let mut certs = read_certs(pem)?;
        if certs.len() != 1 {
            return Err(TlsError::Pem(format!(
                "expected one CA certificate, found {}",
                certs.len()
            )));
        }
        Ok(CaCert {
            der: certs.remove(0),
        })
    }

    /// Reads `ca.pem` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, TlsError> {
        Self::from_pem(&read(&dir.join("ca.pem"))?)
    }

    /// Writes `ca.pem` (the certificate only, never the key) into `dir`:
    /// what every node needs to trust its peers.
    pub fn save(&self, dir: &Path) -> Result<(), TlsError> {
        write(&dir.join("ca.pem"), &self.to_pem(), false)
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, TlsError> {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone())?;
        Ok(Arc::new(roots))
    }
}

/// A node's certificate chain and private key.
#[derive(Debug)]
pub struct NodeIdentity {
    pub node: NodeId,
    pub cert_chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for NodeIdentity {
    fn clone(&self) -> Self {
        NodeIdentity {
            node: self.node,
            cert_chain: self.cert_chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl NodeIdentity {
    /// Certificate chain and key as PEM text.
    pub fn to_pem(&self) -> (String, String) {
        let chain = self
            .cert_chain
            .iter()
            .map(|c| pem_block("CERTIFICATE", c))
            .collect();
        (chain, pem_block("PRIVATE KEY", self.key.secret_der()))
    }

    pub fn from_pem(node: NodeId, cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let cert_chain = read_certs(cert_pem)?;
        if cert_chain.is_empty() {
            return Err(TlsError::Pem("no certificate found".into()));
        }
        let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .map_err(|e| TlsError::Pem(e.to_string()))?
            .ok_or_else(|| TlsError::Pem("no private key found".into()))?;
        Ok(NodeIdentity {
            node,
            cert_chain,
            key,
        })
    }

    /// Writes `n<id>.pem` and `n<id>.key` (mode 0600) into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), TlsError> {
        let (cert, key) = self.to_pem();
        let (cert_path, key_path) = identity_paths(dir, self.node);
        write(&cert_path, &cert, false)?;
        write(&key_path, &key, true)
    }

    /// Reads `n<id>.pem` and `n<id>.key` from `dir`.
    pub fn load(dir: &Path, node: NodeId) -> Result<Self, TlsError> {
        let (cert_path, key_path) = identity_paths(dir, node);
        Self::from_pem(node, &read(&cert_path)?, &read(&key_path)?)
    }
}

fn identity_paths(dir: &Path, node: NodeId) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("n{}.pem", node.0)),
        dir.join(format!("n{}.key", node.0)),
    )
}

/// The cluster certificate authority: signs node certificates.
pub struct ClusterCa {
    cert: CaCert,
    /// The CA's parameters re-signed by its key; rcgen needs it as the issuer.
    issuer: rcgen::Certificate,
    key: KeyPair,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa")
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

impl ClusterCa {
    /// A fresh CA with a new P-256 key.
    pub fn generate() -> Result<Self, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = ca_params();
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key)?;
        let issuer = ca_params().self_signed(&key)?;
        Ok(ClusterCa {
            cert: CaCert {
                der: cert.der().clone(),
            },
            issuer,
            key,
        })
    }

    pub fn cert(&self) -> CaCert {
        self.cert.clone()
    }

    /// Issues a certificate naming `node` (`n<id>.keel`), good for both
    /// client and server authentication since every node dials and accepts.
    pub fn issue_node_cert(&self, node: NodeId) -> Result<NodeIdentity, TlsError> {
        let key = KeyPair::generate()?;
        let name = node_name(node);
        let mut params = CertificateParams::new(vec![name.clone()])?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.serial_number = Some(random_serial());
        params.is_ca = IsCa::NoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer, &self.key)?;
        Ok(NodeIdentity {
            node,
            cert_chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        })
    }

    /// CA certificate and key as PEM text.
    pub fn to_pem(&self) -> (String, String) {
        (self.cert.to_pem(), self.key.serialize_pem())
    }

    /// Rebuilds a CA from its PEM certificate and key. Checks that the key
    /// belongs to the certificate by issuing a probe certificate and
    /// verifying it against the loaded certificate.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let cert = CaCert::from_pem(cert_pem)?;
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = ca_params().self_signed(&key)?;
        let ca = ClusterCa { cert, issuer, key };
        let probe = ca.issue_node_cert(NodeId(1))?;
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            ca.cert.roots()?,
            provider(),
        )
        .build()?;
        let name =
            ServerName::try_from(node_name(NodeId(1))).map_err(|e| TlsError::Pem(e.to_string()))?;
        verifier
            .verify_server_cert(
                &probe.cert_chain[0],
                &[],
                &name,
                &[],
                rustls::pki_types::UnixTime::now(),
            )
            .map_err(|e| TlsError::Pem(format!("CA key does not match CA certificate: {e}")))?;
        Ok(ca)
    }

    /// Writes `ca.pem` and `ca.key` (mode 0600) into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), TlsError> {
        let (cert, key) = self.to_pem();
        write(&dir.join("ca.pem"), &cert, false)?;
        write(&dir.join("ca.key"), &key, true)
    }

    /// Reads `ca.pem` and `ca.key` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, TlsError> {
        Self::from_pem(&read(&dir.join("ca.pem"))?, &read(&dir.join("ca.key"))?)
    }
}

/// Fixed CA parameters: reloading a CA must reproduce the issuer name the
/// node certificates were signed with.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x01; // no leading zero byte
    SerialNumber::from_slice(&bytes)
}

/// The acceptor side: requires a client certificate signed by the CA.
pub fn server_crypto(
    identity: &NodeIdentity,
    ca: &CaCert,
) -> Result<rustls::ServerConfig, TlsError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(ca.roots()?, provider()).build()?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.cert_chain.clone(), identity.key.clone_key())?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.max_early_data_size = 0;
    tls.send_tls13_tickets = 0;
    Ok(tls)
}

/// The dialer side: verifies the server against the CA and the name passed
/// to `connect` (`n<peer>.keel`), and presents this node's certificate.
pub fn client_crypto(
    identity: &NodeIdentity,
    ca: &CaCert,
) -> Result<rustls::ClientConfig, TlsError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(ca.roots()?)
        .with_client_auth_cert(identity.cert_chain.clone(), identity.key.clone_key())?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.enable_early_data = false;
    tls.resumption = Resumption::disabled();
    Ok(tls)
}

/// Why an authenticated-looking connection is not accepted as a peer.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentifyError {
    #[error("no client certificate")]
    NoCertificate,
    #[error("wrong application protocol {0:?}")]
    WrongAlpn(Option<String>),
    #[error("certificate does not name any configured peer")]
    UnknownNode,
    #[error("certificate names several configured peers")]
    Ambiguous,
    #[error("unparseable certificate: {0}")]
    BadCertificate(String),
}

/// Finds which configured node a verified client certificate belongs to.
///
/// The TLS layer already checked the chain against the CA; this only maps
/// the certificate's DNS name to a node id, trying each candidate. Exactly
/// one must match.
pub fn identify_peer(
    conn: &quinn::Connection,
    candidates: impl IntoIterator<Item = NodeId>,
) -> Result<NodeId, IdentifyError> {
    let alpn = conn
        .handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol);
    if alpn.as_deref() != Some(ALPN) {
        return Err(IdentifyError::WrongAlpn(
            alpn.map(|p| String::from_utf8_lossy(&p).into_owned()),
        ));
    }
    let chain = conn
        .peer_identity()
        .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or(IdentifyError::NoCertificate)?;
    let leaf = chain.first().ok_or(IdentifyError::NoCertificate)?;
    identify_cert(leaf, candidates)
}

/// [`identify_peer`] on a bare certificate.
pub fn identify_cert(
    leaf: &CertificateDer<'_>,
    candidates: impl IntoIterator<Item = NodeId>,
) -> Result<NodeId, IdentifyError> {
    let cert = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| IdentifyError::BadCertificate(e.to_string()))?;
    let mut found = None;
    for node in candidates {
        let Ok(name) = ServerName::try_from(node_name(node)) else {
            continue;
        };
        if cert.verify_is_valid_for_subject_name(&name).is_ok() {
            if found.is_some() {
                return Err(IdentifyError::Ambiguous);
            }
            found = Some(node);
        }
    }
    found.ok_or(IdentifyError::UnknownNode)
}

fn pem_block(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len() * 4 / 3 + 4);
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (*b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(ALPHABET[(n >> (18 - 6 * i) & 0x3f) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn read_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(e.to_string()))
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::File {
        path: path.display().to_string(),
        source,
    })
}

fn write(path: &Path, text: &str, secret: bool) -> Result<(), TlsError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    opts.open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|_| f.sync_all()))
        .map_err(|source| TlsError::File {
            path: path.display().to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_cert_names_exactly_its_node() {
        let ca = ClusterCa::generate().unwrap();
        let id = ca.issue_node_cert(NodeId(3)).unwrap();
        let all = [NodeId(1), NodeId(2), NodeId(3), NodeId(30)];
        assert_eq!(identify_cert(&id.cert_chain[0], all), Ok(NodeId(3)));
        assert_eq!(
            identify_cert(&id.cert_chain[0], [NodeId(1), NodeId(2)]),
            Err(IdentifyError::UnknownNode)
        );
        assert!(identify_cert(&CertificateDer::from(vec![1, 2, 3]), all).is_err());
    }

    #[test]
    fn pem_files_round_trip_and_reloaded_ca_still_signs() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::generate().unwrap();
        ca.save(dir.path()).unwrap();
        let id = ca.issue_node_cert(NodeId(2)).unwrap();
        id.save(dir.path()).unwrap();

        let ca2 = ClusterCa::load(dir.path()).unwrap();
        assert_eq!(ca2.cert(), ca.cert());
        assert_eq!(CaCert::load(dir.path()).unwrap(), ca.cert());
        let id2 = NodeIdentity::load(dir.path(), NodeId(2)).unwrap();
        assert_eq!(id2.cert_chain, id.cert_chain);
        assert_eq!(id2.key.secret_der(), id.key.secret_der());
        // A certificate issued by the reloaded CA verifies against the original.
        let fresh = ca2.issue_node_cert(NodeId(4)).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            ca.cert.roots().unwrap(),
            provider(),
        )
        .build()
        .unwrap();
        let name = ServerName::try_from("n4.keel").unwrap();
        verifier
            .verify_server_cert(
                &fresh.cert_chain[0],
                &[],
                &name,
                &[],
                rustls::pki_types::UnixTime::now(),
            )
            .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("ca.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "key readable by others");
        }
    }

    #[test]
    fn mismatched_ca_key_is_refused() {
        let a = ClusterCa::generate().unwrap();
        let b = ClusterCa::generate().unwrap();
        let (cert, _) = a.to_pem();
        let (_, key) = b.to_pem();
        assert!(ClusterCa::from_pem(&cert, &key).is_err());
        assert!(CaCert::from_pem("not pem").is_err());
        assert!(NodeIdentity::from_pem(NodeId(1), "", "").is_err());
    }

    #[test]
    fn configs_build_with_ring_and_alpn() {
        let ca = ClusterCa::generate().unwrap();
        let id = ca.issue_node_cert(NodeId(1)).unwrap();
        let s = server_crypto(&id, &ca.cert()).unwrap();
        let c = client_crypto(&id, &ca.cert()).unwrap();
        assert_eq!(s.alpn_protocols, vec![ALPN.to_vec()]);
        assert_eq!(c.alpn_protocols, vec![ALPN.to_vec()]);
        assert_eq!(s.max_early_data_size, 0);
        assert!(!c.enable_early_data);
    }
}
