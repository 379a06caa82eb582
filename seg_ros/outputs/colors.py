"""One colour per object, shared by the overlay image and the RViz markers so they match.

Colours are chosen by mask value (the object's stable index), so an object keeps its colour for
its whole life. The palette is well separated for the first dozen objects and cycles after.
"""

from __future__ import annotations

# Tableau-20-like palette, RGB 0..255, ordered so that neighbours differ strongly.
_PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
    (174, 199, 232),
    (255, 187, 120),
    (152, 223, 138),
    (255, 152, 150),
    (197, 176, 213),
    (196, 156, 148),
    (247, 182, 210),
    (199, 199, 199),
    (219, 219, 141),
    (158, 218, 229),
)


def color_rgb(mask_value: int) -> tuple[int, int, int]:
    """RGB 0..255 of the object with this mask value (>= 1)."""
    return _PALETTE[(max(1, int(mask_value)) - 1) % len(_PALETTE)]


def color_bgr(mask_value: int) -> tuple[int, int, int]:
    """The same colour in OpenCV's BGR order."""
    r, g, b = color_rgb(mask_value)
    return b, g, r


def color_rgba_float(mask_value: int, alpha: float = 1.0) -> tuple[float, float, float, float]:
    """The same colour as 0..1 floats (std_msgs/ColorRGBA)."""
    r, g, b = color_rgb(mask_value)
    return r / 255.0, g / 255.0, b / 255.0, float(alpha)
