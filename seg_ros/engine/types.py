"""The array types every layer passes around, defined once."""

import numpy as np
import numpy.typing as npt

#: H x W x 3 RGB image, uint8.
RgbImage = npt.NDArray[np.uint8]
#: H x W boolean mask (or any boolean array).
BoolArray = npt.NDArray[np.bool_]
#: float32 array: coordinates, depth in metres, scores.
FloatArray = npt.NDArray[np.float32]
#: int32 array: colour-histogram bin indices.
BinImage = npt.NDArray[np.int32]
