//! Generates the sync protocol code. Needs `protoc` (Debian: protobuf-compiler) on PATH or in PROTOC.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::configure()
        // Resource bodies are shared between many streams: `Bytes` makes that a refcount bump.
        .bytes(".portcullis.sync.v1.Resource.body")
        .compile_protos(&["proto/portcullis/sync/v1/sync.proto"], &["proto"])?;
    Ok(())
}
