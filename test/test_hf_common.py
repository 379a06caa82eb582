"""hf_common's preprocessing matches the SAM 2 image processor without needing torchvision."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seg_ros.engine.hf_common import preprocess


@pytest.mark.parametrize("shape", [(720, 1280), (480, 640), (96, 80)])
def test_preprocess_matches_the_sam2_image_processor(shape: tuple[int, int]) -> None:
    from transformers import Sam2ImageProcessor

    image = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    processor = Sam2ImageProcessor(size={"height": 256, "width": 256})
    expected = processor(images=image, return_tensors="pt")["pixel_values"]
    ours = preprocess(image, 256, torch.device("cpu"))
    assert ours.shape == expected.shape == (1, 3, 256, 256)
    # Noise is the worst case for resampling; the processor rounds the resized image to uint8
    # (one grey level is 1/255/0.225 = 0.017 after normalisation). Without antialiasing a
    # shrunk frame differs by up to 0.8 here.
    torch.testing.assert_close(ours, expected, atol=0.03, rtol=0)
