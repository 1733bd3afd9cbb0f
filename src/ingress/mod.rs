//! The HTTP demo app: virtual objects over actix-web.

pub mod http;
pub mod objects;
