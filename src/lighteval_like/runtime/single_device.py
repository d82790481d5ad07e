"""Where a model's weights live and how its forward runs. `SingleDevice` is the plain case;
`runtime.placement.MeshPlacement` splits the model over a (dp, pp, tp) mesh. The backend
takes a placement and calls it for the steps that depend on where the model runs."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class SingleDevice:
    """The whole model on one device (or spread by `device_map="auto"`, which the backend asks for)."""

    # The shared-prefix key/value cache can be reused (it lives in every layer of this process).
    reuses_prefix_cache = True
    def __init__(self, device: torch.device):
        self.device = device

    @property
    def load_device(self) -> torch.device:
        """Where `from_pretrained` puts the weights before `place`."""
        return self.device

    def check(self, quantized: bool, model_parallel: bool) -> None:
        """Refuse loading options this placement cannot honour (UsageError)."""

    def place(self, model: nn.Module, pad_token_id: int) -> nn.Module:
        """Put the loaded model where it runs (`pad_token_id` fills rows a split forward adds)."""
        return model.to(self.device)

    def forward_logits(self, model: nn.Module, input_ids, positions, mask, wanted: list[list[int]], cache=None):
        """Logits [N, vocab] at row b's columns `wanted[b]`, rows after one another (None on a
        process that computes no logits).

        The output head sees only the wanted hidden states (a pre-hook gathers them), so the
        vocabulary-sized tensor has one row per prediction, not one per token of the batch; what
        a model does after its head (logit scaling or soft-capping) still applies."""
        kwargs = {"past_key_values": cache} if cache is not None else {}
        rows = torch.tensor([b for b, cols in enumerate(wanted) for _ in cols], device=input_ids.device)
        cols = torch.tensor([c for cols in wanted for c in cols], device=input_ids.device)
        head = model.get_output_embeddings()

        def gather(module, args):
            return (args[0][rows, cols][None], *args[1:])

        handle = head.register_forward_pre_hook(gather) if head is not None else None
        try:
            logits = model(
                input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=cache is not None, **kwargs
            ).logits
        finally:
            if handle is not None:
                handle.remove()
        return logits[0] if handle is not None else logits[rows, cols]

    def share_scores(self, keys: list[int], scored: dict[int, tuple[float, bool]]) -> dict[int, tuple[float, bool]]:
        """The scores of `keys` on every process that runs this batch (here: as computed)."""
        return scored

    def generate(self, model: nn.Module, input_ids, attention_mask, generation_config, stopping_criteria):
        """Greedy ids [rows, prompt + new] for a left-padded batch (transformers' `generate`)."""
        return model.generate(
            input_ids=input_ids, attention_mask=attention_mask, generation_config=generation_config,
            stopping_criteria=stopping_criteria,
        )

    def on_out_of_memory(self) -> Exception | None:
        """The error to raise on out-of-memory, or None to let the batch shrink."""
        return None

    def info(self) -> dict[str, Any] | None:
        """The parallel layout for the results (None: not split)."""
        return None
