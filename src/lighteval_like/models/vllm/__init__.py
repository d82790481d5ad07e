"""The vLLM backend: one engine in process, or data-parallel replicas in their own processes."""
