"""Everything that knows about processes and ranks: the launch environments (accelerate,
torchrun), the (dp, pp, tp) device mesh, every collective, fault handling of ranks, and the
tensor-/pipeline-parallel placement of a model. Nothing outside this package imports
`torch.distributed`; the pipeline sees only a `ProcessContext`, a backend only a placement."""

from lighteval_like.runtime.process import ProcessContext

__all__ = ["ProcessContext"]
