"""Image benchmarks on tiny random vision-language models built here: lmms-eval 0.7.3's answers
(golden files written by benchmarks/compare_lmms_eval.py), batch and process invariance, each
image encoded once, and every bad input refused in one line."""

from __future__ import annotations

import glob
import json
import os
import shutil

import pyarrow.parquet as pq
import pytest
from conftest import _train_tokenizer, run_cli

from lighteval_like.demo_vision import build
from lighteval_like.tasks.vision_mirror import write_mirror

HERE = os.path.dirname(__file__)
IMAGES = 6  # as the golden files were written


@pytest.fixture(scope="session")
def vision_tokenizer(tmp_path_factory) -> str:
    folder = str(tmp_path_factory.mktemp("vision-tokenizer"))
    _train_tokenizer(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_qwen_vl(tmp_path_factory, vision_tokenizer) -> str:
    return build(str(tmp_path_factory.mktemp("tiny-qwen2_5_vl")), vision_tokenizer, "qwen2_5_vl")


@pytest.fixture(scope="session")
def vision_mirror(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("vision-mirror"))
    write_mirror(root, IMAGES)
    return root


def _run(model: str, mirror: str, out, tasks: str = "lmms|mme|0|0,lmms|pope|0|0", extra_args: str = "",
         flags: tuple[str, ...] = ()):
    proc = run_cli(["accelerate", "--model_args", f"pretrained={model},dtype=float32{extra_args}", "--tasks", tasks,
                    "--dataset_dir", mirror, "--output_dir", str(out), "--save_details", "--no_cache", *flags])
    return proc


def _outputs(out) -> tuple[dict, dict]:
    """(results json, {task: {doc: generation}})."""
    with open(glob.glob(os.path.join(str(out), "results", "*", "*.json"))[0], encoding="utf-8") as f:
        results = json.load(f)
    answers: dict[str, dict[int, str]] = {}
    for path in glob.glob(os.path.join(str(out), "details", "*", "*", "*.parquet")):
        task = os.path.basename(path)[len("details_") :].rsplit("_", 1)[0]
        answers[task] = {int(r["doc_index"]): r["generation"] for r in pq.read_table(path).to_pylist()}
    return results, answers


@pytest.mark.parametrize("pipeline", ["chat", "simple"])
def test_mme_and_pope_answers_equal_lmms_eval(tiny_qwen_vl, vision_mirror, tmp_path, pipeline):
    with open(os.path.join(HERE, "data", f"lmms_eval_golden_{pipeline}.json"), encoding="utf-8") as f:
        golden = json.load(f)
    proc = _run(tiny_qwen_vl, vision_mirror, tmp_path, extra_args=f",image_pipeline={pipeline}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results, answers = _outputs(tmp_path)
    for task, ours in (("mme", "lmms|mme|0"), ("pope", "lmms|pope|0")):
        expected = {int(d): text for d, text in golden[task]["answers"].items()}
        assert answers[ours] == expected, task
        for metric, value in golden[task]["metrics"].items():
            if value is not None:
                assert results["results"][ours][metric] == pytest.approx(value, abs=1e-9), (task, metric)
    assert any(t.strip().lower().startswith(("yes", "no")) for t in answers["lmms|mme|0"].values()), \
        "the tiny model should answer yes or no to some questions, or the metrics compare nothing"


def test_batch_sizes_give_the_same_answers_and_each_image_is_encoded_once(tiny_qwen_vl, vision_mirror, tmp_path):
    runs = {}
    for batch in ("1", "8"):
        proc = _run(tiny_qwen_vl, vision_mirror, tmp_path / batch, "lmms|mme|0|0", flags=("--override_batch_size", batch))
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[batch] = _outputs(tmp_path / batch)
    assert runs["1"][1] == runs["8"][1] and len(runs["1"][1]["lmms|mme|0"]) == 2 * IMAGES
    stats = runs["8"][0]["summary_general"]["scoring"]
    assert stats["images_encoded"] == IMAGES, stats  # two questions per image, one vision forward


def test_an_image_task_on_a_text_only_model_is_refused_in_one_line(tiny_model, vision_mirror, tmp_path):
    proc = _run(tiny_model, vision_mirror, tmp_path, "lmms|mme|0|0")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and "reads text only" in proc.stderr.strip().splitlines()[-1]


def test_an_unreadable_image_names_its_doc_and_can_be_skipped(tiny_qwen_vl, vision_mirror, tmp_path):
    import pyarrow as pa

    root = tmp_path / "damaged"
    shutil.copytree(vision_mirror, root)
    path = root / "lmms-lab-encoder" / "MME" / "default" / "test.parquet"
    table = pq.read_table(path)
    rows = table.to_pylist()
    rows[3]["image"] = {"bytes": b"\x89PNG not really", "path": "broken.png"}
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)
    proc = _run(tiny_qwen_vl, str(root), tmp_path / "out", "lmms|mme|0|0")
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "row 3" in last and "image is not readable" in last and "--skip_bad_samples" in last, last
    skipped = _run(tiny_qwen_vl, str(root), tmp_path / "skipped", "lmms|mme|0|0", flags=("--skip_bad_samples",))
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    results, answers = _outputs(tmp_path / "skipped")
    assert len(answers["lmms|mme|0"]) == 2 * IMAGES - 1


@pytest.mark.parametrize("args, message", [
    (",max_pixels=1000,min_pixels=2000", "max_pixels (1000) is below min_pixels (2000)"),
    (",image_pipeline=fancy", "image_pipeline 'fancy' is not one of chat, simple"),
    (",attn_implementation=flash", "attn_implementation 'flash' is not allowed"),
])
def test_bad_vision_model_args_are_one_line(tiny_qwen_vl, vision_mirror, tmp_path, args, message):
    proc = _run(tiny_qwen_vl, vision_mirror, tmp_path, "lmms|mme|0|0", extra_args=args)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert message in proc.stderr.strip().splitlines()[-1]


def test_a_model_folder_without_its_image_processor_is_refused(tiny_qwen_vl, vision_mirror, tmp_path):
    folder = tmp_path / "no-processor"
    shutil.copytree(tiny_qwen_vl, folder)
    os.remove(folder / "preprocessor_config.json")
    proc = _run(str(folder), vision_mirror, tmp_path / "out", "lmms|mme|0|0")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "has no image processor" in proc.stderr.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory, vision_tokenizer) -> str:
    return build(str(tmp_path_factory.mktemp("tiny-llava")), vision_tokenizer, "llava")


def test_llava_answers_equal_transformers_generate(tiny_llava, vision_mirror, tmp_path):
    """The second family: our engine's answers against transformers' own processor and `generate`."""
    import io

    import torch
    from PIL import Image
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    proc = _run(tiny_llava, vision_mirror, tmp_path, "lmms|mme|0|0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours = _outputs(tmp_path)[1]["lmms|mme|0"]
    processor = AutoProcessor.from_pretrained(tiny_llava)
    model = LlavaForConditionalGeneration.from_pretrained(tiny_llava, dtype=torch.float32).eval()
    rows = pq.read_table(os.path.join(vision_mirror, "lmms-lab-encoder", "MME", "default", "test.parquet")).to_pylist()
    for index, row in enumerate(rows):
        query = row["question"].replace(" Please answer yes or no.", "") + "\nAnswer the question using a single word or phrase."
        text = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": query}]}],
                                             add_generation_prompt=True)
        image = Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB")
        inputs = processor(text=[text], images=[image], return_tensors="pt")
        out = model.generate(**inputs, max_new_tokens=16, do_sample=False)
        assert processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[0] == ours[index]


def test_details_keep_image_facts_and_the_report_shows_thumbnails(tiny_qwen_vl, vision_mirror, tmp_path):
    import hashlib

    proc = _run(tiny_qwen_vl, vision_mirror, tmp_path, "lmms|mme|0|0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    path = glob.glob(os.path.join(str(tmp_path), "details", "*", "*", "*.parquet"))[0]
    rows = pq.read_table(path).to_pylist()
    source = pq.read_table(os.path.join(vision_mirror, "lmms-lab-encoder", "MME", "default", "test.parquet")).to_pylist()
    for row, original in zip(rows, source):
        (facts,) = json.loads(row["images"])
        assert facts["digest"] == hashlib.sha256(original["image"]["bytes"]).hexdigest()
        assert (facts["width"], facts["height"], facts["format"]) == (64, 64, "PNG")
        assert facts["thumbnail"].startswith("data:image/jpeg;base64,")
    report = run_cli(["report", str(tmp_path), "-o", str(tmp_path / "report.html")])
    assert report.returncode == 0, report.stderr[-2000:]
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/jpeg;base64,") >= IMAGES and 'class: "thumb"' in html


def test_two_data_parallel_processes_give_one_process_answers(tiny_qwen_vl, vision_mirror, tmp_path):
    import subprocess
    import sys

    from conftest import free_port

    single = _run(tiny_qwen_vl, vision_mirror, tmp_path / "single", "lmms|mme|0|0")
    assert single.returncode == 0, single.stderr[-3000:]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(free_port()), "-m", "lighteval_like", "accelerate", "--model_args",
              f"pretrained={tiny_qwen_vl},dtype=float32", "--tasks", "lmms|mme|0|0", "--dataset_dir", vision_mirror,
              "--output_dir", str(tmp_path / "dp"), "--save_details", "--no_cache"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    dp = subprocess.run(launch, capture_output=True, text=True, env=env, timeout=600)
    assert dp.returncode == 0, dp.stderr[-3000:]
    (single_results, single_answers), (dp_results, dp_answers) = _outputs(tmp_path / "single"), _outputs(tmp_path / "dp")
    assert dp_results["config_general"]["num_processes"] == 2
    assert dp_answers == single_answers and dp_results["results"] == single_results["results"]


def test_a_killed_image_run_resumes_to_the_uninterrupted_answers(tiny_qwen_vl, vision_mirror, tmp_path):
    import signal

    from hooks import cache_rows, run_and_kill

    cache_dir, out = str(tmp_path / "cache"), tmp_path / "out"
    args = ["accelerate", "--model_args", f"pretrained={tiny_qwen_vl},dtype=float32", "--tasks", "lmms|mme|0|0",
            "--dataset_dir", vision_mirror, "--override_batch_size", "1", "--save_details", "--output_dir", str(out),
            "--cache_dir", cache_dir]
    assert run_and_kill(args, cache_dir, rows=3, sleep_s=0.5, timeout_s=300) == -signal.SIGKILL
    finished = cache_rows(cache_dir)
    resumed = run_cli(args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    results, answers = _outputs(out)
    assert 0 < finished < 2 * IMAGES and results["summary_general"]["response_cache"]["hits"] == finished
    fresh = _run(tiny_qwen_vl, vision_mirror, tmp_path / "fresh", "lmms|mme|0|0")
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert _outputs(tmp_path / "fresh")[1] == answers


def test_image_loglikelihood_equals_the_model_own_forward(tiny_qwen_vl, vision_mirror):
    """Scoring with images (embeddings spliced in, rotary positions ours) against transformers'
    forward given the pixel values (its own image features and positions)."""
    import torch

    from lighteval_like.api.prompt import Prompt, TextPart, Turn
    from lighteval_like.api.requests import LoglikelihoodRequest
    from lighteval_like.models.transformers.config import TransformersModelConfig
    from lighteval_like.models.transformers.model import TransformersModel

    model = TransformersModel(TransformersModelConfig(pretrained=tiny_qwen_vl, dtype="float32"), show_progress=False)
    rows = pq.read_table(os.path.join(vision_mirror, "lmms-lab-encoder", "MME", "default", "test.parquet")).to_pylist()
    part = model.encoder.media.put(rows[0]["image"]["bytes"])
    prompt = Prompt((Turn("user", (part, TextPart("Is there a red shape?"))),), chat=True)
    requests = [LoglikelihoodRequest(prompt, answer) for answer in ("Yes", "No", "a blue circle")]
    responses = model.loglikelihood(requests)
    inputs = model.encoder.image(part.digest)
    image_token = model.model.config.image_token_id
    for request, response in zip(requests, responses):
        item = model.encoder.image_request_item(request)
        ids = torch.tensor([[*item.tokens, item.targets[-1]]])
        with torch.no_grad():
            logits = model.model(input_ids=ids, pixel_values=inputs.pixel_values, image_grid_thw=torch.tensor([inputs.grid]),
                                 mm_token_type_ids=(ids == image_token).int()).logits[0]
        logprobs = torch.log_softmax(logits[item.first_pred : item.first_pred + len(item.targets)], dim=-1)
        expected = float(logprobs.gather(-1, torch.tensor(item.targets)[:, None]).sum())
        assert response.num_tokens == len(item.targets) and abs(response.logprob - expected) < 1e-4, request.continuation
    assert responses[0].logprob != responses[1].logprob


def test_distributed_with_the_text_tower_tensor_parallel_gives_one_process_answers(tiny_qwen_vl, vision_mirror, tmp_path):
    import subprocess
    import sys

    import yaml
    from conftest import free_port

    single = _run(tiny_qwen_vl, vision_mirror, tmp_path / "single", "lmms|mme|0|0")
    assert single.returncode == 0, single.stderr[-3000:]
    (tmp_path / "ckpt.yaml").write_text(yaml.safe_dump({"model_parameters": {"pretrained": tiny_qwen_vl, "dtype": "float32"}}))
    (tmp_path / "override.yaml").write_text(yaml.safe_dump({
        "logging": {"output_dir": str(tmp_path / "tp"), "save_details": True},
        "parallelism": {"dp": 1, "tp": 2, "pp": 1}, "tasks": {"tasks": "lmms|mme|0|0"},
    }))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "LIGHTEVAL_LIKE_DATA_DIR": vision_mirror}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                           str(free_port()), "-m", "lighteval_like", "distributed", "--checkpoint_config_path",
                           str(tmp_path / "ckpt.yaml"), "--lighteval_config_path", str(tmp_path / "override.yaml")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (single_results, single_answers), (tp_results, tp_answers) = _outputs(tmp_path / "single"), _outputs(tmp_path / "tp")
    assert tp_results["config_general"]["parallelism"]["tp"] == 2
    assert not tp_results["config_general"]["parallelism"]["tp_replicated"]  # the text tower's layers were split
    assert tp_answers == single_answers and tp_results["results"] == single_results["results"]


def test_compare_tests_corpus_metrics_by_a_paired_bootstrap():
    import numpy as np

    from lighteval_like.results.compare import _compare_metric

    rng = np.random.default_rng(0)
    images = np.repeat(np.arange(40.0), 2)  # two questions per image, one category
    right = np.column_stack([np.ones(80), np.zeros(80), images])
    noisy = np.column_stack([(rng.random(80) < 0.3).astype(float), np.zeros(80), images])
    same = _compare_metric("lmms|mme|0", "mme_perception_score", right, right, "mme_perception", True, 0.05)
    worse = _compare_metric("lmms|mme|0", "mme_perception_score", right, noisy, "mme_perception", True, 0.05)
    assert same.test == "paired bootstrap" and same.p == 1.0 and same.diff == 0.0
    assert worse.a == 200.0 and worse.b < 100.0 and worse.p < 0.01 and worse.ci_high < 0


def test_tasks_inspect_shows_an_image_task_prompt_without_a_model(vision_mirror):
    import hashlib

    proc = run_cli(["tasks", "inspect", "lmms|mme", "--dataset_dir", vision_mirror])
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = pq.read_table(os.path.join(vision_mirror, "lmms-lab-encoder", "MME", "default", "test.parquet")).to_pylist()[0]
    digest = hashlib.sha256(row["image"]["bytes"]).hexdigest()[:12]
    assert f"[user] <image sha256:{digest}>{row['question'].replace(' Please answer yes or no.', '')}" in proc.stdout
    assert "Answer the question using a single word or phrase." in proc.stdout
