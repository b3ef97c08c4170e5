//! Generates the gRPC service (`proto/histflow/api/v1/history_service.proto`)
//! with protox, a pure-Rust protobuf compiler, so building needs no protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = "../proto";
    let file = "../proto/histflow/api/v1/history_service.proto";
    println!("cargo:rerun-if-changed={file}");
    let descriptors = protox::compile([file], [proto_root])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
