"""The LLM proxy: the InferenceService contract in front of OpenAI-compatible upstreams."""
