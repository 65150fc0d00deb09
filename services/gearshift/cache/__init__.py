"""The semantic cache service: precise, tenant-isolated, durable (see docs/cache.md)."""
