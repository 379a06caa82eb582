"""Prompt values: validation at construction and against the frame."""

from __future__ import annotations

import numpy as np
import pytest

from seg_ros.engine.errors import PromptError
from seg_ros.engine.prompts import MAX_POINTS, MAX_TEXT_LENGTH, Prompt


def test_points_default_to_foreground_and_are_float32() -> None:
    p = Prompt(points=[[1, 2], [3.5, 4]])
    assert p.points.dtype == np.float32
    assert p.points.shape == (2, 2)
    assert p.point_labels.tolist() == [1, 1]
    assert p.has_geometry and p.has_foreground_point


def test_background_only_points_are_kept() -> None:
    p = Prompt(points=[[5, 5]], point_labels=[0])
    assert p.point_labels.tolist() == [0]
    assert not p.has_foreground_point


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "at least one"),
        ({"points": [[1, 2, 3]]}, "(N, 2)"),
        ({"points": [[np.nan, 2]]}, "finite"),
        ({"points": [[np.inf, 2]]}, "finite"),
        ({"points": [[1, 2]], "point_labels": [1, 0]}, "1 points but 2"),
        ({"points": [[1, 2]], "point_labels": [2]}, "1 (foreground) or 0"),
        ({"points": np.zeros((MAX_POINTS + 1, 2))}, "at most"),
        ({"box": [10, 10, 5, 20]}, "x0 < x1"),
        ({"box": [10, 10, 10, 20]}, "x0 < x1"),
        ({"box": [1, 2, 3]}, "4 numbers"),
        ({"box": [0, 0, np.nan, 5]}, "finite"),
        ({"mask": np.zeros((4, 4), bool)}, "no foreground"),
        ({"mask": np.ones(5, bool)}, "(H, W)"),
        ({"text": "x" * (MAX_TEXT_LENGTH + 1)}, "longer"),
        ({"text": "   "}, "at least one"),
    ],
)
def test_malformed_prompts_are_refused_with_a_reason(kwargs: dict, message: str) -> None:
    with pytest.raises(PromptError, match=None) as info:
        Prompt(**kwargs)
    assert message in str(info.value)


def test_text_is_normalised() -> None:
    assert Prompt(text="  red   mug ").text == "red mug"


@pytest.mark.parametrize(
    "prompt",
    [
        Prompt(points=[[100, 5]]),
        Prompt(points=[[5, 50]]),
        Prompt(points=[[-0.5, 5]]),
        Prompt(box=[0, 0, 101, 10]),
        Prompt(box=[-1, 0, 10, 10]),
        Prompt(mask=np.ones((10, 10), bool)),
    ],
)
def test_prompts_outside_the_frame_are_refused(prompt: Prompt) -> None:
    with pytest.raises(PromptError):
        prompt.check_fits(height=50, width=100)


def test_prompts_on_the_frame_pass() -> None:
    Prompt(points=[[99.9, 49.9], [0, 0]], box=[0, 0, 100, 50]).check_fits(50, 100)
    Prompt(mask=np.ones((50, 100), bool)).check_fits(50, 100)


def test_geometry_only_drops_text() -> None:
    p = Prompt(points=[[1, 1]], text="cup").geometry_only()
    assert p.text == "" and p.points.shape == (1, 2)
