"""Evaluation stage: the pipeline that runs every stage in order, samples and requests,
execution (dedup, response cache, shards), scoring and reasoning-tag removal."""
