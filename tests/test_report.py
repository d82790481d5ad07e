"""`report`: the self-contained HTML page (content, checkpoints, no external references), and,
with the `browser` marker, the page opened in headless Chromium (`make test-browser`)."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import tempfile

import pytest
from conftest import run_cli
from synthetic_runs import binary_pairs, write_run

from lighteval_like.results.report import build_html, checkpoint_order
from lighteval_like.results.runs import load_many

ARC, WIKI = "leaderboard|arc:challenge|0", "lighteval|wikitext:2|0"
MMLU = ["leaderboard|mmlu:anatomy|0", "leaderboard|mmlu:astronomy|0"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def _tasks(shift: int) -> dict:
    """Three tasks of 40 docs each; `shift` docs move from wrong to right (run-to-run differences)."""
    a_acc, _ = binary_pairs(10, 0, 0, 30)
    acc = [1.0 if i < 10 + shift else 0.0 for i in range(40)]
    return {
        ARC: {"acc": acc, "acc_norm": a_acc, "_choices": [[" water", " rock", " <b>wood</b>", " iron"]] * 40,
              "_lls": [[-1.0 - 0.01 * i, -2.0, -3.0, -0.5 if i >= 10 + shift else -4.0] for i in range(40)]},
        MMLU[0]: {"acc": acc[:30]},
        MMLU[1]: {"acc": list(reversed(acc[:35]))},
        WIKI: {"word_perplexity": [[-50.0 - shift - i, 20.0] for i in range(12)]},
    }


@pytest.fixture
def three_runs(tmp_path) -> list[str]:
    paths = []
    for k, (name, shift, dtype) in enumerate([("base", 0, "float32"), ("int8", 3, "8bit"), ("tuned", 8, "float32")]):
        write_run(str(tmp_path / name), _tasks(shift), model_name="org/model", timestamp=f"2025-01-0{k + 1}T00-00-00.000000",
                  config={"model_args": {"pretrained": "org/model", "dtype": dtype}, "max_samples": 40})
    paths = [str(tmp_path / n) for n in ("base", "int8", "tuned")]
    return paths


def external_references(page: str) -> list[str]:
    """Anything in the page that would make the browser fetch something."""
    patterns = [r'\b(?:src|href|action|poster|data)\s*=\s*["\']?\s*(?!#|data:)[a-z]+:', r"url\(\s*['\"]?(?!#|data:)[a-z]+:",
                r"@import", r"<link\b", r"<iframe\b", r"\bfetch\(", r"XMLHttpRequest", r"<script[^>]*\bsrc="]
    return [m.group(0) for p in patterns for m in re.finditer(p, page, flags=re.I)]


def test_page_has_runs_scores_plots_and_samples_inline(three_runs):
    runs = load_many(three_runs)
    page = build_html(runs, title="Three runs")
    assert [r.label for r in runs] == ["base", "int8", "tuned"]
    assert external_references(page) == []
    assert "<title>Three runs</title>" in page
    assert len(re.findall(r'<tr class="run-row">', page)) == 3
    rows = re.findall(r'<tr class="score-row" data-task="([^"]+)" data-metric="([^"]+)"', page)
    assert [(html_unescape(t), m) for t, m in rows] == [
        (ARC, "acc"), (ARC, "acc_norm"), (MMLU[0], "acc"), (MMLU[1], "acc"), ("leaderboard|mmlu:_average|0", "acc"),
        (WIKI, "word_perplexity")]
    assert len(re.findall(r'<figure class="plot bar-plot"', page)) == 5
    assert page.count("<svg") == 5 and "line-plot" not in page  # different dtypes: not checkpoints
    data = json.loads(re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S)
                      .group(1).replace("<\\/", "</"))
    arc = next(t for t in data["tasks"] if t["name"] == "leaderboard|arc:challenge")
    assert arc["primary"] == "acc" and arc["total"] == 40 and set(arc["keys"]) == {"0", "1", "2"}
    assert [d["r"]["1"]["ok"] for d in arc["docs"][9:14]] == [1, 1, 1, 1, 0]
    assert "<b>wood</b>" not in page  # text from the details is escaped (data in JSON, rendered as text)
    wiki = next(t for t in data["tasks"] if t["name"] == "lighteval|wikitext:2")
    assert wiki["primary"] is None


def html_unescape(s: str) -> str:
    import html

    return html.unescape(s)


def test_checkpoints_detected_for_the_same_evaluation_of_one_model(tmp_path, three_runs):
    ckpts = []
    for step, shift in ((3000, 8), (1000, 0), (2000, 3)):
        ckpts.append(write_run(str(tmp_path / "ckpt"), _tasks(shift), model_name="org/model",
                               timestamp=f"2025-02-0{shift % 7}T00-00-00.000000",
                               config={"model_args": {"pretrained": "ckpt", "dtype": "float32"}, "checkpoint_step": step}))
    runs = load_many([str(tmp_path / "ckpt")])
    assert [r.data["config_general"]["checkpoint_step"] for r in checkpoint_order(runs, None)] == [1000, 2000, 3000]
    page = build_html(runs)
    assert len(re.findall(r'<figure class="plot line-plot"', page)) == 5
    assert "Over checkpoints" in page
    assert checkpoint_order(load_many(three_runs), None) is None
    assert [r.label for r in checkpoint_order(load_many(three_runs), True)] == ["base", "int8", "tuned"]


def test_report_cli_writes_file_and_reports_errors_in_one_line(three_runs, tmp_path):
    out = tmp_path / "r.html"
    proc = run_cli(["report", *three_runs, "-o", str(out), "--label", "A", "--label", "B", "--label", "C"])
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(r"Report of 3 run\(s\) written to .*r\.html \(\d+ KiB\)\n", proc.stdout)
    assert "1. A</th>" in out.read_text(encoding="utf-8")
    bad = run_cli(["report", *three_runs, "--label", "A"])
    assert bad.returncode == 2
    assert bad.stderr.strip() == "lighteval-like: error: 1 --label given for 3 runs: give one per run"


def test_real_tiny_run_is_read_by_compare_and_report(tiny_model, mirror, tmp_path):
    """The files a real run writes today, read back (guards the layout the loader assumes)."""
    out = tmp_path / "out"
    proc = run_cli(["accelerate", "--model_args", f"pretrained={tiny_model}", "--tasks", "leaderboard|arc:challenge|0|0",
                    "--dataset_dir", mirror, "--output_dir", str(out), "--max_samples", "4", "--save_details", "--no_cache"],
                   env={"HF_DATASETS_CACHE": str(tmp_path / "hf")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    (results_file,) = glob.glob(str(out / "results" / "*" / "results_*.json"))
    same = run_cli(["compare", str(out), results_file, "--json", str(tmp_path / "c.json")])
    assert same.returncode == 0, same.stderr
    rows = json.loads((tmp_path / "c.json").read_text())["rows"]
    assert {r["metric"] for r in rows} == {"acc", "acc_norm"}
    assert all(r["n"] == 4 and r["diff"] == 0 and r["verdict"] == "no detectable difference" for r in rows)
    report = run_cli(["report", str(out), "-o", str(tmp_path / "r.html")])
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert '"name":"leaderboard|arc:challenge"' in page and external_references(page) == []


# ---------------------------------------------------------------- in a real browser


def _driver(tmp):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (make test-browser)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={tmp}", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    # The network off, for real: any request the page tried would fail (and show in the logs).
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.emulateNetworkConditions",
                           {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
    return driver


def open_report(path: str, screenshot: str | None = None) -> dict:
    """Open a report in headless Chromium with the network off; returns what the page showed."""
    with tempfile.TemporaryDirectory() as profile:
        driver = _driver(profile)
        try:
            driver.get("file://" + os.path.abspath(path))
            from selenium.webdriver.common.by import By

            find = driver.find_elements
            seen = {
                "score_rows": len(find(By.CSS_SELECTOR, "#scores tr.score-row")),
                "bar_svgs": len(find(By.CSS_SELECTOR, "figure.bar-plot svg")),
                "line_svgs": len(find(By.CSS_SELECTOR, "figure.line-plot svg")),
                "bars_drawn": len(find(By.CSS_SELECTOR, "figure.bar-plot svg path")),
                "sample_rows": len(find(By.CSS_SELECTOR, "#sample-body tr.sample")),
                "filters": [o.get_attribute("value") for o in find(By.CSS_SELECTOR, "#filter option")],
            }
            first = find(By.CSS_SELECTOR, "#sample-body tr.sample")
            if first:
                first[0].click()
                seen["detail_text"] = driver.find_element(By.CSS_SELECTOR, "#sample-body tr.detail").text
            driver.execute_script("var f=document.getElementById('filter'); f.value='wrong:0';"
                                  "f.dispatchEvent(new Event('change'));")
            seen["wrong_in_first"] = len(find(By.CSS_SELECTOR, "#sample-body tr.sample"))
            driver.execute_script("var f=document.getElementById('filter'); f.value='disagree';"
                                  "f.dispatchEvent(new Event('change'));")
            seen["disagree"] = len(find(By.CSS_SELECTOR, "#sample-body tr.sample"))
            seen["count"] = driver.find_element(By.ID, "count").text
            driver.execute_script("var f=document.getElementById('filter'); f.value='all';"
                                  "f.dispatchEvent(new Event('change'));")
            search = driver.find_element(By.ID, "search")
            search.send_keys("question 7 ")
            seen["search"] = [r.get_attribute("data-doc") for r in find(By.CSS_SELECTOR, "#sample-body tr.sample")]
            search.clear()
            search.send_keys(" ")
            if screenshot:  # the whole page, one sample opened
                driver.execute_script("document.activeElement.blur();")
                rows = find(By.CSS_SELECTOR, "#sample-body tr.sample")
                if rows:
                    rows[min(10, len(rows) - 1)].click()
                height = driver.execute_script("return document.documentElement.scrollHeight")
                driver.set_window_size(1400, min(height + 200, 8000))
                driver.execute_script("window.scrollTo(0, 0);")
                driver.save_screenshot(screenshot)
            seen["console"] = [e for e in driver.get_log("browser")]
            requests = [json.loads(e["message"])["message"] for e in driver.get_log("performance")]
            page = "file://" + os.path.abspath(path)
            # Every request the report's document made, other than loading the page itself.
            seen["requests"] = sorted({m["params"]["request"]["url"] for m in requests
                                       if m["method"] == "Network.requestWillBeSent"
                                       and m["params"].get("documentURL") == page and m["params"]["request"]["url"] != page})
            seen["page_loaded"] = any(m["method"] == "Network.requestWillBeSent" and m["params"]["request"]["url"] == page
                                      for m in requests)
        finally:
            driver.quit()
    return seen


@pytest.mark.browser
@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                    reason="needs chromium and chromedriver (make test-browser installs them with apt)")
def test_report_in_headless_chromium_offline(three_runs, tmp_path):
    out = str(tmp_path / "report.html")
    proc = run_cli(["report", *three_runs, "-o", out])
    assert proc.returncode == 0, proc.stderr
    shot = os.path.join(os.environ.get("REPORT_SCREENSHOT_DIR", str(tmp_path)), "report-synthetic.png")
    seen = open_report(out, shot)
    assert seen["console"] == []
    assert seen["page_loaded"] and seen["requests"] == []  # the page, nothing else
    assert (seen["score_rows"], seen["bar_svgs"], seen["line_svgs"]) == (6, 5, 0)
    assert seen["bars_drawn"] > 20
    assert seen["sample_rows"] == 40  # arc, the first task: 40 docs
    assert seen["filters"] == ["all", "wrong:0", "wrong:1", "wrong:2", "disagree"]
    assert "Prompt" in seen["detail_text"] and "loglik run 3" in seen["detail_text"] and "gold" in seen["detail_text"]
    assert seen["wrong_in_first"] == 30  # base gets 10 of 40 right
    assert seen["disagree"] == 8 and seen["count"].startswith("showing 8 of 8 matching")
    assert seen["search"] == ["7"]
    assert os.path.getsize(shot) > 10_000
