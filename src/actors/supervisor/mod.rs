//! TEMPORARY stand-in until the supervision tree lands.
use actix::{Actor, Addr};
use std::sync::{Arc, RwLock};

pub struct Slot<A: Actor> {
    inner: Arc<RwLock<Option<Addr<A>>>>,
}
impl<A: Actor> Clone for Slot<A> {
    fn clone(&self) -> Self {
        Slot {
            inner: self.inner.clone(),
        }
    }
}
impl<A: Actor> Default for Slot<A> {
    fn default() -> Self {
        Slot {
            inner: Arc::new(RwLock::new(None)),
        }
    }
}
impl<A: Actor> Slot<A> {
    pub fn addr(&self) -> Option<Addr<A>> {
        self.inner.read().unwrap().clone()
    }
    pub fn set(&self, a: Addr<A>) {
        *self.inner.write().unwrap() = Some(a);
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Ping;
impl actix::Message for Ping {
    type Result = ();
}
#[derive(Clone)]
pub struct ChildContext;
pub struct WaitGuard;
impl ChildContext {
    pub fn register_wait(&self, _what: impl Into<String>, _deadline: std::time::Duration) -> WaitGuard {
        WaitGuard
    }
    pub fn path(&self) -> &str {
        ""
    }
}
