//! Generates the protobuf types from `proto/` with protox (a pure-Rust
//! protobuf compiler), so building needs no protoc installed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = "../proto";
    let file = "../proto/histflow/v1/history.proto";
    println!("cargo:rerun-if-changed={file}");
    let descriptors = protox::compile([file], [proto_root])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
