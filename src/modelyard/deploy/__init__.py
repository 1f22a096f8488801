"""Deploy: Kubernetes manifests for a fleet (render) and their offline validation."""
