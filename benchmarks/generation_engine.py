"""The generation engine against transformers: static `generate` batches, transformers' own
continuous batching (`generate_batch`, paged cache) and our engine, on the same prompts, and our
greedy texts against one-at-a-time `generate`.

    python benchmarks/generation_engine.py --config DIR [--device cuda] [--prompts 32] [--max_new 128]

`--config` is a model folder (config.json and tokenizer files); with `--random` its weights are
initialised at random (speed does not depend on them; rows then stop only at their token limit,
so each prompt gets its own limit, uniform in [max_new/8, max_new], to make rows stop at
different steps). Prompts are gsm8k_cot's: the 8 exemplars, then a question.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from lighteval_like.api.requests import GenerationRequest  # noqa: E402
from lighteval_like.models.model_args import parse_model_args  # noqa: E402
from lighteval_like.models.transformers.model import TransformersModel  # noqa: E402
from lighteval_like.tasks.gsm8k_cot import EXEMPLARS  # noqa: E402

PREFIX = "".join(f"Q: {q}\nA: {a}\n\n" for q, a in EXEMPLARS)


def model_folder(args) -> str:
    if not args.random:
        return args.config
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(args.config), dtype=torch.float32)
    folder = tempfile.mkdtemp(prefix="random-model-")
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(args.config).save_pretrained(folder)
    return folder


def timed(fn):
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def static_generate(ours: TransformersModel, prompts: list[str], limits: list[int], batch: int) -> list[list[int]]:
    """transformers `generate` on left-padded batches (longest prompts first); a batch runs to
    its largest limit, each row then cut at its own."""
    from transformers import GenerationConfig

    tok, outs = ours.tokenizer, {}
    tok.padding_side = "left"
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    for start in range(0, len(order), batch):
        rows = order[start : start + batch]
        enc = tok([prompts[i] for i in rows], return_tensors="pt", padding=True).to(ours.device)
        config = GenerationConfig(max_new_tokens=max(limits[i] for i in rows), do_sample=False,
                                  pad_token_id=tok.pad_token_id, eos_token_id=None)
        with torch.no_grad():
            out = ours.model.generate(**enc, generation_config=config)
        for j, i in enumerate(rows):
            outs[i] = out[j, enc.input_ids.shape[1] :][: limits[i]].tolist()
    return [outs[i] for i in range(len(prompts))]


def transformers_cb(ours: TransformersModel, prompts: list[str], max_new: int) -> int:
    from transformers import GenerationConfig

    ids = [ours.tokenizer(p)["input_ids"] for p in prompts]
    config = GenerationConfig(max_new_tokens=max_new, do_sample=False, pad_token_id=ours.tokenizer.pad_token_id,
                              eos_token_id=None)
    results = ours.model.generate_batch(ids, generation_config=config)
    return sum(len(r.generated_tokens) for r in results.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--random", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max_new", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--identity_checks", type=int, default=4)
    args = parser.parse_args()
    folder = model_folder(args)
    ours = TransformersModel(parse_model_args(f"pretrained={folder},dtype=float32"), batch_size=args.batch_size,
                             device=args.device, show_progress=False)
    gen = torch.Generator().manual_seed(0)
    limits = torch.randint(max(1, args.max_new // 8), args.max_new + 1, (args.prompts,), generator=gen).tolist()
    prompts = [PREFIX + f"Q: Natalia sold {7 * i + 3} clips in April and half as many in May. How many?\nA:"
               for i in range(args.prompts)]
    report: dict = {"device": args.device, "prompts": args.prompts, "batch_size": args.batch_size}
    requests = [GenerationRequest(p, (), n) for p, n in zip(prompts, limits)]
    report["ours_varied_limits_s"], responses = timed(lambda: ours.greedy_until(requests))
    report["static_varied_limits_s"], static = timed(lambda: static_generate(ours, prompts, limits, args.batch_size))
    report["generated_tokens_varied"] = sum(limits)
    uniform = [args.max_new] * args.prompts
    report["ours_uniform_s"], _ = timed(lambda: ours.greedy_until([GenerationRequest(p, (), args.max_new) for p in prompts]))
    report["static_uniform_s"], _ = timed(lambda: static_generate(ours, prompts, uniform, args.batch_size))
    try:
        report["transformers_cb_uniform_s"], _ = timed(lambda: transformers_cb(ours, prompts, args.max_new))
    except Exception as e:  # an API or backend this transformers lacks: say so
        report["transformers_cb_uniform_s"] = f"failed: {type(e).__name__}: {str(e)[:200]}"
    single = [static_generate(ours, [p], [n], 1)[0] for p, n in list(zip(prompts, limits))[: args.identity_checks]]
    texts = [ours.tokenizer.decode(ids, skip_special_tokens=True) for ids in single]
    report["identical_to_one_at_a_time"] = f"{sum(r.text == t for r, t in zip(responses, texts))}/{len(texts)}"
    report["identical_static_batched"] = f"{sum(r.text == ours.tokenizer.decode(s, skip_special_tokens=True) for r, s in zip(responses, static))}/{len(static)}"
    report["prefix_tokens_reused"] = ours.counters.prefix_tokens_reused
    print(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
