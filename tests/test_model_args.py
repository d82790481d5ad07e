"""`--model_args` and `--model_config_path` parsing into `TransformersModelConfig`."""

from __future__ import annotations

import pytest

from lighteval_like.api.errors import ModelArgsError, UsageError
from lighteval_like.cli.entrypoints import model_config_from_flags
from lighteval_like.models.model_args import TransformersModelConfig, load_model_config, parse_model_args
from lighteval_like.models.transformers.config import ATTN_IMPLEMENTATIONS


def test_defaults():
    """Only pretrained given: lm-eval-compatible defaults (no special tokens, shared prefix on)."""
    cfg = parse_model_args("pretrained=org/model")
    assert cfg.pretrained == "org/model"
    assert cfg.add_special_tokens is False and cfg.shared_prefix is True
    assert cfg.dtype == "auto" and cfg.max_length is None and cfg.max_gen_toks == 256
    assert cfg.model_name == "org/model"


def test_types_are_coerced():
    """Booleans, ints and None come out typed, whatever their spelling."""
    cfg = parse_model_args(
        "pretrained=org/model,add_special_tokens=False,trust_remote_code=true,max_length=512,"
        "max_gen_toks=32,revision=v1,tokenizer=None,multichoice_continuations_start_space=0,shared_prefix=no"
    )
    assert cfg.add_special_tokens is False
    assert cfg.trust_remote_code is True
    assert cfg.max_length == 512 and isinstance(cfg.max_length, int)
    assert cfg.max_gen_toks == 32
    assert cfg.revision == "v1"
    assert cfg.tokenizer is None
    assert cfg.multichoice_continuations_start_space is False
    assert cfg.shared_prefix is False


def test_bare_key_means_true():
    """A key without '=' sets a boolean to True."""
    cfg = parse_model_args("pretrained=org/model, add_special_tokens ,model_parallel")
    assert cfg.add_special_tokens is True and cfg.model_parallel is True


def test_dtype_aliases():
    """Short dtype names map to the canonical ones."""
    assert parse_model_args("pretrained=m,dtype=bf16").dtype == "bfloat16"
    assert parse_model_args("pretrained=m,dtype=fp16").dtype == "float16"
    assert parse_model_args("pretrained=m,dtype=float32").dtype == "float32"


def test_unknown_key_lists_valid_keys():
    """An unknown key is named, with the list of valid keys (internal ones hidden)."""
    with pytest.raises(ModelArgsError) as info:
        parse_model_args("pretrained=m,batch_sise=4")
    message = str(info.value)
    assert "batch_sise" in message
    for key in ("pretrained", "dtype", "max_length", "add_special_tokens", "attn_implementation"):
        assert key in message
    assert "cache_dir" not in message


def test_bad_dtype():
    """A dtype outside the supported list is refused with the list."""
    with pytest.raises(ModelArgsError) as info:
        parse_model_args("pretrained=m,dtype=float8")
    assert "'float8'" in str(info.value) and "bfloat16" in str(info.value)


def test_attn_implementation():
    """attn_implementation accepts the listed values and None; anything else names the options."""
    for impl in ATTN_IMPLEMENTATIONS:
        assert parse_model_args(f"pretrained=m,attn_implementation={impl}").attn_implementation == impl
    assert parse_model_args("pretrained=m,attn_implementation=None").attn_implementation is None
    with pytest.raises(ModelArgsError) as info:
        parse_model_args("pretrained=m,attn_implementation=flash_attention_3")
    message = str(info.value)
    assert "flash_attention_3" in message and "sdpa" in message and "eager" in message


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("pretrained=m,max_length=abc", "max_length=abc"),
        ("pretrained=m,add_special_tokens=maybe", "add_special_tokens=maybe"),
        ("pretrained=m,max_length=0", "positive"),
        ("pretrained=m,revision=None", "cannot be None"),
        ("pretrained=m,,dtype=auto", "stray comma"),
        ("pretrained=m,dtype=", "empty value"),
        ("pretrained=m,=3", "no key"),
        ("pretrained=m,pretrained=n", "given twice"),
        ("dtype=float32", "must include pretrained"),
        ("pretrained=m,device=gpu", "device 'gpu'"),
    ],
)
def test_bad_values(text, fragment):
    """Malformed model args are usage errors naming the bad part."""
    with pytest.raises(ModelArgsError) as info:
        parse_model_args(text)
    assert fragment in str(info.value)
    assert isinstance(info.value, UsageError) and info.value.exit_code == 2


def test_local_path_model_name(tmp_path):
    """A local directory is named by its last component (for the results folder)."""
    folder = tmp_path / "my-model"
    folder.mkdir()
    assert parse_model_args(f"pretrained={folder}/").model_name == "my-model"


def test_yaml_top_level(tmp_path):
    """A YAML file with the args at top level gives the same config as --model_args."""
    path = tmp_path / "model.yaml"
    path.write_text("pretrained: org/model\ndtype: bf16\nmax_length: 128\nadd_special_tokens: true\n", encoding="utf-8")
    cfg = load_model_config(str(path))
    assert cfg == parse_model_args("pretrained=org/model,dtype=bfloat16,max_length=128,add_special_tokens=True")


def test_yaml_model_parameters_layout(tmp_path):
    """lighteval's `model_parameters:` layout (with model_name) is accepted."""
    path = tmp_path / "model.yaml"
    path.write_text(
        "model_parameters:\n  model_name: org/model\n  revision: abc\n  shared_prefix: false\n"
        "  quantization_config:\n    bnb_4bit_quant_type: nf4\n",
        encoding="utf-8",
    )
    cfg = load_model_config(str(path))
    assert cfg.pretrained == "org/model" and cfg.revision == "abc" and cfg.shared_prefix is False
    assert cfg.quantization_config == {"bnb_4bit_quant_type": "nf4"}


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("pretrained: m\nbogus_key: 1\n", "bogus_key"),
        ("pretrained: m\nmax_length: [1, 2]\n", "wrong type"),
        ("- pretrained\n", "must be a mapping"),
        ("pretrained: [unclosed\n", "not valid YAML"),
    ],
)
def test_yaml_errors_name_file(tmp_path, content, fragment):
    """Errors in a model config file name the file and the problem."""
    path = tmp_path / "model.yaml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ModelArgsError) as info:
        load_model_config(str(path))
    assert fragment in str(info.value) and str(path) in str(info.value)


def test_yaml_missing_file(tmp_path):
    """A missing model config file is a clear error."""
    with pytest.raises(ModelArgsError, match="cannot read model config"):
        load_model_config(str(tmp_path / "nope.yaml"))


def test_exactly_one_source():
    """The entry point wants exactly one of --model_args / --model_config_path."""
    with pytest.raises(UsageError, match="exactly one"):
        model_config_from_flags(None, None)
    with pytest.raises(UsageError, match="exactly one"):
        model_config_from_flags("pretrained=m", "model.yaml")
    assert isinstance(model_config_from_flags("pretrained=m", None), TransformersModelConfig)


def test_model_name_of_a_gguf_model_is_the_file_name(tmp_path):
    """Results of a GGUF model go under the file's name, not the folder that happens to hold it."""
    config = parse_model_args(f"pretrained={tmp_path},gguf_file=SmolLM2-135M-Instruct.Q4_1.gguf")
    assert config.model_name == "SmolLM2-135M-Instruct.Q4_1"
