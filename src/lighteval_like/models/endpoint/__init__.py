"""The endpoint backend: a model served behind an OpenAI-compatible HTTP API (vLLM, SGLang, ...)."""
