"""Running a service process: the event loop, signals and graceful stop (lifecycle), the gRPC server with
health (grpc_server) and the operations port with health, readiness and metrics (ops_server)."""
