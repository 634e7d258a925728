//! Generates the sync protocol code, the client of Tyk's gRPC coprocess protocol and the OTLP
//! trace exporter's client. Needs
//! `protoc` (Debian: protobuf-compiler) on PATH or in PROTOC.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::configure()
        // Resource bodies are shared between many streams: `Bytes` makes that a refcount bump.
        .bytes(".portcullis.sync.v1.Resource.body")
        .compile_protos(&["proto/portcullis/sync/v1/sync.proto"], &["proto"])?;
    // The gateway only calls plugin servers; it never serves the Dispatcher.
    tonic_prost_build::configure()
        .build_server(false)
        .compile_protos(
            &["proto/coprocess/coprocess_object.proto"],
            &["proto/coprocess"],
        )?;
    tonic_prost_build::configure()
        .build_server(false)
        .compile_protos(&["proto/otlp/trace_service.proto"], &["proto/otlp"])?;
    Ok(())
}
