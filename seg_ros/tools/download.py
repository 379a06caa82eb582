"""`seg-ros-download`: fetch a checkpoint once, explicitly, and check that it will load.

    seg-ros-download facebook/sam2.1-hiera-tiny --out ~/models/sam2.1-hiera-tiny
    seg-ros-download yonigozlan/EdgeTAM-hf --out ~/models/edgetam
    seg-ros-download facebook/sam3 --out ~/models/sam3
    seg-ros-download openmmlab-community/mm_grounding_dino_tiny_o365v1_goldg_v3det \
        --out ~/models/mm-grounding-dino-tiny        # text for sam2: the text_detector parameter

Only configuration, tokenizer and safetensors files are fetched: pickled weights (*.bin, *.pt, ...)
are never downloaded, so nothing is ever unpickled. The folder is then verified: a model type one
of our backends loads, complete safetensors files, and (unless --no-load) a real load on the CPU.
The node never downloads; point its `model` parameter (a detector: `text_detector`) at the folder
this tool prints.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import pathlib
import struct
import sys
from collections.abc import Sequence

#: What is fetched: configs, tokenizers, safetensors weights. Nothing else.
ALLOW_PATTERNS = (
    "*.json",
    "*.txt",
    "*.safetensors",
    "tokenizer.model",
    "*.tiktoken",
)
#: Never fetched, even if a pattern above matched (defence in depth).
IGNORE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.pickle", "*.ckpt", "*.h5", "*.msgpack")
#: model_type -> (backend that loads it, transformers class).
SUPPORTED = {
    "sam2_video": ("sam2", "Sam2VideoModel"),
    "edgetam_video": ("sam2", "EdgeTamVideoModel"),
    "sam3_video": ("sam3", "Sam3VideoModel"),
}
#: Open-vocabulary detectors (engine/sam/open_vocab.py FAMILIES): the sam2 backend's
#: `text_detector`, loaded with their processor (tokenizer files) through its loader.
DETECTOR_TYPES = ("grounding-dino", "mm-grounding-dino", "owlv2", "owlvit")


class VerifyError(Exception):
    """The folder would not load; the message says why."""


def is_fetched(name: str) -> bool:
    """Whether a repository file named `name` (path inside the repo) would be downloaded."""
    base = name.rsplit("/", 1)[-1]
    if any(fnmatch.fnmatch(base, pattern) for pattern in IGNORE_PATTERNS):
        return False
    return any(fnmatch.fnmatch(base, pattern) for pattern in ALLOW_PATTERNS)


def check_safetensors(path: pathlib.Path) -> int:
    """Parse a safetensors header and check the file holds every tensor it lists.

    Returns the number of tensors. Raises VerifyError for a truncated or corrupt file.
    """
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise VerifyError(f"{path.name} is truncated (no header)")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > size - 8 or header_len > 100 * 2**20:
            raise VerifyError(f"{path.name} is corrupt or truncated (header of {header_len} bytes)")
        try:
            header = json.loads(handle.read(header_len))
        except ValueError as exc:
            raise VerifyError(f"{path.name} has a corrupt header: {exc}") from exc
    if not isinstance(header, dict):
        raise VerifyError(f"{path.name} has a corrupt header")
    end = 0
    tensors = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            end = max(end, int(info["data_offsets"][1]))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise VerifyError(f"{path.name}: bad entry for tensor '{name}'") from exc
        tensors += 1
    if 8 + header_len + end != size:
        raise VerifyError(
            f"{path.name} is truncated or padded: {size} bytes, the header needs "
            f"{8 + header_len + end}"
        )
    return tensors


def verify(folder: pathlib.Path, load: bool = True) -> str:
    """Check that `folder` holds a checkpoint a backend loads; return its model_type."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise VerifyError(f"{folder} has no config.json")
    try:
        config = json.loads(config_path.read_text())
    except ValueError as exc:
        raise VerifyError(f"{config_path} is not valid JSON: {exc}") from exc
    model_type = str(config.get("model_type", "")) if isinstance(config, dict) else ""
    if model_type not in SUPPORTED and model_type not in DETECTOR_TYPES:
        raise VerifyError(
            f"{folder} holds a '{model_type or 'unknown'}' model; supported: "
            f"{', '.join((*SUPPORTED, *DETECTOR_TYPES))}"
        )
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        raise VerifyError(f"{folder} has no *.safetensors weights")
    index_path = folder / "model.safetensors.index.json"
    if index_path.is_file():
        shards = set(json.loads(index_path.read_text()).get("weight_map", {}).values())
        missing = sorted(s for s in shards if not (folder / s).is_file())
        if missing:
            raise VerifyError(f"{folder} lacks shards {', '.join(missing)}")
    for path in weights:
        check_safetensors(path)
    if load:
        _load(folder, model_type)
    return model_type


def _load(folder: pathlib.Path, model_type: str) -> None:
    """A real load on the CPU through the backends' loader (safetensors only)."""
    import torch
    import transformers

    from seg_ros.engine.errors import ModelLoadError
    from seg_ros.engine.sam.loading import load_pretrained
    from seg_ros.engine.sam.open_vocab import load_detector

    if model_type in DETECTOR_TYPES:
        try:
            load_detector(str(folder), device=torch.device("cpu"), dtype=torch.float32).close()
        except ModelLoadError as exc:
            raise VerifyError(str(exc)) from exc
        return
    model_cls = getattr(transformers, SUPPORTED[model_type][1])
    try:
        model = load_pretrained(
            model_cls,
            str(folder),
            model_types=(model_type,),
            device=torch.device("cpu"),
            dtype=torch.float32,
        )
    except ModelLoadError as exc:
        raise VerifyError(str(exc)) from exc
    del model


def fetch(repo_id: str, out: pathlib.Path, revision: str | None = None) -> pathlib.Path:
    """Download the allowed files of `repo_id` into `out` (resumes a partial download)."""
    from huggingface_hub import snapshot_download

    out.mkdir(parents=True, exist_ok=True)
    path = snapshot_download(
        repo_id,
        revision=revision,
        local_dir=str(out),
        allow_patterns=list(ALLOW_PATTERNS),
        ignore_patterns=list(IGNORE_PATTERNS),
    )
    return pathlib.Path(str(path))


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"  # pragma: no cover


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="seg-ros-download",
        description="Fetch a SAM 2.1 / EdgeTAM / SAM 3 checkpoint or an open-vocabulary detector "
        "(safetensors only), verify it.",
    )
    parser.add_argument("repo_id", help="hub id, e.g. facebook/sam2.1-hiera-tiny")
    parser.add_argument("--out", required=True, type=pathlib.Path, help="folder to write into")
    parser.add_argument("--revision", default=None, help="branch, tag or commit (default: main)")
    parser.add_argument(
        "--no-load", action="store_true", help="check files only, skip loading the model"
    )
    parser.add_argument(
        "--verify-only", action="store_true", help="do not download; verify --out as it is"
    )
    args = parser.parse_args(argv)
    if args.repo_id.count("/") != 1 or args.repo_id.startswith(("/", ".", "~")):
        parser.error(f"'{args.repo_id}' is not a hub id of the form 'owner/name'")
    out = args.out.expanduser()
    try:
        if not args.verify_only:
            print(f"fetching {args.repo_id} (config, tokenizer, safetensors) into {out}")
            fetch(args.repo_id, out, args.revision)
        elif not out.is_dir():
            raise VerifyError(f"{out} is not a folder")
        model_type = verify(out, load=not args.no_load)
    except VerifyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # network, authentication, missing repository
        print(
            f"error: could not fetch {args.repo_id}: {type(exc).__name__}: {exc}", file=sys.stderr
        )
        return 1
    total = 0
    for path in sorted(p for p in out.rglob("*") if p.is_file() and ".cache" not in p.parts):
        size = path.stat().st_size
        total += size
        print(f"  {path.relative_to(out)}  {_human(size)}")
    print(f"ok: {model_type} model, {_human(total)} in {out}")
    if model_type in DETECTOR_TYPES:
        print(f"use it with: backend:=sam2 model:=<SAM 2.1 / EdgeTAM folder> text_detector:={out}")
    else:
        print(f"use it with: backend:={SUPPORTED[model_type][0]} model:={out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
