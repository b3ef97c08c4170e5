//! The `persist` stage (job role): folds consumed batches and writes them
//! to HBase through its Thrift gateway, committing offsets after the write.

mod config;

pub use config::PersistConfig;
