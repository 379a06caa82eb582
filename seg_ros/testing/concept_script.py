"""One scripted scene for standing-query tests (engine and graph): what a robot's camera sees.

The fake backend's `script` option (seg_ros.engine.backends.fake.ScriptedFakeBackend) makes
its detector return these "person" boxes on these frames, on 120 x 160 frames. With a standing
query "person" (every_n 1, timeout 5 frames, new_instance_threshold 0.7) and a user's box
prompt on frame 1, the policy (seg_ros.engine.concepts) must give exactly `EXPECTED`:

    frame 0   A appears                      -> object 1 (person)
    frame 1   the user boxes something else  -> object 2 (label "box", no query)
    frame 3   B walks in                     -> object 3
    frame 6   C walks in                     -> object 4
    frame 9   C leaves                       -> 4 lost
    frame 12  B leaves                       -> 3 lost
    frame 14  C unseen for 6 > 5 frames      -> 4 dropped
    frame 15  B comes back 15 px to the right (IoU 0.33 with its last mask: the tracker does
              not re-find it, the policy does) -> 3 visible again, same id
    frame 18  D walks in overlapping A (IoU 0.15) -> object 5 (not taken for A)
    frame 21  E: a second detection of A (IoU 0.9), two frames -> no new id
    always    a weak "person" (score 0.4 < 0.7) -> never an object
"""

from __future__ import annotations

from typing import Any

HEIGHT, WIDTH = 120, 160
FRAMES = 25
TEXT = "person"
#: The query's timeout: frames (engine tests), or seconds at STAMP_STEP_NS per frame (graph).
TIMEOUT_FRAMES = 5
STAMP_STEP_NS = 100_000_000
TIMEOUT_S = TIMEOUT_FRAMES * STAMP_STEP_NS / 1e9
#: The user's box prompt (XYXY), on frame USER_FRAME: on no scripted instance, so it stays put.
USER_BOX = (130, 90, 155, 115)
USER_FRAME = 1
USER_LABEL = "box"

SCRIPT: list[dict[str, Any]] = [
    {"text": TEXT, "box": [10, 10, 40, 60], "frames": [0, -1], "score": 0.95},  # A
    {"text": TEXT, "box": [60, 10, 90, 60], "frames": [3, 12], "score": 0.9},  # B
    {"text": TEXT, "box": [100, 65, 130, 95], "frames": [6, 9], "score": 0.85},  # C
    {"text": TEXT, "box": [75, 10, 105, 60], "frames": [15, -1], "score": 0.9},  # B returns
    {"text": TEXT, "box": [30, 20, 60, 70], "frames": [18, -1], "score": 0.8},  # D
    {"text": TEXT, "box": [11, 11, 41, 61], "frames": [21, 23], "score": 0.75},  # E = A again
    {"text": TEXT, "box": [120, 10, 150, 40], "frames": [0, -1], "score": 0.4},  # weak
    {"text": "cup", "box": [0, 100, 10, 110], "frames": [0, -1], "score": 0.9},  # other text
]


def expected(frame: int) -> dict[str, tuple[str, bool]]:
    """Tracked objects after `frame`: id -> (label, visible), as the policy must have them."""
    out: dict[str, tuple[str, bool]] = {"1": (TEXT, True)}
    if frame >= USER_FRAME:
        out["2"] = (USER_LABEL, True)
    if frame >= 3:
        out["3"] = (TEXT, not 12 <= frame < 15)
    if 6 <= frame < 14:
        out["4"] = (TEXT, frame < 9)
    if frame >= 18:
        out["5"] = (TEXT, True)
    return out


EXPECTED = [expected(f) for f in range(FRAMES)]
