//! Compiles `proto/autoj/v1/*.proto` into `OUT_DIR` with protox (a pure-Rust protobuf
//! compiler), so the build needs no system `protoc`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/autoj/v1/autoj.proto"];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // The descriptor set feeds gRPC server reflection and the JSON mapping below.
    let descriptors = prost::Message::encode_to_vec(&fds);
    std::fs::write(out.join("autoj_descriptor.bin"), &descriptors)?;
    // serde impls in the proto3 JSON mapping (for the router's HTTP door): fields are
    // written with their .proto names and every field is written, defaults included; both
    // the .proto names and lowerCamelCase are read, enums by name or number, 64-bit
    // integers as numbers or strings, and an unknown field is an error.
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .out_dir(&out)
        .preserve_proto_field_names()
        .emit_fields()
        .build(&[".autoj.v1"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("crate::codec::ProtoCodec")
        .compile_fds(fds)?;
    Ok(())
}
