//! The actors of this node, as the router and `Net` find them. Each field is a
//! supervised slot: a restart swaps the address inside, callers always reach
//! the live incarnation (or learn it is restarting).

use super::wire::Rpc;
use crate::actors::leader_elector::{LeaderElector, PreVote};
use crate::actors::log_server::{GetRecords, GetTail, LogServer, Seal, Store, Trim};
use crate::actors::metadata::messages::{Accept, ListKeys, Prepare};
use crate::actors::metadata::{MetaCache, MetadataStore};
use crate::actors::partition_processor::{
    Deliver, GetPersisted, GetSnapshot, Invoke, PartitionProcessor,
};
use crate::actors::sequencer::{Append, SequencerDirectory, SequencerManager};
use crate::actors::supervisor::Slot;
use actix::Recipient;

#[derive(Clone)]
pub struct LocalActors {
    pub log_server: Slot<LogServer>,
    pub metadata: Slot<MetadataStore>,
    pub meta_cache: MetaCache,
    /// Committed tails for this node's readers. Releases are published here
    /// directly, not only through the log-server: readers keep learning of
    /// commits (and fetch records from peers) even if the local log-server
    /// is wedged.
    pub tails: crate::actors::log_server::TailWatch,
    pub sequencers: SequencerDirectory,
    pub sequencer_manager: Slot<SequencerManager>,
    pub sealer: Slot<crate::actors::sealer::Sealer>,
    /// Indexed by partition id.
    pub processors: Vec<Slot<PartitionProcessor>>,
    /// Indexed by partition id.
    pub electors: Vec<Slot<LeaderElector>>,
}

impl LocalRoute<Append> for LocalActors {
    fn route(&self, req: &Append) -> Option<Recipient<Append>> {
        match self.sequencers.get(req.segment.loglet) {
            Some(addr) => Some(addr.recipient()),
            None => self.sequencer_manager.addr().map(|a| a.recipient()),
        }
    }
}

/// Which local actor serves a request type.
pub trait LocalRoute<R: Rpc> {
    fn route(&self, req: &R) -> Option<Recipient<R>>;
}

macro_rules! route {
    ($($req:ty => $field:ident),* $(,)?) => {
        $(
            impl LocalRoute<$req> for LocalActors {
                fn route(&self, _: &$req) -> Option<Recipient<$req>> {
                    self.$field.addr().map(|a| a.recipient())
                }
            }
        )*
    };
}

/// Requests served by one actor per partition: routed by `req.partition`.
macro_rules! route_by_partition {
    ($($req:ty => $field:ident),* $(,)?) => {
        $(
            impl LocalRoute<$req> for LocalActors {
                fn route(&self, req: &$req) -> Option<Recipient<$req>> {
                    self.$field
                        .get(req.partition.0 as usize)
                        .and_then(|s| s.addr())
                        .map(|a| a.recipient())
                }
            }
        )*
    };
}

route_by_partition! {
    Invoke => processors,
    Deliver => processors,
    GetPersisted => processors,
    GetSnapshot => processors,
    PreVote => electors,
}

route! {
    Prepare => metadata,
    Accept => metadata,
    ListKeys => metadata,
    Store => log_server,
    Seal => log_server,
    GetTail => log_server,
    GetRecords => log_server,
    Trim => log_server,
}
