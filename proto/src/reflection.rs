//! gRPC server reflection for every client: both protocol versions, `grpc.reflection.v1`
//! (grpcurl, current tooling) and `grpc.reflection.v1alpha` (grpcio-reflection's Python
//! client, grpcui, Postman, older grpcurl builds), each describing the `autoj.v1` contract
//! and gRPC health.

use tonic_reflection::server::{v1, v1alpha, Builder, Error};

/// The two reflection services over the same descriptors; a server adds both.
pub fn services() -> Result<
    (
        v1::ServerReflectionServer<impl v1::ServerReflection>,
        v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection>,
    ),
    Error,
> {
    let builder = || {
        Builder::configure()
            .register_encoded_file_descriptor_set(crate::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}
