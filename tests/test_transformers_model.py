"""The transformers backend against direct, unshared computations with the same HF model.

References follow lm-evaluation-harness's recipe: the context is encoded alone, the
continuation is the tail of the joint encoding, trailing context whitespace moves to the
continuation, an empty context becomes BOS, and inputs are cut on the left to max_length.
"""

from __future__ import annotations

import functools
import re

import pytest
import torch

from lighteval_like.api.errors import LightevalLikeError
from lighteval_like.api.prompt import Prompt
from lighteval_like.api.requests import GenerationRequest, LoglikelihoodRequest, RollingRequest
from lighteval_like.models.model_args import parse_model_args
from lighteval_like.models.transformers.model import TransformersModel

TOL = 1e-4
FEWSHOT = "Question: What is 2 plus 3?\nAnswer: 5\n\nQuestion: Who wrote the play?\nAnswer: a famous author\n\n"
REQUESTS = [
    LoglikelihoodRequest("Question: What is the capital of France?\nAnswer:", " Paris"),
    LoglikelihoodRequest("Question: What is the capital of France?\nAnswer:", " the capital of France"),
    LoglikelihoodRequest("Question: What is the capital of France?\nAnswer:", " no"),
    LoglikelihoodRequest("Question: What is the capital of France?\nAnswer: ", "Paris"),  # trailing space
    LoglikelihoodRequest("", "Paris is the capital of France."),  # empty context -> BOS
    LoglikelihoodRequest(FEWSHOT + "Question: What is 4 minus 1?\nAnswer:", " 3"),
    LoglikelihoodRequest(FEWSHOT + "Question: What is 4 minus 1?\nAnswer:", " 10"),
    LoglikelihoodRequest(FEWSHOT + "Question: Where is the store?\nAnswer:", " She walked to the store"),
    LoglikelihoodRequest("Question: What is the capital of France?\nAnswer:", " Paris"),  # duplicate
]
LONG_TEXT = " ".join(f"Sentence {i}: she walked to the store because she needed {i} clips." for i in range(6))


@functools.cache
def _hf(path: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(path)


@pytest.fixture(params=["llama", "gpt2"], scope="module")
def model_path(request) -> str:
    return request.getfixturevalue("tiny_model" if request.param == "llama" else "tiny_gpt2")


def load(path: str, args: str = "", batch_size: int | None = None) -> TransformersModel:
    config = parse_model_args(f"pretrained={path}" + (f",{args}" if args else ""))
    return TransformersModel(config, batch_size=batch_size, device="cpu", show_progress=False)


def _encode(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


@torch.no_grad()
def _token_logprobs(hf, inputs: list[int], targets: list[int]) -> tuple[torch.Tensor, bool]:
    """Plain forward of `inputs`; logprobs of `targets`, predicted by the last len(targets) positions."""
    logits = hf(torch.tensor([inputs])).logits[0, len(inputs) - len(targets) :].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    target = torch.tensor(targets)
    return logprobs.gather(-1, target[:, None]).squeeze(-1), bool((logprobs.argmax(-1) == target).all())


@functools.cache
def reference_loglikelihood(path: str, context: str, continuation: str, max_length: int) -> tuple[float, bool, bool]:
    """lm-eval's unshared loglikelihood: (logprob, is_greedy, input truncated)."""
    hf, tok = _hf(path)
    if not context:
        ctx, cont = [tok.bos_token_id], _encode(tok, continuation)
    else:
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
        whole = _encode(tok, context + continuation)
        ctx = _encode(tok, context)
        cont = whole[len(ctx) :]
    full = ctx + cont
    inputs = full[-(max_length + 1) :][:-1]
    picked, greedy = _token_logprobs(hf, inputs, cont)
    return float(picked.sum()), greedy, len(full) > max_length + 1


@functools.cache
def reference_rolling(path: str, text: str, max_length: int) -> float:
    """lm-eval's rolling loglikelihood: disjoint windows of max_length predictions, summed."""
    hf, tok = _hf(path)
    tokens = _encode(tok, text)
    total, predicted = 0.0, 0
    first = min(max_length, len(tokens))
    windows = [([tok.bos_token_id] + tokens[: first - 1], tokens[:first])]
    predicted = first
    while predicted < len(tokens):
        span = min(len(tokens) - predicted, max_length)
        end = predicted + span
        context = tokens[end - max_length - 1 : end - 1]
        targets = tokens[end - span : end]
        windows.append((context, targets))
        predicted += span
    for context, targets in windows:
        context = context[: len(context) - (len(targets) - 1)]  # lm-eval's make_disjoint_window
        inputs = (context + targets)[-(max_length + 1) :][:-1]
        picked, _ = _token_logprobs(hf, inputs, targets)
        total += float(picked.sum())
    return total


@pytest.mark.parametrize("shared_prefix", [True, False])
@pytest.mark.parametrize("batch_size", [1, 64, None])
def test_loglikelihood_matches_unshared_reference(model_path, shared_prefix, batch_size):
    """Shared-prefix packing and batching do not change any loglikelihood or greedy flag."""
    model = load(model_path, f"shared_prefix={shared_prefix}", batch_size)
    responses = model.loglikelihood(REQUESTS)
    assert len(responses) == len(REQUESTS)
    for request, response in zip(REQUESTS, responses):
        logprob, greedy, truncated = reference_loglikelihood(model_path, request.prompt.text, request.continuation, 256)
        assert response.logprob == pytest.approx(logprob, abs=TOL), request
        assert response.is_greedy == greedy
        assert response.input_truncated is truncated is False
        assert response.logprob < 0
    assert responses[0].logprob == responses[-1].logprob  # duplicate request, same answer


def test_small_rows_and_cached_prefix_match_reference(model_path, monkeypatch):
    """With rows too small for the shared few-shot prefix, the prefix is forwarded once and its
    key/value cache reused by several rows; scores still match the unshared reference."""
    from lighteval_like.models.transformers import model as transformers_model

    monkeypatch.setattr(transformers_model, "ROW_TOKENS", 8)
    prefix_lengths = []
    original = TransformersModel._forward_prefix

    def spy(self, prefix):
        prefix_lengths.append(len(prefix))
        return original(self, prefix)

    monkeypatch.setattr(TransformersModel, "_forward_prefix", spy)
    questions = ["What is 4 minus 1?", "Where is the store?", "Who wrote the play?", "What is 7 times 3?"]
    requests = REQUESTS + [
        LoglikelihoodRequest(FEWSHOT + f"Question: {q}\nAnswer:", answer) for q in questions for answer in (" 3", " no")
    ]
    for batch_size in (None, 1):
        responses = load(model_path, batch_size=batch_size).loglikelihood(requests)
        for request, response in zip(requests, responses):
            logprob, greedy, _ = reference_loglikelihood(model_path, request.prompt.text, request.continuation, 256)
            assert response.logprob == pytest.approx(logprob, abs=TOL), request
            assert response.is_greedy == greedy
    assert prefix_lengths and min(prefix_lengths) >= 32


def test_shared_prefix_forwards_fewer_tokens(tiny_model):
    """Packing forwards each shared context once (fewer tokens than one row per request)."""
    shared, plain = load(tiny_model), load(tiny_model, "shared_prefix=False")
    shared.loglikelihood(REQUESTS)
    plain.loglikelihood(REQUESTS)
    assert shared.stats()["tokens_forwarded"] < plain.stats()["tokens_forwarded"]
    assert shared.stats()["tokens_forwarded"] == shared.stats()["unique_prompt_tokens"]


def test_trailing_context_space_moves_to_continuation(tiny_model):
    """'ctx ' + 'cont' is scored exactly as 'ctx' + ' cont'."""
    model = load(tiny_model)
    a, b = model.loglikelihood([
        LoglikelihoodRequest("Question: What is the capital of France?\nAnswer: ", "Paris"),
        LoglikelihoodRequest("Question: What is the capital of France?\nAnswer:", " Paris"),
    ])
    assert a.logprob == pytest.approx(b.logprob, abs=1e-6)
    assert a.num_tokens == b.num_tokens == 3


def _greedy_continuation(path: str) -> tuple[str, str]:
    """A (context, continuation) whose continuation is the model's own argmax tokens and
    re-encodes to exactly those tokens after the context."""
    hf, tok = _hf(path)
    contexts = GEN_CONTEXTS + [FEWSHOT + "Question: What is 4 minus 1?\nAnswer:"]
    for context in contexts:
        ids = _encode(tok, context)
        for n in (3, 2, 1):
            with torch.no_grad():
                out = hf.generate(
                    torch.tensor([ids]), max_new_tokens=n, do_sample=False, pad_token_id=0, eos_token_id=None
                )
            new = out[0, len(ids) :].tolist()
            continuation = tok.decode(new)
            if _encode(tok, context + continuation) == ids + new:
                return context, continuation
    raise AssertionError("no greedy continuation re-encodes identically")


def test_is_greedy_true_for_greedy_continuation(model_path):
    """A continuation made of the model's own argmax tokens is reported greedy; another is not."""
    context, continuation = _greedy_continuation(model_path)
    model = load(model_path)
    greedy, other = model.loglikelihood([
        LoglikelihoodRequest(context, continuation), LoglikelihoodRequest(context, " the capital of France")
    ])
    assert greedy.is_greedy is True
    assert other.is_greedy is False


def test_left_truncation_when_context_exceeds_max_length(model_path):
    """Inputs longer than max_length lose their left part, keep the continuation, and are flagged."""
    model = load(model_path, "max_length=12")
    assert model.max_length == 12
    long_context = FEWSHOT + "Question: What is 4 minus 1?\nAnswer:"
    requests = [LoglikelihoodRequest(long_context, " 3"), LoglikelihoodRequest("What is", " 5")]
    long, short = model.loglikelihood(requests)
    for request, response in zip(requests, (long, short)):
        logprob, greedy, truncated = reference_loglikelihood(model_path, request.prompt.text, request.continuation, 12)
        assert response.logprob == pytest.approx(logprob, abs=TOL)
        assert response.input_truncated is truncated
    assert long.input_truncated is True and short.input_truncated is False
    # Truncation really changed the number: the full-context score differs.
    full = load(model_path).loglikelihood([requests[0]])[0]
    assert full.input_truncated is False
    assert abs(full.logprob - long.logprob) > 1e-3


@pytest.mark.parametrize("shared_prefix", [True, False])
def test_rolling_matches_direct_windows(model_path, shared_prefix):
    """Rolling loglikelihood over several max_length windows equals summing direct per-window logprobs."""
    model = load(model_path, f"max_length=16,shared_prefix={shared_prefix}")
    _, tok = _hf(model_path)
    n_tokens = len(_encode(tok, LONG_TEXT))
    assert n_tokens > 3 * 16  # several windows
    short = "Paris is the capital of France."
    long_resp, short_resp = model.loglikelihood_rolling([RollingRequest(LONG_TEXT), RollingRequest(short)])
    assert long_resp.num_tokens == n_tokens
    assert long_resp.logprob == pytest.approx(reference_rolling(model_path, LONG_TEXT, 16), abs=TOL)
    assert short_resp.logprob == pytest.approx(reference_rolling(model_path, short, 16), abs=TOL)


def test_rolling_single_window_is_plain_forward(model_path):
    """A text that fits one window scores as one forward of BOS + text."""
    hf, tok = _hf(model_path)
    text = "She walked to the store because she needed milk."
    tokens = _encode(tok, text)
    picked, _ = _token_logprobs(hf, [tok.bos_token_id] + tokens[:-1], tokens)
    response = load(model_path).loglikelihood_rolling([RollingRequest(text)])[0]
    assert response.num_tokens == len(tokens)
    assert response.logprob == pytest.approx(float(picked.sum()), abs=TOL)


def test_single_token_requests(tiny_model):
    """Single-token requests score like ordinary ones; a multi-token continuation is refused."""
    model = load(tiny_model)
    context = "A. water B. fire C. earth D. air Answer:"
    single = model.loglikelihood([LoglikelihoodRequest(context, " A", True), LoglikelihoodRequest(context, " B", True)])
    plain = model.loglikelihood([LoglikelihoodRequest(context, " A"), LoglikelihoodRequest(context, " B")])
    assert [r.num_tokens for r in single] == [1, 1]
    assert [r.logprob for r in single] == pytest.approx([r.logprob for r in plain], abs=1e-6)
    message = r"single-token task: continuation ' the capital of France' is 4 tokens"
    with pytest.raises(LightevalLikeError, match=message):
        model.loglikelihood([LoglikelihoodRequest(context, " the capital of France", True)])


def _hf_greedy(path: str, context: str, max_new_tokens: int) -> tuple[str, list[int]]:
    hf, tok = _hf(path)
    ids = _encode(tok, context)
    with torch.no_grad():
        out = hf.generate(
            torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=max_new_tokens, do_sample=False,
            pad_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
        )
    new = out[0, len(ids) :].tolist()
    return tok.decode(new, skip_special_tokens=True), new


GEN_CONTEXTS = [
    "Question: What is the capital of France?\nAnswer:",
    "The following are",
    "Q: Who wrote the play?\nA:",
    "0 1 2 3 4 5 6 7 8 9 10 plus minus times What is",
]


def test_greedy_until_max_new_tokens_matches_hf_generate(model_path):
    """With no stop sequence, output is HF greedy decoding cut at max_new_tokens."""
    model = load(model_path)
    for n in (3, 12):
        response = model.greedy_until([GenerationRequest(GEN_CONTEXTS[0], (), n)])[0]
        text, new = _hf_greedy(model_path, GEN_CONTEXTS[0], n)
        assert response.text == text
        assert response.num_tokens == len(new) <= n
        assert response.input_truncated is False
    short = model.greedy_until([GenerationRequest(GEN_CONTEXTS[0], (), 3)])[0]
    assert model.greedy_until([GenerationRequest(GEN_CONTEXTS[0], (), 12)])[0].text.startswith(short.text)


def test_greedy_until_stops_at_stop_sequence(model_path):
    """Generation stops early at a stop sequence, and the text ends right before it."""
    _, tok = _hf(model_path)
    context = GEN_CONTEXTS[2]
    full_text, new = _hf_greedy(model_path, context, 20)
    pieces = [tok.decode([t]) for t in new]
    k = next(i for i in range(4, len(pieces)) if pieces[i].strip().isalnum())
    stop = pieces[k]
    expected = full_text.split(stop)[0]
    response = load(model_path).greedy_until([GenerationRequest(context, (stop,), 20)])[0]
    assert response.text == expected
    assert stop not in response.text
    assert response.num_tokens <= k + 1 < 20


def test_greedy_until_batched_equals_one_at_a_time(model_path):
    """Left-padded batches give the same generations as one request at a time."""
    requests = [GenerationRequest(c, ("\n\n",), 10) for c in GEN_CONTEXTS]
    batched = load(model_path, batch_size=8).greedy_until(requests)
    auto = load(model_path).greedy_until(requests)
    single_model = load(model_path, batch_size=1)
    singles = [single_model.greedy_until([r])[0] for r in requests]
    assert [r.text for r in batched] == [r.text for r in singles] == [r.text for r in auto]
    assert [r.num_tokens for r in batched] == [r.num_tokens for r in singles]
    assert len({r.text for r in singles}) == len(singles)  # distinct prompts, distinct outputs


def test_greedy_until_truncates_long_context(tiny_model):
    """A context longer than max_length - max_new_tokens is cut on the left and flagged."""
    model = load(tiny_model, "max_length=16")
    long, short = model.greedy_until([
        GenerationRequest(FEWSHOT + "Question: What is 4 minus 1?\nAnswer:", (), 4),
        GenerationRequest("What is", (), 4),
    ])
    assert long.input_truncated is True and short.input_truncated is False
    assert long.num_tokens <= 4


def test_count_tokens_and_info(tiny_model):
    """count_tokens uses the encoding without special tokens; info reports the model facts."""
    model = load(tiny_model)
    _, tok = _hf(tiny_model)
    assert model.encoder.count_tokens("What is the capital") == len(_encode(tok, "What is the capital"))
    info = model.info().as_record()
    assert info["max_length"] == 256 and info["model_dtype"] == "float32"
    assert info["model_name"] == tiny_model.rstrip("/").split("/")[-1]


def test_chat_template_required(tiny_model):
    """A chat prompt on a tokenizer without a template is a clear error."""
    model = load(tiny_model)
    with pytest.raises(LightevalLikeError, match="has no chat template"):
        model.encoder.render(Prompt.from_messages([("user", "hi")]))


@pytest.mark.parametrize("dtype, layer, rel_tol", [("8bit", "Linear8bitLt", 0.05), ("4bit", "Linear4bit", 0.3)])
def test_bitsandbytes_quantised_model_scores_near_full_precision(tiny_model, dtype, layer, rel_tol):
    """dtype=4bit/8bit loads the linear layers through bitsandbytes (it runs on CPU) and the
    results record it; the loglikelihoods move, but stay near the fp32 model's."""
    full = [r.logprob for r in load(tiny_model).loglikelihood(REQUESTS)]
    model = load(tiny_model, f"dtype={dtype}")
    assert type(model.model.model.layers[0].mlp.up_proj).__name__ == layer
    info = model.info().as_record()
    assert info["model_dtype"].startswith(f"{dtype} (bitsandbytes") and info["model_size"] == "0.1M parameters"
    quantised = [r.logprob for r in model.loglikelihood(REQUESTS)]
    assert quantised != full
    assert all(q == pytest.approx(f, rel=rel_tol) for q, f in zip(quantised, full))


def test_quantization_config_reaches_bitsandbytes(tiny_model):
    from lighteval_like.models.model_args import build_config

    config = build_config({"pretrained": tiny_model, "dtype": "4bit", "quantization_config": {"bnb_4bit_quant_type": "fp4"}})
    model = TransformersModel(config, device="cpu", show_progress=False)
    assert model.model.model.layers[0].mlp.up_proj.weight.quant_state.quant_type == "fp4"


@pytest.mark.parametrize(
    "options, fragment",
    [
        ({"bnb_4bit_quant_typ": "nf4"}, "unknown quantization_config key(s) bnb_4bit_quant_typ (did you mean bnb_4bit_quant_type?)"),
        ({"load_in_8bit": True}, "load_in_4bit and load_in_8bit are both True"),
    ],
)
def test_bad_quantization_config_is_one_clear_error(tiny_model, options, fragment):
    from lighteval_like.api.errors import ModelArgsError
    from lighteval_like.models.model_args import build_config

    with pytest.raises(ModelArgsError, match=re.escape(fragment)):
        TransformersModel(
            build_config({"pretrained": tiny_model, "dtype": "4bit", "quantization_config": options}),
            device="cpu", show_progress=False,
        )
