"""`python -m tools.containers`: Parley's images built on this machine, podman's Docker API for
the tests' containers, and the Kubernetes manifests played with `podman kube play`.

No Docker engine runs here and no image registry is reachable, so (see each module):
- engine: podman as root with runc and a containers.conf written for this machine's limits; the
  host's pip and apt configuration handed to every build as build secrets.
- build: the base (Debian bookworm + Python 3.11) from Debian's packages with debootstrap;
  Parley's image from the Dockerfile; RabbitMQ, Redis, Cassandra and S3 images.
- play: `make k8s-play`, the `local` overlay played, probed and used end to end.
"""
