"""Tiny random-weight SAM 3 checkpoints for the tests (no hub files, nothing downloaded).

The checkpoint folders have the layout of facebook/sam3: config.json (model_type "sam3_video",
detector_config + tracker_config), model.safetensors, and a CLIP BPE tokenizer (vocab.json +
merges.txt), so they load through the backend's real loading code. The configs and the tokenizer
come from `seg_ros.bench.sam3_bench` (the benchmark builds the same models): a 112-pixel input,
an 8 x 8 patch grid, a 32-wide ViT and text encoder, 8 detector queries, a 3-slot memory.

Random weights are biased so that tests mean something: the presence head says "present", the
scoring head's projections are scaled so query scores spread over (0, 1) and depend on the text,
and the tracker's object-score head says "visible". `absent=True` flips the presence head: no
text ever matches.
"""

from __future__ import annotations

import json
import pathlib

from seg_ros.bench.sam3_bench import TINY, write_random_checkpoint

#: Source frames in the tests are this size (not square, not the model's: resizing is exercised).
HEIGHT, WIDTH = 60, 80


def tiny_sam3(folder: pathlib.Path, *, absent: bool = False, seed: int = 0) -> pathlib.Path:
    """Write a tiny SAM 3 checkpoint into `folder` and return it."""
    return write_random_checkpoint(folder, TINY, seed=seed, presence_bias=-12.0 if absent else 4.0)


def without_tokenizer(source: pathlib.Path, folder: pathlib.Path) -> pathlib.Path:
    """A copy of `source` without its tokenizer files."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_bytes((source / name).read_bytes())
    return folder


def with_model_type(source: pathlib.Path, folder: pathlib.Path, model_type: str) -> pathlib.Path:
    """A copy of `source` whose config.json claims another architecture."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = model_type
    (folder / "config.json").write_text(json.dumps(config))
    return folder
