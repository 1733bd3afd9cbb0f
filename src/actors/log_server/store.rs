//! The log-server core's store in a node: the record log and sled, through
//! [`LogStore`].

use super::core::LogServerStore;
use crate::log::Record;
use crate::storage::{LogStore, LogletState, Result};
use crate::types::{LogletId, Offset};

impl LogServerStore for LogStore {
    fn loglet_state(&self, loglet: LogletId) -> Result<LogletState> {
        LogStore::loglet_state(self, loglet)
    }

    fn put_loglet_state(&mut self, loglet: LogletId, state: &LogletState) -> Result<()> {
        LogStore::put_loglet_state(self, loglet, state)
    }

    fn put_records(&mut self, loglet: LogletId, first: Offset, records: &[Record]) -> Result<()> {
        LogStore::put_records(self, loglet, first, records)
    }

    fn read_records(
        &self,
        loglet: LogletId,
        from: Offset,
        to: Offset,
        max_bytes: usize,
    ) -> Result<Vec<(Offset, Record)>> {
        Ok(LogStore::read_records(self, loglet, from, to, max_bytes)?
            .into_iter()
            .map(|(o, r)| (o, Record(r)))
            .collect())
    }

    fn local_tail(&self, loglet: LogletId) -> Result<Offset> {
        LogStore::local_tail(self, loglet)
    }

    fn trim(&mut self, loglet: LogletId, below: Offset) -> Result<()> {
        LogStore::trim(self, loglet, below)
    }

    fn damaged_in(&self, loglet: LogletId, from: Offset, to: Offset) -> Vec<Offset> {
        self.records().damaged_in(loglet, from, to)
    }

    fn suspect(&self) -> bool {
        self.records().suspect().is_some()
    }
}
