"""Multi-routing: one question sent to several routes at once, the answers combined."""
