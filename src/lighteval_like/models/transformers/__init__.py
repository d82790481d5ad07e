"""The transformers backend: model loading, scoring, and the continuous-batching generation engine."""
