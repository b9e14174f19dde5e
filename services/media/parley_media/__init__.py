"""Media service: uploads, processing into object storage, images for prompts, image generation.

grpc_api (MediaService) -> library (MediaLibrary) -> sniffing, images (on CpuPool threads), video
(in VideoPool child processes), generators, objects (S3 through the minio SDK); records holds
the key layout.
"""
