"""Make the registry's torchvision 0.28.0 (a CUDA build) importable beside CPU torch 2.13, for
lmms-eval's environment (`make lmms-env`): its compiled operators do not load there, so the
modules that register Python-side kernels for them are imported only where they can be. Image
transforms (all lmms-eval and transformers' fast image processors use) are pure torch.

    python benchmarks/guard_torchvision.py VENV_PYTHON_SITE_PACKAGES/torchvision/__init__.py
"""

import sys

OLD = "from torchvision import (\n    _autograd_registrations,\n    _meta_registrations,\n"
NEW = ("try:  # guarded: a CUDA build's operators do not exist on CPU torch\n"
       "    from torchvision import _autograd_registrations, _meta_registrations  # noqa: F401\n"
       "except RuntimeError:\n    pass\nfrom torchvision import (\n")


def main(path: str) -> int:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if NEW in text:
        return 0
    if OLD not in text:
        print(f"guard_torchvision: {path} does not have the expected imports (another torchvision version?)", file=sys.stderr)
        return 1
    with open(path, "w", encoding="utf-8") as f:
        f.write(text.replace(OLD, NEW))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
