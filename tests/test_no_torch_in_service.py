"""The serving path must not import torch: a serving install does not have it.

A fresh interpreter blocks torch (a meta-path finder records and refuses every ``import torch…``),
then imports every module under service/ (walked dynamically, so modules added later are covered),
models.preprocess and the `reid` CLI, and runs `reid --help` and every `reid COMMAND --help`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO

BLOCKED = ("torch", "torchvision", "torchaudio")

CHECKER = r"""
import importlib, importlib.abc, json, pkgutil, sys, traceback

BLOCKED = set(json.loads(sys.argv[1]))
extra = json.loads(sys.argv[2])
attempts, failures = [], {}


class BlockTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            attempts.append(name)
            # who asked: the innermost frame outside the import machinery and this script
            who = next((f"{fs.filename}:{fs.lineno}" for fs in reversed(traceback.extract_stack())
                        if "importlib" not in fs.filename and not fs.filename.startswith("<")), "?")
            attempts[-1] = f"{name} (from {who})"
            raise ImportError(f"torch is blocked in the serving path: {name}")
        return None


for name in list(sys.modules):
    if name.split(".")[0] in BLOCKED:
        del sys.modules[name]
sys.meta_path.insert(0, BlockTorch())


def try_import(mod):
    try:
        importlib.import_module(mod)
    except BaseException as exc:  # noqa: BLE001 - report everything, e.g. SystemExit at import
        failures[mod] = f"{type(exc).__name__}: {exc}"


import reid.service

walk = pkgutil.walk_packages(reid.service.__path__, "reid.service.", onerror=lambda n: failures.setdefault(n, "walk"))
modules = ["reid.service"] + sorted(m.name for m in walk)
for mod in modules + ["reid.models", "reid.models.preprocess", "reid", "reid.cli"] + extra:
    try_import(mod)

# `reid --help` and every sub-command's --help, in this interpreter
import click
import typer
from reid.cli import app

group = typer.main.get_command(app)
helps = []
for args in [["--help"]] + [[name, "--help"] for name in sorted(group.commands)]:
    try:
        group.main(args=args, prog_name="reid", standalone_mode=False)
        helps.append(args)
    except SystemExit as exc:
        if exc.code not in (0, None):
            failures[" ".join(args)] = f"exit {exc.code}"
        else:
            helps.append(args)
    except BaseException as exc:  # noqa: BLE001
        failures["reid " + " ".join(args)] = f"{type(exc).__name__}: {exc}"

loaded = sorted(n for n in sys.modules if n.split(".")[0] in BLOCKED and sys.modules[n] is not None)
print("@@RESULT@@" + json.dumps({"modules": modules, "attempts": attempts, "failures": failures,
                                 "loaded": loaded, "helps": helps, "commands": sorted(group.commands)}))
"""


def run_checker(extra: list[str] | None = None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", CHECKER, json.dumps(BLOCKED), json.dumps(extra or [])],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("@@RESULT@@"))
    return json.loads(line[len("@@RESULT@@"):])


def test_serving_code_never_imports_torch():
    res = run_checker()
    assert res["attempts"] == [], "serving code tried to import torch:\n" + "\n".join(res["attempts"])
    assert res["loaded"] == []
    assert res["failures"] == {}, res["failures"]
    # the walk really covered the package, and the CLI help really ran for every command
    assert {"reid.service.app", "reid.service.embedder", "reid.service.routes.query"} <= set(res["modules"])
    assert ["--help"] in res["helps"]
    assert {"export", "train", "serve"} <= set(res["commands"]), res["commands"]
    assert len(res["helps"]) == len(res["commands"]) + 1


def test_checker_catches_a_torch_import():
    """The guard itself works: a module that imports torch is reported, with who imported it."""
    res = run_checker(extra=["reid.models.backbones"])
    assert any(a.startswith("torch") and "reid/models/backbones.py" in a for a in res["attempts"]), res["attempts"]
    assert "reid.models.backbones" in res["failures"]
    assert res["loaded"] == []
