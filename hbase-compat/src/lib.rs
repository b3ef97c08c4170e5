//! An HBase-Thrift1-compatible server for tests and benchmarks.
//!
//! No HBase can be installed where histflow is developed and tested, so this
//! crate speaks HBase's Thrift1 protocol (binary protocol, buffered
//! transport: the gateway's defaults) over an embedded on-disk store with
//! HBase's timestamp semantics. It stands in for HBase; it is not a
//! replacement for it. The client side of histflow is the code that talks
//! to a real HBase Thrift gateway.
//!
//! # Layout
//! - `store`: multi-version cells, delete markers, tables, scans (fjall).
//! - `group_sync`: writes committed together share one journal sync.
//! - `server`: the `HbaseSyncHandler` over the store, and serving it.
//! - `lenient`: absent list/map arguments read as empty, as HBase does.
//!
//! What a peer may make the server allocate is bounded by the
//! `thrift-bounded` input protocol (shared with histflow's Thrift client).
//!
//! The server has no authentication: it must never be reachable from
//! outside the machine or network it serves.

mod group_sync;
pub mod lenient;
pub mod server;
pub mod store;

pub use server::{serve, serve_with_idle_timeout, DEFAULT_IDLE_TIMEOUT};
pub use store::Store;
