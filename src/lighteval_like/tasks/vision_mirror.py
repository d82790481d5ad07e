"""MME- and POPE-format mirrors made from the `easy-vqa` wheel's real images (MIT), for trying
and testing the image benchmarks offline (the real MME and POPE images are not reachable here):

    python -m lighteval_like.tasks.vision_mirror ROOT [--images N]

writes `ROOT/lmms-lab-encoder/MME/default/test.parquet` (two yes/no questions per image, one
answered yes and one no, as MME's; images spread over MME's 14 categories) and
`ROOT/lmms-lab-encoder/POPE/{default/test,Full/adversarial,Full/popular,Full/random}.parquet`,
with the hub datasets' columns (an image is a struct of `bytes` and `path`). Then
`--dataset_dir ROOT` runs `lmms|mme|0|0` and `lmms|pope|0|0` on them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict

from lighteval_like.metrics.vision import MME_CATEGORIES

POPE_SPLITS = ("adversarial", "popular", "random")


def _yes_no_by_image() -> tuple[dict[int, dict[str, list[str]]], dict[int, str]]:
    """easy-vqa's test questions answered yes or no, by image, and the image paths."""
    import easy_vqa

    texts, answers, image_ids = easy_vqa.get_test_questions()
    by_image: dict[int, dict[str, list[str]]] = defaultdict(lambda: {"yes": [], "no": []})
    for text, answer, image in zip(texts, answers, image_ids):
        if answer in ("yes", "no"):
            by_image[image][answer].append(text)
    return by_image, easy_vqa.get_test_image_paths()


def _image(path: str) -> dict:
    with open(path, "rb") as f:
        return {"bytes": f.read(), "path": os.path.basename(path)}


def _question(text: str) -> str:
    return text[0].upper() + text[1:]


def mme_rows(images: int) -> list[dict]:
    by_image, paths = _yes_no_by_image()
    chosen = [i for i in sorted(by_image) if by_image[i]["yes"] and by_image[i]["no"]][:images]
    rows = []
    for k, image in enumerate(chosen):
        category = MME_CATEGORIES[k % len(MME_CATEGORIES)]
        for answer in ("yes", "no"):
            rows.append({"question_id": f"{category}/{image}.png", "image": _image(paths[image]),
                         "question": _question(by_image[image][answer][0]) + " Please answer yes or no.",
                         "answer": answer.capitalize(), "category": category})
    return rows


def pope_rows(images: int) -> dict[str, list[dict]]:
    """POPE's three splits: each image's first yes and first no question, images dealt in turn."""
    by_image, paths = _yes_no_by_image()
    chosen = [i for i in sorted(by_image) if by_image[i]["yes"] and by_image[i]["no"]][:images]
    splits: dict[str, list[dict]] = {s: [] for s in POPE_SPLITS}
    for k, image in enumerate(chosen):
        split = POPE_SPLITS[k % len(POPE_SPLITS)]
        for answer in ("yes", "no"):
            rows = splits[split]
            rows.append({"id": len(rows), "question_id": str(len(rows) + 1), "answer": answer,
                         "question": _question(by_image[image][answer][0]), "image_source": str(image),
                         "image": _image(paths[image]), "category": split})
    return splits


def _write(root: str, repo: str, subset: str, split: str, rows: list[dict]) -> str:
    """Rows as the hub stores them: Parquet whose schema says the image column is an image
    (so `datasets`, and harnesses reading through it, decode it)."""
    import datasets

    folder = os.path.join(root, repo, subset)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{split}.parquet")
    features = datasets.Features({k: datasets.Image() if k == "image" else datasets.Value("string") if isinstance(v, str)
                                  else datasets.Value("int64") for k, v in rows[0].items()})
    datasets.Dataset.from_list(rows, features=features).to_parquet(path)
    return path


def write_mirror(root: str, images: int = 64) -> list[str]:
    """The MME and POPE files under `root` (see the module doc); their paths."""
    if images < len(POPE_SPLITS):
        raise ValueError(f"--images {images}: give at least {len(POPE_SPLITS)} (one per POPE split)")
    written = [_write(root, "lmms-lab-encoder/MME", "default", "test", mme_rows(images))]
    splits = pope_rows(images)
    written.append(_write(root, "lmms-lab-encoder/POPE", "default", "test", [r for s in POPE_SPLITS for r in splits[s]]))
    written += [_write(root, "lmms-lab-encoder/POPE", "Full", split, rows) for split, rows in splits.items()]
    return written


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m lighteval_like.tasks.vision_mirror", description=__doc__.splitlines()[0])
    parser.add_argument("root")
    parser.add_argument("--images", type=int, default=64, help="images per dataset (two questions each)")
    args = parser.parse_args(argv)
    for path in write_mirror(args.root, args.images):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
