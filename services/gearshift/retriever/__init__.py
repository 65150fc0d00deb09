"""The retrieval service: document collections ("sources") searched by meaning and words."""
