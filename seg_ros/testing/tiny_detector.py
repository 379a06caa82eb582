"""Random-weight open-vocabulary detectors (Grounding DINO, MM-Grounding-DINO, OWLv2) saved as
seg-ros-download would leave them: config.json, model.safetensors, processor and tokenizer files.

Nothing is downloaded: the tokenizers are built from vocabulary files written here. Grounding
DINO's text attention masks hard-code bert-base-uncased's ids of [CLS] (101), [SEP] (102), '.'
(1012) and '?' (1029), so the tiny BERT vocabulary puts them at those ids. `DETECTOR_CONFIGS`
also names the real architectures (random weights, for timings).
"""

from __future__ import annotations

import pathlib
from typing import Any

from seg_ros.testing.tiny_sam3 import write_tokenizer

#: Words the tiny tokenizers know (anything else is [UNK] / bytes).
WORDS = ("person", "red", "mug", "cup", "cat", "box", "a", "the", "dog")
#: The tiny detectors' image side (shortest edge for Grounding DINO, square for OWLv2).
TINY_DETECTOR_SIZE = 128


def write_bert_vocab(folder: pathlib.Path, words: tuple[str, ...] = WORDS) -> int:
    """A BERT vocab.txt with bert-base-uncased's special-token ids; returns its size."""
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    fill = {1012: ".", 1029: "?"}
    while len(vocab) < 1030:
        vocab.append(fill.get(len(vocab), f"[unused{len(vocab)}]"))
    vocab += list(words)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return len(vocab)


def grounding_config(kind: str, vocab_size: int, size: str = "tiny") -> Any:
    """A (MM-)Grounding DINO config: "tiny" (widths 16-32, 20 queries) or "real" (the
    grounding-dino-tiny architecture: Swin-T, 6+6 layers, 900 queries, BERT-base)."""
    from transformers import GroundingDinoConfig, MMGroundingDinoConfig

    cls = GroundingDinoConfig if kind == "grounding-dino" else MMGroundingDinoConfig
    if size == "real":
        return cls(text_config={"model_type": "bert", "vocab_size": vocab_size})
    return cls(
        backbone_config={
            "model_type": "swin",
            "embed_dim": 16,
            "depths": [1, 1, 1, 1],
            "num_heads": [1, 1, 2, 2],
            "window_size": 4,
            "image_size": TINY_DETECTOR_SIZE,
            "out_indices": [2, 3, 4],
        },
        text_config={
            "model_type": "bert",
            "vocab_size": vocab_size,
            "hidden_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "max_position_embeddings": 64,
        },
        d_model=32,
        encoder_layers=1,
        # Two decoder layers at least: the library ties the per-layer box heads to the first.
        decoder_layers=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        num_queries=20,
        max_text_len=64,
    )


def owlv2_config(vocab_size: int, size: str = "tiny") -> Any:
    """An OWLv2 config: "tiny" (64 px, 16-px patches) or "real" (owlv2-base-patch16: 960 px)."""
    from transformers import Owlv2Config

    text = {
        "vocab_size": vocab_size,
        "bos_token_id": vocab_size - 2,
        "eos_token_id": vocab_size - 1,
        "pad_token_id": vocab_size - 1,
    }
    if size == "real":
        return Owlv2Config(text_config=text, vision_config={"image_size": 960, "patch_size": 16})
    return Owlv2Config(
        text_config={
            **text,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 16,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 64,
            "patch_size": 16,
        },
        projection_dim=32,
    )


def build_detector(
    folder: pathlib.Path, kind: str = "grounding-dino", size: str = "tiny", seed: int = 0
) -> tuple[Any, Any]:
    """A random-weight detector of `kind` ("grounding-dino", "mm-grounding-dino", "owlv2") in
    eval mode and its processor; the tokenizer's vocabulary files are written into `folder`."""
    import torch
    from transformers import (
        BertTokenizer,
        CLIPTokenizer,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        MMGroundingDinoForObjectDetection,
        Owlv2ForObjectDetection,
        Owlv2ImageProcessor,
        Owlv2Processor,
    )

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    processor: Any
    model: Any
    if kind in ("grounding-dino", "mm-grounding-dino"):
        vocab = write_bert_vocab(folder)
        config = grounding_config(kind, vocab, size)
        cls = (
            GroundingDinoForObjectDetection
            if kind == "grounding-dino"
            else (MMGroundingDinoForObjectDetection)
        )
        model = cls(config)
        # The real checkpoints resize to an 800-pixel shortest edge (1333 longest).
        edges = (800, 1333) if size == "real" else (TINY_DETECTOR_SIZE, 2 * TINY_DETECTOR_SIZE)
        processor = GroundingDinoProcessor(
            image_processor=GroundingDinoImageProcessor(
                size={"shortest_edge": edges[0], "longest_edge": edges[1]}
            ),
            tokenizer=BertTokenizer(str(folder / "vocab.txt")),
        )
    elif kind == "owlv2":
        vocab = write_tokenizer(folder, WORDS)
        config = owlv2_config(vocab, size)
        model = Owlv2ForObjectDetection(config)
        side = int(config.vision_config.image_size)
        processor = Owlv2Processor(
            image_processor=Owlv2ImageProcessor(size={"height": side, "width": side}),
            tokenizer=CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt")),
        )
    else:
        raise ValueError(f"unknown detector kind '{kind}'")
    return model.eval(), processor


def save_detector(
    folder: pathlib.Path, kind: str = "grounding-dino", size: str = "tiny", seed: int = 0
) -> pathlib.Path:
    """`build_detector`, saved with its processor into `folder`; returns the folder."""
    model, processor = build_detector(folder, kind, size, seed)
    model.save_pretrained(str(folder), safe_serialization=True)
    processor.save_pretrained(str(folder))
    return folder
