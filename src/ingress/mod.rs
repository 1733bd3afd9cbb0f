//! The HTTP ingress: `/{Object}/{key}/{handler}` for every registered
//! object type, over actix-web.

pub mod http;
