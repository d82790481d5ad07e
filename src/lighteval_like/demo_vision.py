"""Tiny random vision-language models, built offline: no real image+text weights can be
downloaded here, so tests, benchmarks and a first try of the vision path use these.

    python -m lighteval_like.demo_vision DIR [--family qwen2_5_vl|qwen2_vl|llava] [--tokenizer TOK]

A model is a real transformers architecture with small random (seeded) weights, a real
tokenizer (`TOK`: any folder with one, e.g. `python -m lighteval_like.demo export`'s SmolLM2) plus
the family's special tokens, the family's real image processor and a chat template. Its answers
mean nothing; every input it reads (token ids, pixel values, image positions) is what the real
model of that family would read.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

QWEN_VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")
LLAVA_IMAGE_TOKEN = "<image>"

# ChatML with Qwen-VL's image markers and default system turn.
QWEN_VL_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# LLaVA-1.5's "USER: <image>\n... ASSISTANT:" format.
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: "
    "{% elif message['role'] == 'assistant' %}ASSISTANT: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{% if message['role'] == 'assistant' %}</s>{% else %} {% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
FAMILIES = ("qwen2_5_vl", "qwen2_vl", "llava")
ANSWER_WORDS, ANSWER_LEAN = ("Yes", "No"), 6.0


def _tokenizer(tokenizer_dir: str, extra: tuple[str, ...]):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    missing = [t for t in extra if t not in tok.get_vocab()]
    if missing:
        tok.add_special_tokens({"additional_special_tokens": missing})
    tok.add_tokens([w for w in ANSWER_WORDS if w not in tok.get_vocab()])  # one token each (see `build`)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _qwen_model(family: str, tok, hidden: int):
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
    )

    ids = {name: tok.convert_tokens_to_ids(name) for name in QWEN_VISION_TOKENS}
    text = dict(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=False)
    common = dict(text_config=text, image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                  vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    if family == "qwen2_5_vl":
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=hidden,
                      window_size=112, fullatt_block_indexes=[1])
        return Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(vision_config=vision, **common))
    vision = dict(depth=2, embed_dim=32, hidden_size=hidden, num_heads=2, mlp_ratio=2)
    return Qwen2VLForConditionalGeneration(Qwen2VLConfig(vision_config=vision, **common))


def _save_processor(out_dir: str, tok, images, processor_class: str, template: str, **options) -> None:
    """The processor's parts as its `save_pretrained` writes them. The processor object itself is
    not built: transformers' Qwen-VL processors need torchvision (their video half) to be made."""
    tok.chat_template = template
    tok.save_pretrained(out_dir)
    images.save_pretrained(out_dir)
    with open(os.path.join(out_dir, "chat_template.jinja"), "w", encoding="utf-8") as f:
        f.write(template)
    with open(os.path.join(out_dir, "processor_config.json"), "w", encoding="utf-8") as f:
        json.dump({"processor_class": processor_class, **options}, f, indent=2)


def _llava(tok, hidden: int):
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=56, patch_size=14, projection_dim=32)
    text = dict(model_type="llama", vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=False)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=tok.convert_tokens_to_ids(LLAVA_IMAGE_TOKEN),
                         vision_feature_layer=-2, vision_feature_select_strategy="default")
    return LlavaForConditionalGeneration(config)


def build(out_dir: str, tokenizer_dir: str, family: str = "qwen2_5_vl", seed: int = 0, hidden: int = 64) -> str:
    """A tiny random `family` model with `tokenizer_dir`'s tokenizer, saved with its processor to `out_dir`."""
    import torch

    if family not in FAMILIES:
        raise ValueError(f"family {family!r} is not one of {', '.join(FAMILIES)}")
    from transformers import CLIPImageProcessor, Qwen2VLImageProcessor

    torch.manual_seed(seed)
    if family == "llava":
        tok = _tokenizer(tokenizer_dir, (LLAVA_IMAGE_TOKEN,))
        model = _llava(tok, hidden)
    else:
        tok = _tokenizer(tokenizer_dir, CHATML_TOKENS + QWEN_VISION_TOKENS)
        model = _qwen_model(family, tok, hidden)
    with torch.no_grad():  # sharper random weights: answers that differ between images
        for p in model.parameters():
            p.mul_(3.0)
        head = model.get_output_embeddings().weight  # and lean to Yes / No, so yes-no benchmarks score something
        for word in ANSWER_WORDS:
            head[tok.convert_tokens_to_ids(word)] *= ANSWER_LEAN
    model.save_pretrained(out_dir)
    if family == "llava":
        images = CLIPImageProcessor(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56})
        _save_processor(out_dir, tok, images, "LlavaProcessor", LLAVA_CHAT_TEMPLATE, patch_size=14,
                        vision_feature_select_strategy="default", num_additional_image_tokens=1)
    else:
        processor_class = "Qwen2_5_VLProcessor" if family == "qwen2_5_vl" else "Qwen2VLProcessor"
        _save_processor(out_dir, tok, Qwen2VLImageProcessor(), processor_class, QWEN_VL_CHAT_TEMPLATE)
    return out_dir


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m lighteval_like.demo_vision", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--family", choices=FAMILIES, default="qwen2_5_vl")
    parser.add_argument("--tokenizer", required=True, help="a folder with a tokenizer (e.g. the exported SmolLM2)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(build(args.out_dir, args.tokenizer, args.family, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
