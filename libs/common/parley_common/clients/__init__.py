"""Clients of the stores and services a Parley service calls: traced gRPC calls (grpc_calls), the history
and media services (history, media) and Redis pools (redis_pools)."""
