"""Property-based tests: the user-input parsers fail only with their own error and a message,
and the response cache gives back exactly what it was given."""

from __future__ import annotations

import math
import os
import struct

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from lighteval_like.api.errors import ModelArgsError, TaskSpecError
from lighteval_like.api.requests import (
    GenerationRequest,
    GenerationResponse,
    LoglikelihoodRequest,
    LoglikelihoodResponse,
    RollingRequest,
)
from lighteval_like.evaluation.cache import (
    ResponseCache,
    decode_response,
    encode_response,
    request_key,
)
from lighteval_like.models.model_args import (
    TransformersModelConfig,
    _valid_keys,
    build_config,
    load_model_config,
    parse_model_args,
)
from lighteval_like.tasks.specs import TaskSpec, parse_one_spec, parse_task_specs

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Inputs built from the pieces the parsers split on and the values they convert, so the
# fuzzing reaches their deep branches (not only "wrong field count").
SPEC_FIELDS = st.one_of(
    st.sampled_from(["leaderboard", "arc:challenge", "", " ", "0", "1", "25", "-1", "²", "٣", "1.5", "x", "#", "01",
                     "9" * 30, "true"]),
    st.text(max_size=3),
)
NUMBERISH = st.sampled_from(["0", "1", "25", "-1", "²", "٣", "1.5", "01", "9" * 30, "", " 3 ", "x"]) | st.text(max_size=2)
four_fields = st.tuples(SPEC_FIELDS, SPEC_FIELDS, NUMBERISH, st.sampled_from(["0", "1", "2", "", " 1 ", "true"]))
one_spec_like = four_fields.map("|".join) | st.lists(SPEC_FIELDS, max_size=6).map("|".join)
spec_like = st.lists(one_spec_like | st.text(max_size=4), max_size=4).map(",".join)
ARG_KEYS = st.one_of(st.sampled_from(_valid_keys() + ["cache_dir", "unknown", "dtpye", ""]), st.text(max_size=4))
ARG_VALUES = st.one_of(
    st.sampled_from(["", "None", "true", "no", "bfloat16", "fp16", "4bit", "eager", "sdpa", "flash", "cuda:0", "cuda:²",
                     "cpu", "²", "--5", "-3", "0", "12", "9" * 5000, "{a: 1}", "x/y", "/no/such/dir", "m"]),
    st.text(max_size=4),
)
arg_entry = st.tuples(ARG_KEYS, st.sampled_from(["=", "", "=="]), ARG_VALUES).map("".join)
args_like = st.tuples(st.sampled_from(["", "pretrained=m,"]), st.lists(arg_entry, max_size=5).map(",".join)).map(
    "".join
)
# A known key with a value to convert: reaches the type conversion every time.
typed_args = st.lists(st.tuples(st.sampled_from(_valid_keys()), ARG_VALUES).map("=".join), min_size=1, max_size=2).map(
    lambda entries: ",".join(["pretrained=m", *entries])
)
yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


def _one_line_when_input_is(message: str, *inputs: str) -> None:
    """The error has a message, on one line unless the user's own input spans lines."""
    assert message.strip()
    if all(len(str(i).splitlines()) <= 1 for i in inputs):
        assert len(message.splitlines()) == 1, message


def _check_specs(specs: list[TaskSpec]) -> None:
    assert specs
    for spec in specs:
        assert spec.suite and spec.task and "|" not in spec.suite + spec.task and "," not in spec.suite + spec.task
        assert isinstance(spec.num_fewshot, int) and spec.num_fewshot >= 0
        assert isinstance(spec.truncate_fewshot, bool)


@pytest.fixture
def in_empty_dir(tmp_path, monkeypatch):
    """Fuzzed --tasks strings must not name a real file by accident."""
    monkeypatch.chdir(tmp_path)


# ------------------------------------------------------------------ task specs
@SETTINGS
@given(st.one_of(st.text(), spec_like))
def test_task_specs_parse_or_raise_task_spec_error(in_empty_dir, text):
    """Any --tasks string gives valid specs or a TaskSpecError with a one-line message."""
    try:
        specs = parse_task_specs(text)
    except TaskSpecError as e:
        _one_line_when_input_is(str(e), text)
    else:
        _check_specs(specs)


@SETTINGS
@given(st.one_of(st.text(), one_spec_like))
@example("leaderboard|arc|²|0")  # regression: isdigit() accepted '²', then int() raised ValueError
def test_single_spec_parse_or_raise(text):
    try:
        spec = parse_one_spec(text, "somewhere")
    except TaskSpecError as e:
        _one_line_when_input_is(str(e), text)
    else:
        _check_specs([spec])


@SETTINGS
@given(st.binary(max_size=200) | spec_like.map(str.encode))
def test_task_list_file_parse_or_raise(tmp_path_factory, data):
    """Any task-list file content (binary included) gives specs or a TaskSpecError."""
    path = os.path.join(str(tmp_path_factory.getbasetemp()), "fuzzed_tasks")
    with open(path, "wb") as f:
        f.write(data)
    try:
        specs = parse_task_specs(path)
    except TaskSpecError as e:
        assert str(e).strip()
    else:
        _check_specs(specs)


names = st.text(st.characters(blacklist_characters="|,", blacklist_categories=("Z", "C")), min_size=1, max_size=10)


@SETTINGS
@given(st.lists(st.tuples(names, names, st.integers(0, 10**6), st.booleans()), min_size=1, max_size=5))
def test_well_formed_specs_round_trip(in_empty_dir, fields):
    """Specs written in the documented format are parsed back to the same fields, first occurrence kept."""
    text = ",".join(f"{s}|{t}|{n}|{int(b)}" for s, t, n, b in fields)
    seen, want = set(), []
    for s, t, n, b in fields:
        if (s, t, n) not in seen:
            seen.add((s, t, n))
            want.append(TaskSpec(s, t, n, b))
    assert parse_task_specs(text) == want


# ------------------------------------------------------------------ model args
@SETTINGS
@given(st.one_of(st.text(), args_like, typed_args))
@example("pretrained=m,max_length=²")  # regressions found by this test: int('²') raised ValueError,
@example("pretrained=m,max_gen_toks=--5")  # so did '--5' and a 5000-digit number
@example("pretrained=m,max_length=" + "9" * 5000)
@example("pretrained=m,device=cuda:²")
def test_model_args_parse_or_raise_model_args_error(text):
    """Any --model_args string gives a config or a ModelArgsError with a one-line message."""
    try:
        config = parse_model_args(text)
    except ModelArgsError as e:
        _one_line_when_input_is(str(e), text)
    else:
        assert isinstance(config, TransformersModelConfig) and config.pretrained


@SETTINGS
@given(st.dictionaries(st.one_of(st.sampled_from(_valid_keys()), st.text(max_size=6), st.integers()), yaml_values,
                       max_size=5))
@example({0: None})  # regression: a non-string key raised TypeError while building the message
def test_model_config_values_build_or_raise(values):
    """Whatever values a YAML model config holds, the result is a config or a ModelArgsError."""
    try:
        config = build_config(values)
    except ModelArgsError as e:
        assert str(e).strip()
    else:
        assert isinstance(config, TransformersModelConfig)


@SETTINGS
@given(st.one_of(st.text(), st.lists(st.sampled_from(
    ["pretrained: m", "model_parameters:", "  dtype: bf16", "dtype: 2001-13-01", "max_length: 1e9", "- a", "a: [",
     "{", "!!binary x", "model_name: m", "1: 2", "revision: 2024-01-01", ": :", "\t", "attn_implementation: flash"]
), max_size=5).map("\n".join)))
@example("dtype: 2001-13-01")  # regressions: a bad YAML date raised ValueError,
@example("0: x")  # and a non-string key TypeError
def test_model_config_file_load_or_raise(tmp_path_factory, text):
    """Any YAML text as --model_config_path gives a config or a ModelArgsError naming the file."""
    path = os.path.join(str(tmp_path_factory.getbasetemp()), "fuzzed_model.yaml")
    with open(path, "w", encoding="utf-8", errors="surrogatepass") as f:
        f.write(text)
    try:
        config = load_model_config(path)
    except ModelArgsError as e:
        assert path in str(e)
    else:
        assert isinstance(config, TransformersModelConfig)


# --------------------------------------------------------------- response cache
def _same_float(a: float, b: float) -> bool:
    """Bit-equal, except that every NaN is the same NaN (its payload carries nothing)."""
    return (math.isnan(a) and math.isnan(b)) or struct.pack("<d", a) == struct.pack("<d", b)


def _same_response(a, b) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, LoglikelihoodResponse):
        return (_same_float(a.logprob, b.logprob) and (a.is_greedy, a.num_tokens, a.input_truncated)
                == (b.is_greedy, b.num_tokens, b.input_truncated))
    return a == b


ll_responses = st.builds(LoglikelihoodResponse, st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                         st.integers(0, 10**9), st.booleans())
gen_responses = st.builds(GenerationResponse, st.text(), st.integers(0, 10**9), st.booleans())
requests_ = st.one_of(
    st.builds(LoglikelihoodRequest, st.text(max_size=30), st.text(max_size=10), st.booleans()),
    st.builds(RollingRequest, st.text(max_size=30)),
    st.builds(GenerationRequest, st.text(max_size=30), st.lists(st.text(max_size=4), max_size=3).map(tuple),
              st.none() | st.integers(1, 4096)),
)


@SETTINGS
@given(st.one_of(ll_responses, gen_responses))
def test_response_encoding_round_trips_bit_for_bit(response):
    assert _same_response(decode_response(encode_response(response)), response)


@SETTINGS
@given(requests_, requests_)
def test_request_keys_equal_exactly_for_equal_requests(a, b):
    """Different requests never share a cache entry; equal ones always do."""
    assert (request_key(a) == request_key(b)) == (a == b)


@SETTINGS
@given(st.lists(st.tuples(requests_, st.one_of(ll_responses, gen_responses)), max_size=8, unique_by=lambda p: p[0]),
       st.integers(0, 8))
def test_cache_store_then_lookup_round_trips(tmp_path_factory, pairs, split):
    """What one run commits (in batches) a later run reads back exactly, and nothing else."""
    folder = str(tmp_path_factory.mktemp("cache"))
    writer = ResponseCache(folder, "fp")
    requests, responses = [p[0] for p in pairs], [p[1] for p in pairs]
    writer.store(requests[:split], responses[:split])
    writer.store(requests[split:], responses[split:])
    writer.close()
    other = RollingRequest("never stored \x00")
    assume(other not in requests)
    found = ResponseCache(folder, "fp").lookup(requests + [other])
    assert set(found) == set(requests) and other not in found
    for request, response in pairs:
        assert _same_response(found[request], response)


def test_same_float_helper_is_strict():
    """The bit-equality helper used above really tells the values apart."""
    assert _same_float(math.nan, math.nan) and not _same_float(0.0, -0.0) and not _same_float(1.0, 1.0 + 2**-52)
