"""Model backends. Optional ones (torch / transformers) are imported lazily by the registry."""

from seg_ros.engine.backends.base import Backend, Capabilities, MaskOutput, ReferenceOutput

__all__ = ["Backend", "Capabilities", "MaskOutput", "ReferenceOutput"]
