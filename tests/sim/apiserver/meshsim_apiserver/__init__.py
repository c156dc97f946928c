"""meshsim's Kubernetes API server: a test fixture that serves the objects of a
meshsim run (and the mesh CRDs) over HTTPS, well enough for the real kubectl and
the official Python client. Standard library plus PyYAML (Debian's python3-yaml)."""
