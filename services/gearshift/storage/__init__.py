"""Storage shared by services that keep data in PostgreSQL + pgvector."""
