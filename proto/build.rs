//! Compiles `tps/v1/*.proto` with protox (pure Rust; no `protoc` on these machines).
use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["tps/v1/collector.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    // The encoded descriptor set is served by gRPC reflection.
    std::fs::write(out.join("tps_v1_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Decode errors are INVALID_ARGUMENT and counted (src/codec.rs).
        .codec_path("crate::codec::ProtoCodec")
        .compile_fds(fds)?;
    Ok(())
}
