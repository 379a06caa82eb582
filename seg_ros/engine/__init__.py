"""Pure engine: prompts, backends, streaming session, results. Never imports rclpy or messages."""

from seg_ros.engine.concepts import QueryInfo, QueryOptions
from seg_ros.engine.errors import (
    BackendError,
    ClosedError,
    FrameError,
    ModelLoadError,
    PromptError,
    SegRosError,
    UnknownObjectError,
    UnsupportedPromptError,
)
from seg_ros.engine.prompts import Prompt
from seg_ros.engine.results import Candidate, FrameResult, ObjectMask
from seg_ros.engine.session import (
    PromptResult,
    QueryResult,
    ReferenceResult,
    SegmentationSession,
)

__all__ = [
    "BackendError",
    "Candidate",
    "ClosedError",
    "FrameError",
    "FrameResult",
    "ModelLoadError",
    "ObjectMask",
    "Prompt",
    "PromptError",
    "PromptResult",
    "QueryInfo",
    "QueryOptions",
    "QueryResult",
    "ReferenceResult",
    "SegRosError",
    "SegmentationSession",
    "UnknownObjectError",
    "UnsupportedPromptError",
]
