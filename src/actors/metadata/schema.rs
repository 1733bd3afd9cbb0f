//! Which register keys hold typed values, and the check that a value for
//! one of them decodes as its type.
//!
//! The register itself stores bytes. Two kinds of keys are decoded by the
//! rest of the node: `chain/<log>` (a [`Chain`]) and `leader/<partition>`
//! (a [`Leadership`]). An acceptor refuses a value for them that would not
//! decode (a chain that is not valid, a leadership of no node), and a node
//! does not cache such a value from a peer's hint: a bug or a corrupt
//! message on one node cannot leave the register (or a cache) holding a
//! value every reader fails on. Other keys (tests use `test/...`) hold any
//! bytes.

use crate::actors::leader_elector::Leadership;
use crate::log::Chain;

/// Why `value` cannot be held under `key`.
pub fn check(key: &str, value: &[u8]) -> Result<(), String> {
    let decoded = if key.starts_with("chain/") {
        rmp_serde::from_slice::<Chain>(value).map(|_| ())
    } else if key.starts_with("leader/") {
        rmp_serde::from_slice::<Leadership>(value).map(|_| ())
    } else {
        return Ok(());
    };
    decoded.map_err(|e| format!("{key}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Epoch, LogId, NodeId};

    #[test]
    fn typed_keys_take_only_their_type() {
        let chain = Chain::initial(LogId(1), NodeId(1), vec![NodeId(1), NodeId(2)], 2);
        let chain = rmp_serde::to_vec_named(&chain).unwrap();
        let leader = rmp_serde::to_vec_named(&Leadership {
            node: NodeId(2),
            epoch: Epoch(4),
        })
        .unwrap();
        assert_eq!(check("chain/1", &chain), Ok(()));
        assert_eq!(check("leader/0", &leader), Ok(()));
        assert!(check("chain/1", &leader).is_err());
        assert!(check("leader/0", &chain).is_err());
        assert!(check("chain/1", b"\xc1").is_err());
        assert!(check("leader/0", &[]).is_err());
        assert_eq!(check("test/k", b"\xc1"), Ok(()));
    }
}
