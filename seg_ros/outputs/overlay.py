"""The `~/overlay` picture: coloured masks, contours and "id: label score" on the camera frame.

Colours come from seg_ros.outputs.colors (by mask value), so the overlay matches the RViz markers.
The node renders it only while `~/overlay` has a subscriber.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import cv2
import numpy as np
import numpy.typing as npt

from seg_ros.engine.results import ObjectMask
from seg_ros.outputs.colors import color_bgr

_FONT = cv2.FONT_HERSHEY_SIMPLEX


def caption(obj: ObjectMask) -> str:
    """ "id: label score" (ASCII: OpenCV's fonts have no other glyphs)."""
    name = ": ".join(part for part in (obj.object_id, obj.label.strip()) if part)
    text = f"{name} {obj.score:.2f}" if name else f"{obj.score:.2f}"
    return text.encode("ascii", "replace").decode("ascii")


def render_overlay(
    rgb: npt.NDArray[np.uint8], objects: Iterable[ObjectMask], alpha: float = 0.5
) -> npt.NDArray[np.uint8]:
    """RGB uint8 (H, W, 3) frame + objects -> a new BGR uint8 image for `~/overlay`.

    Visible objects are blended with their colour (`alpha` in [0, 1]) inside their mask, outlined,
    and captioned at their box's top-left corner. Lower scores are painted first, as in the label
    image. Work is confined to each object's box.
    """
    out = cast("npt.NDArray[np.uint8]", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    scale = max(0.4, min(out.shape[:2]) / 900.0)
    thickness = max(1, int(round(scale * 2)))
    for obj in sorted(objects, key=lambda o: o.score):
        box = obj.bbox if obj.visible else None
        if box is None:
            continue
        x0, y0, x1, y1 = box
        color = color_bgr(obj.mask_value)
        roi = out[y0:y1, x0:x1]
        mask8 = np.ascontiguousarray(obj.mask[y0:y1, x0:x1]).view(np.uint8)
        # roi * (1 - alpha) + colour * alpha inside the mask, in OpenCV (numpy's masked
        # assignment is ~15x slower); cv2 writes into a contiguous copy, then back.
        tinted = np.ascontiguousarray(roi)
        offset = (color[0] * alpha, color[1] * alpha, color[2] * alpha, 0.0)
        # A 4-tuple is OpenCV's scalar (added to every pixel); the stubs only know arrays.
        cv2.add(cv2.convertScaleAbs(roi, alpha=1.0 - alpha), offset, dst=tinted, mask=mask8)  # type: ignore[call-overload]
        roi[...] = tinted
        contours, _ = cv2.findContours(
            mask8, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(x0, y0)
        )
        cv2.drawContours(out, contours, -1, color, thickness, cv2.LINE_AA)
        _label(out, caption(obj), (x0, y0), color, scale, thickness)
    return out


def _label(
    img: npt.NDArray[np.uint8],
    text: str,
    corner: tuple[int, int],
    color: tuple[int, int, int],
    scale: float,
    thickness: int,
) -> None:
    """Text on a filled box of the object's colour, above the corner (below it at the top edge)."""
    if not text:
        return
    (tw, th), base = cv2.getTextSize(text, _FONT, scale, thickness)
    x = min(max(0, corner[0]), max(0, img.shape[1] - tw - 4))
    y = corner[1] - 4 if corner[1] - th - base - 4 >= 0 else corner[1] + th + 4
    cv2.rectangle(img, (x, y - th - 4), (x + tw + 4, y + base), color, cv2.FILLED)
    # Dark or light text, whichever reads better on the object's colour.
    ink = (0, 0, 0) if sum(color) > 3 * 140 else (255, 255, 255)
    cv2.putText(img, text, (x + 2, y - 2), _FONT, scale, ink, thickness, cv2.LINE_AA)
