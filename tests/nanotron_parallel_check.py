"""Nanotron fixtures split over tp / pp by the `distributed` backend, checked against nanotron's logits.

Run under torchrun (gloo, CPU), for example:

    PYTHONPATH=src torchrun --standalone --nproc-per-node=2 tests/nanotron_parallel_check.py --tp 2
    PYTHONPATH=src torchrun --standalone --nproc-per-node=2 tests/nanotron_parallel_check.py --pp 2

For every fixture (any saved tp): the converted Llama goes through the backend that `distributed`
uses (`NanotronCheckpointModel` with the runtime's `MeshPlacement`), so tp shards it with
`apply_tensor_parallel` and pp splits it with `split_pipeline_stage` + the pipeline schedule.
Checked: (tp only) the sharded model's full logits against `nanotron_logits.pt`; (always) the
backend's loglikelihoods of every split of the reference ids into context / continuation against
the same sums computed from nanotron's logits. A word-level tokenizer with one word per id
(`<id>`) makes the text encode to exactly the reference ids. Rank 0 prints one line per fixture
and `OK` when all fit; the exit status is non-zero otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import torch
import torch.distributed as dist

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "..", "shared", "data", "nanotron")
NAMES = ("tiny_tp1", "tiny_tp2", "tiny_tp2_gqa_pad_tied", "smol_vocab_tp2", "trainer_run")
LOGIT_TOLERANCE = 1e-4


def id_tokenizer(folder: str, size: int) -> str:
    """Token id i <-> word `<i>`: encoding '<3> <17>' gives [3, 17] (special tokens are matched
    inside words, so no word may contain another)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({f"<{i}>": i for i in range(size)}, unk_token="<0>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<0>", eos_token="<2>", bos_token="<1>").save_pretrained(folder)
    return folder


def check(name: str, layout, workdir: str) -> tuple[float, float | None]:
    from lighteval_like.api.requests import LoglikelihoodRequest
    from lighteval_like.models.nanotron.checkpoint import resolve_checkpoint
    from lighteval_like.models.nanotron.model import NanotronCheckpointModel, model_config_for
    from lighteval_like.runtime.placement import MeshPlacement

    ckpt = resolve_checkpoint(os.path.join(FIXTURES, name))
    ref = torch.load(ckpt.root / "nanotron_logits.pt")
    ids, ref_logits = ref["input_ids"], ref["logits"].double()
    tokenizer = os.path.join(workdir, f"tok-{ckpt.padded_vocab_size}")
    if dist.get_rank() == 0 and not os.path.isdir(tokenizer):
        id_tokenizer(tokenizer, ckpt.padded_vocab_size)
    dist.barrier()
    config = model_config_for(ckpt, tokenizer=tokenizer, dtype="float32")
    placement = MeshPlacement(layout.mesh, layout.device, layout.dp, layout.pp, layout.tp)
    model = NanotronCheckpointModel(config, batch_size=4, show_progress=False, placement=placement)

    layers = model.model.model.layers
    if layout.tp > 1:  # really sharded: each rank holds 1/tp of the projections
        from torch.distributed.tensor import DTensor

        q = next(m for m in layers if hasattr(m, "self_attn")).self_attn.q_proj.weight
        assert isinstance(q, DTensor) and q.to_local().shape[0] * layout.tp == q.shape[0], type(q)
    if layout.pp > 1:  # really split: this stage runs only its own layers
        assert sum(type(m).__name__ != "_NotOnThisStage" for m in layers) < len(layers)

    logit_error = None
    if layout.pp == 1:
        with torch.no_grad():
            logits = model.model(ids).logits
        logit_error = (logits.double() - ref_logits).abs().max().item()

    logprobs = torch.log_softmax(ref_logits, dim=-1)
    requests, expected = [], []
    for row in range(ids.shape[0]):
        words = [f"<{i}>" for i in ids[row].tolist()]
        for split in range(1, ids.shape[1]):
            requests.append(LoglikelihoodRequest(" ".join(words[:split]), " " + " ".join(words[split:])))
            positions = range(split - 1, ids.shape[1] - 1)
            expected.append(sum(logprobs[row, p, ids[row, p + 1]].item() for p in positions))
    responses = model.loglikelihood(requests)
    ll_error = max(abs(r.logprob - e) for r, e in zip(responses, expected))
    return ll_error, logit_error


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tp", type=int, default=1)
    parser.add_argument("--pp", type=int, default=1)
    parser.add_argument("--names", default=",".join(NAMES))
    args = parser.parse_args()
    from types import SimpleNamespace

    from torch.distributed.device_mesh import init_device_mesh

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    mesh = init_device_mesh("cpu", (1, args.pp, args.tp), mesh_dim_names=("dp", "pp", "tp"))
    layout = SimpleNamespace(mesh=mesh, device=torch.device("cpu"), dp=1, pp=args.pp, tp=args.tp)
    ok = True
    with tempfile.TemporaryDirectory() as local:
        box = [local]
        dist.broadcast_object_list(box, src=0)  # one folder for the tokenizers (one machine)
        for name in args.names.split(","):
            ll_error, logit_error = check(name, layout, box[0])
            # A loglikelihood sums up to 15 log-probabilities, each within the logits' tolerance.
            fits = ll_error < 15 * 2 * LOGIT_TOLERANCE and (logit_error is None or logit_error < LOGIT_TOLERANCE)
            ok &= fits
            if dist.get_rank() == 0:
                logit_text = "n/a (pp)" if logit_error is None else f"{logit_error:.2e}"
                print(f"{name}: tp={args.tp} pp={args.pp} max|dlogit|={logit_text} "
                      f"max|dloglikelihood|={ll_error:.2e} {'ok' if fits else 'MISMATCH'}", flush=True)
        dist.barrier()
    if dist.get_rank() == 0 and ok:
        print("OK", flush=True)
    dist.destroy_process_group()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
