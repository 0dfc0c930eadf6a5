//! Compiles `signal_audit/v1/*.proto` with protox (pure Rust, no system protoc)
//! and keeps the encoded descriptor set for gRPC reflection.

use prost::Message;
use std::{env, fs, path::PathBuf};

const PROTOS: &[&str] = &[
    "signal_audit/v1/common.proto",
    "signal_audit/v1/writer.proto",
    "signal_audit/v1/reader.proto",
    "signal_audit/v1/analytics.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(PROTOS, ["."])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("signal_audit_descriptor.bin"), fds.encode_to_vec())?;
    let grpc = env::var_os("CARGO_FEATURE_GRPC").is_some();
    tonic_prost_build::configure()
        .build_client(grpc)
        .build_server(grpc)
        .compile_fds(fds)?;
    Ok(())
}
