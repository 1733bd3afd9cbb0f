//! Building a node of your own object types.

use super::{Node, NodeError, NodeOptions};
use crate::config::Config;
use crate::objects::{ObjectType, Objects, RegistryError};
use std::process::ExitCode;

/// A keel node's make-up: the object types it serves. Your `main.rs`
/// becomes a keel node (`node`, `init` and `local` commands, exactly as the
/// `keel` binary has) with
///
/// ```no_run
/// use keel::objects::ObjectType;
///
/// fn main() -> std::process::ExitCode {
///     let hello = ObjectType::new("Hello").handler("hi", |ctx, name: String| {
///         ctx.set("last", &name);
///         Ok(format!("hi {name}"))
///     });
///     keel::node::Builder::new().object(hello).main("hello-node")
/// }
/// ```
///
/// Every node of a cluster must register the same types (names, handlers,
/// read-only or not): a node whose types differ from a peer's is refused by
/// that peer, with the difference in the log and in status.
#[derive(Clone, Default)]
pub struct Builder {
    /// The types registered so far, in order.
    types: Vec<ObjectType>,
}

impl Builder {
    /// A node with no object types yet.
    pub fn new() -> Self {
        Builder::default()
    }

    /// A node of the demo's types (`Counter`, `Set`, `Register`,
    /// `Account`): the `keel` binary.
    pub fn demo() -> Self {
        crate::objects::demo::types()
            .into_iter()
            .fold(Builder::new(), Builder::object)
    }

    /// Registers `object` (two of one name are refused when the node starts).
    pub fn object(mut self, object: ObjectType) -> Self {
        self.types.push(object);
        self
    }

    /// The registry of the types, or why it cannot be built.
    pub fn objects(&self) -> Result<Objects, RegistryError> {
        Objects::new(self.types.iter().cloned())
    }

    /// Runs the command line (`node`, `init`, `local`) of a binary called
    /// `name` that serves these types; returns the process's exit code.
    pub fn main(self, name: &'static str) -> ExitCode {
        match self.objects() {
            Ok(objects) => crate::cli::main::main(name, objects),
            Err(e) => {
                eprintln!("{name}: error: {e}");
                ExitCode::FAILURE
            }
        }
    }

    /// Starts a node from `config` (certificates from its TLS directory).
    /// Must run inside an actix `System`; `on_give_up` is called if the
    /// node's supervision tree gives up.
    pub async fn start(
        self,
        config: Config,
        on_give_up: impl FnOnce(String) + Send + 'static,
    ) -> Result<Node, NodeError> {
        let objects = self.objects().map_err(NodeError::Objects)?;
        let mut opts = NodeOptions::from_config(config)?;
        opts.objects = objects;
        Node::start(opts, on_give_up).await
    }
}
