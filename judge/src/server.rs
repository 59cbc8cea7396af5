//! Serving the judge: the `Judge` service with gRPC health and reflection on one listener,
//! stopping when the shutdown future resolves.

use std::future::Future;

use autoj_proto::v1::judge_server::JudgeServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::service::JudgeService;

/// Serves `service` on `listener` until `shutdown` resolves, then lets in-flight streams
/// finish. Health reports `SERVING` for `autoj.v1.Judge` (the engine is loaded before a
/// `JudgeService` can exist).
pub async fn serve(
    listener: TcpListener,
    service: JudgeService,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<JudgeServer<JudgeService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(autoj_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the embedded descriptor sets are valid");
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection)
        .add_service(JudgeServer::new(service))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
}
