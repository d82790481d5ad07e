"""Run lmms-eval 0.7.3's CLI with its Qwen-VL models loaded in float32 (it asks for bfloat16
whatever the user passes), for `compare_lmms_eval.py`: float32 on both sides, so the answers can
be compared token for token. Run with lmms-eval's own interpreter:

    .venv-lmms/bin/python benchmarks/lmms_eval_fp32.py --model qwen2_5_vl --model_args ... --tasks ...
"""

import functools
import sys

import torch
import transformers


def _float32(from_pretrained):
    @functools.wraps(from_pretrained)
    def load(*args, **kwargs):
        kwargs.pop("torch_dtype", None)
        kwargs["dtype"] = torch.float32
        return from_pretrained(*args, **kwargs)

    return load


for name in ("Qwen2_5_VLForConditionalGeneration", "Qwen2VLForConditionalGeneration"):
    cls = getattr(transformers, name)
    cls.from_pretrained = classmethod(_float32(cls.from_pretrained.__func__))

if __name__ == "__main__":
    from lmms_eval.__main__ import cli_evaluate

    sys.argv[0] = "lmms-eval"
    cli_evaluate()
