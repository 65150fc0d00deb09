"""The router: the mesh's front door (gRPC RouterService plus an OpenAI-compatible HTTP API)."""
