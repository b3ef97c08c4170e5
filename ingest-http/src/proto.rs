//! The types and stubs generated from
//! `proto/histflow/api/v1/history_service.proto` (client included, for
//! callers and tests), as `ingest_http::grpc::proto`.

#![allow(missing_docs, clippy::all, clippy::unwrap_used)]

tonic::include_proto!("histflow.api.v1");
