"""Metrics: the library of sample metrics and aggregations, the sandbox that runs model-written
code, and judge metrics (a model scoring another model's answers)."""
