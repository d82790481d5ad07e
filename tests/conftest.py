"""Shared fixtures: a tiny real causal LM and tokenizer built at test time, and a tiny dataset mirror.

Nothing is downloaded: the tokenizer is a byte-level BPE trained here on a small corpus,
the models are randomly initialised Llama / GPT-2 configs (seeded, so scores are stable).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

CORPUS = [
    "Question: What is the capital of France?\nAnswer: Paris is the capital of France.",
    "Q: Who wrote the play?\nA: I have no comment. The play was written by a famous author.",
    "The following are multiple choice questions (with answers) about science.",
    "A. water B. fire C. earth D. air Answer: A B C D yes no true false",
    "She walked to the store because she needed milk, therefore she bought some bread too.",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. #### 72",
    "0 1 2 3 4 5 6 7 8 9 10 plus minus times What is",
]
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant:{% endif %}")


def _train_tokenizer(folder: str) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS * 20, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    fast.save_pretrained(folder)


def build_tiny_model(folder: str, arch: str = "llama", seed: int = 0, hidden: int = 64, heads: int = 4,
                     kv_heads: int = 2) -> str:
    """A randomly initialised (seeded) causal LM with a real BPE tokenizer, saved to `folder`
    (vLLM's CPU attention wants heads of 32 dimensions or more: `hidden`/`heads`)."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    _train_tokenizer(folder)
    vocab = len(AutoTokenizer.from_pretrained(folder))
    torch.manual_seed(seed)
    if arch == "llama":
        config = LlamaConfig(
            vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
            num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=256,
            bos_token_id=0, eos_token_id=0, tie_word_embeddings=False,
        )
        model = LlamaForCausalLM(config)
    else:
        config = GPT2Config(vocab_size=vocab, n_embd=64, n_layer=2, n_head=4, n_positions=256, bos_token_id=0, eos_token_id=0)
        model = GPT2LMHeadModel(config)
    # Sharpen the random weights a little so that loglikelihoods differ between choices.
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(autouse=True)
def _private_response_cache(tmp_path, monkeypatch):
    """No test reads or writes the user's response cache (~/.cache/lighteval_like)."""
    monkeypatch.setenv("LIGHTEVAL_LIKE_CACHE", str(tmp_path / "lighteval-like-cache"))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    return build_tiny_model(str(tmp_path_factory.mktemp("tiny-llama")), "llama")


@pytest.fixture(scope="session")
def tiny_chat_model(tiny_model, tmp_path_factory) -> str:
    """The tiny Llama with a chat template in its tokenizer."""
    from transformers import AutoTokenizer

    folder = str(tmp_path_factory.mktemp("tiny-chat") / "model")
    shutil.copytree(tiny_model, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory) -> str:
    return build_tiny_model(str(tmp_path_factory.mktemp("tiny-gpt2")), "gpt2")


def write_rows(root: str, repo: str, subset: str | None, split: str, rows: list[dict]) -> None:
    folder = os.path.join(root, repo, subset or "default")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{split}.jsonl"), "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


@pytest.fixture(scope="session")
def mirror(tmp_path_factory) -> str:
    """A tiny dataset mirror in the hub layout, a few rows per built-in dataset used by tests."""
    root = str(tmp_path_factory.mktemp("mirror"))
    write_rows(root, "truthfulqa/truthful_qa", "multiple_choice", "validation", [
        {"question": f"What happens to item {i}?",
         "mc1_targets": {"choices": ["Nothing happens.", "It breaks.", "It flies away."], "labels": [1, 0, 0]},
         "mc2_targets": {"choices": ["Nothing happens.", "Nothing much.", "It breaks."], "labels": [1, 1, 0]}}
        for i in range(6)
    ])
    write_rows(root, "allenai/ai2_arc", "ARC-Challenge", "test", [
        {"id": f"q{i}", "question": f"Which is a liquid, case {i}?",
         "choices": {"text": ["water", "rock", "wood", "iron"], "label": ["A", "B", "C", "D"]}, "answerKey": "A"}
        for i in range(6)
    ])
    write_rows(root, "allenai/ai2_arc", "ARC-Challenge", "train", [
        {"id": f"v{i}", "question": f"What is hot, example {i}?",
         "choices": {"text": ["fire", "ice"], "label": ["1", "2"]}, "answerKey": "1"}
        for i in range(4)
    ])
    # Two MMLU subjects (several subtasks of one prefix -> an `mmlu:_average` group).
    for subject in ("abstract_algebra", "anatomy"):
        for split, n in (("test", 3), ("dev", 2)):
            write_rows(root, "cais/mmlu", subject, split, [
                {"question": f"{split} question {i} about {subject}?", "subject": subject,
                 "choices": [f"option {c}{i}" for c in "wxyz"], "answer": (i + len(subject)) % 4}
                for i in range(n)
            ])
    write_rows(root, "openai/gsm8k", "main", "test", [
        {"question": f"Natalia sold {10 + i} clips in April and {i} in May. How many clips in total?",
         "answer": f"She sold {10 + i} + {i} = {10 + 2 * i} clips.\n#### {10 + 2 * i}"}
        for i in range(3)
    ])
    write_rows(root, "EleutherAI/wikitext_document_level", "wikitext-2-raw-v1", "test", [
        {"page": " = Valkyria Chronicles = \n The game 's story @-@ line is set in 1935 , during a war . \n"},
        {"page": " = Long page = \n" + " ".join(f"Sentence {i} tells what is the capital of France ;" for i in range(60))},
    ])
    write_rows(root, "EleutherAI/lambada_openai", "default", "test", [
        {"text": "She walked to the store because she needed milk"},
        {"text": "The play was written by a famous author"},
        {"text": "What is the capital of France? Paris"},
    ])
    return root


def free_port() -> int:
    """A free local port for a rendezvous (a fixed one may be taken by another run)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(args: list[str], env: dict | None = None, cwd: str | None = None, timeout: int = 600):
    """Run `python -m lighteval_like ...` in a subprocess; returns the CompletedProcess."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "lighteval_like", *args], capture_output=True, text=True,
        env=full_env, cwd=cwd, timeout=timeout,
    )


SYSTEM_PYTHON = "/usr/bin/python3"  # for level none where this interpreter is closed to other users


@functools.cache
def sandbox_levels() -> tuple[list, dict]:
    """The sandbox's isolation levels that work here (LIGHTEVAL_LIKE_TEST_ISOLATION=bwrap,none
    narrows them), and the interpreter a level needs when it is not this one: level none runs with
    the system's python3 where this interpreter's folders are closed to other users (a home)."""
    from lighteval_like.metrics import sandbox
    from lighteval_like.metrics.sandbox import Isolation, launch

    levels, python = sandbox.available_isolations(), {}
    if Isolation.NONE not in levels and os.path.exists(SYSTEM_PYTHON):
        os.environ[launch.PYTHON_ENV] = SYSTEM_PYTHON
        try:
            if sandbox.probe(Isolation.NONE) is None:
                levels, python = [*levels, Isolation.NONE], {Isolation.NONE: SYSTEM_PYTHON}
        finally:
            del os.environ[launch.PYTHON_ENV]
    wanted = [w for w in os.environ.get("LIGHTEVAL_LIKE_TEST_ISOLATION", "").split(",") if w]
    return [lv for lv in levels if not wanted or lv.value in wanted], python


def pytest_generate_tests(metafunc):
    """A test that takes `level` runs at each sandbox isolation level that works here."""
    if "level" in metafunc.fixturenames:
        levels = sandbox_levels()[0]
        metafunc.parametrize("level", levels, ids=[lv.value for lv in levels], indirect=True)


@pytest.fixture
def level(request, monkeypatch):
    """An isolation level, with the interpreter its programs run with."""
    python = sandbox_levels()[1].get(request.param)
    if python:
        monkeypatch.setenv("LIGHTEVAL_LIKE_SANDBOX_PYTHON", python)
    return request.param
