"""Checks of deploy/: Compose, Kubernetes, vLLM profiles, the air-gapped wheelhouse."""
