//! Compiles the .proto files with protox (pure Rust, no system protoc) and generates the
//! tonic client and server code.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/gpair/v1/gpair.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
