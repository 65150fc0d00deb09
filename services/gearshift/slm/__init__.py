"""The SLM server: one small model served by vLLM's in-process async engine."""
