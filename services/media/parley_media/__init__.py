"""Media service: uploads, compression into object storage, media for providers.

This first version serves gRPC health only; the media API (proto/parley/v1/media.proto)
arrives with the Media issue.
"""
