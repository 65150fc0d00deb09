"""The router's clients of the mesh's other services (the semantic cache, retrievers)."""
