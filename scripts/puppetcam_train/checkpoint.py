"""Self-describing checkpoints (config, step, versions and data provenance travel inside) and a
dataclass -> argparse helper shared by the command-line scripts."""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import subprocess
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]


def versions() -> dict:
    try:
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        rev = ""
    return dict(torch=torch.__version__, numpy=np.__version__, python=platform.python_version(),
                git=rev, date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))


def save(path: Path, obj: dict):
    """Atomic write (tmp + rename) so an interrupted run never leaves a truncated checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({**obj, "versions": versions()}, tmp)
    os.replace(tmp, path)


def load(path: Path) -> dict:
    """Loads a checkpoint without running code from it: `weights_only` unpickling (tensors,
    containers, numbers, strings), plus the torch version object `save` stores. A shared or
    downloaded `.pt` can then not execute anything (issue 18)."""
    from torch.torch_version import TorchVersion
    with torch.serialization.safe_globals([TorchVersion]):
        return torch.load(path, map_location="cpu", weights_only=True)


def add_dataclass_args(ap: argparse.ArgumentParser, cls):
    """One --flag per dataclass field (tuples as comma lists, bools as true/false)."""
    for f in dataclasses.fields(cls):
        d = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        flag = "--" + f.name.replace("_", "-")
        if isinstance(d, bool):
            ap.add_argument(flag, type=lambda s: s.lower() in ("1", "true", "yes"), default=d)
        elif isinstance(d, tuple):
            ap.add_argument(flag, type=lambda s: tuple(x for x in s.split(",") if x), default=d)
        else:
            ap.add_argument(flag, type=type(d), default=d)


def dataclass_from_args(cls, ns: argparse.Namespace):
    return cls(**{f.name: getattr(ns, f.name) for f in dataclasses.fields(cls)})
