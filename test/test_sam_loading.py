"""engine/sam/transforms.py's preprocessing is the SAM 2 image processor's, to the bit, without
torchvision."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seg_ros.engine.sam.transforms import preprocess


@pytest.mark.parametrize("shape", [(720, 1280), (480, 640), (256, 320), (96, 80), (256, 256)])
def test_preprocess_equals_the_sam2_image_processor(shape: tuple[int, int]) -> None:
    from transformers import Sam2ImageProcessor

    image = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    processor = Sam2ImageProcessor(size={"height": 256, "width": 256})
    expected = processor(images=image, return_tensors="pt")["pixel_values"]
    ours = preprocess(image, 256, torch.device("cpu"))
    assert ours.shape == expected.shape == (1, 3, 256, 256)
    # Noise is the worst case for resampling. Same resize path (uint8, antialiased), same fused
    # normalisation: bit-exact. A float resize without the uint8 rounding was 0.00875 off here.
    assert torch.equal(ours, expected), float((ours - expected).abs().max())


def test_float_resize_would_differ_from_the_processor() -> None:
    """The measured difference the uint8 path removes (so the test above is not vacuous)."""
    import torch.nn.functional as F
    from transformers import Sam2ImageProcessor

    image = np.random.default_rng(0).integers(0, 256, (256, 320, 3), dtype=np.uint8)
    expected = Sam2ImageProcessor(size={"height": 256, "width": 256})(
        images=image, return_tensors="pt"
    )["pixel_values"]
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    tensor = F.interpolate(tensor, size=(256, 256), mode="bilinear", antialias=True)
    mean = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
    difference = float(((tensor - mean) / std - expected).abs().max())
    assert 0.001 < difference < 0.02
