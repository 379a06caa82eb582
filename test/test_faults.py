"""Faults: broken weights, a failing model step, a broken output, a camera that stops and restarts.

Weights: a tiny random-weight SAM 2.1 checkpoint is saved once (safetensors, as seg-ros-download
leaves it), copied and corrupted in every way a disk, a download or a user can corrupt it, and
loaded through the sam2 backend's real loader: each gives ModelLoadError naming the folder and the
problem. A node started on such a folder stays up, answers every service with success=false and
the reason, and drops (and counts) frames. A pickle planted beside the weights is never unpickled.

Model steps: `FaultyBackend` (seg_ros/testing/faults.py) makes chosen calls raise what a
real model raises (BackendError, torch.cuda.OutOfMemoryError, a plain bug): the frame is dropped
and counted, the request answered success=false, and tracking resumes on the next frame with the
same objects.
"""

from __future__ import annotations

import json
import pathlib
import pickle
import shutil
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from geometry_msgs.msg import Point

from seg_ros.engine import Prompt, SegmentationSession
from seg_ros.engine.backends.classic import ClassicBackend
from seg_ros.engine.backends.fake import FakeBackend
from seg_ros.engine.config import BackendConfig
from seg_ros.engine.errors import ModelLoadError
from seg_ros.engine.registry import build_backend
from seg_ros.testing.faults import (
    METHODS,
    FaultyBackend,
    backend_error,
    cuda_oom,
    value_error,
)
from seg_ros.testing.graph import (
    NodeUnderTest,
    RosGraph,
    good_frame,
    start_node_under_test,
    stays,
    wait_for,
)
from seg_ros.testing.tiny_models import save_tiny, tiny_edgetam_config

W, H = 64, 48
ERRORS: dict[str, tuple[Callable[[str, int], Exception], str]] = {
    "BackendError": (backend_error, "injected failure"),
    "CUDA OOM": (cuda_oom, "CUDA out of memory"),
    "plain bug": (value_error, "injected bug"),
}


# ===================================================================================== weights
@pytest.fixture(scope="module")
def tiny_sam2(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: threads cost more than the maths on a busy CPU
    try:
        return save_tiny("sam2", tmp_path_factory.mktemp("weights") / "sam2")
    finally:
        torch.set_num_threads(threads)


def _copy(source: pathlib.Path, target: pathlib.Path) -> pathlib.Path:
    shutil.copytree(source, target)
    return target


def _cut(folder: pathlib.Path, keep: Callable[[bytes], bytes]) -> None:
    weights = folder / "model.safetensors"
    weights.write_bytes(keep(weights.read_bytes()))


def _edit_config(folder: pathlib.Path, **changes: Any) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


class _Planted:
    """Unpickling this creates the file `path`: proof that a pickle was loaded."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


def plant_pickle(folder: pathlib.Path, marker: pathlib.Path) -> None:
    """pytorch_model.bin / model.bin / model.pt files that would create `marker` if unpickled."""
    payload = pickle.dumps({"weight": _Planted(marker)})
    for name in ("pytorch_model.bin", "model.bin", "model.pt", "model.ckpt"):
        (folder / name).write_bytes(payload)


def _missing(folder: pathlib.Path) -> pathlib.Path:
    return folder / "not_here"


def _a_file(folder: pathlib.Path) -> pathlib.Path:
    folder.mkdir()
    (folder / "weights.safetensors").write_bytes(b"\0" * 16)
    return folder / "weights.safetensors"


# name -> (make a broken checkpoint from the good one into `target`, expected text)
Corruptor = Callable[[pathlib.Path, pathlib.Path], pathlib.Path]
CORRUPTIONS: dict[str, tuple[Corruptor, str]] = {
    "missing folder": (lambda good, t: _missing(t), "does not exist"),
    "a file, not a folder": (lambda good, t: _a_file(t), "is a file"),
    "empty folder": (lambda good, t: (t.mkdir(), t)[1], "config.json"),
    "no config.json": (
        lambda good, t: ((_copy(good, t) / "config.json").unlink(), t)[1],
        "config.json",
    ),
    "config.json not JSON": (
        lambda good, t: ((_copy(good, t) / "config.json").write_text("{model_type: sam"), t)[1],
        "not valid JSON",
    ),
    "config.json a list": (
        lambda good, t: ((_copy(good, t) / "config.json").write_text("[1, 2]"), t)[1],
        "names no model_type",
    ),
    "model_type bert": (
        lambda good, t: (_edit_config(_copy(good, t), model_type="bert"), t)[1],
        "holds a 'bert' model",
    ),
    "model_type sam3_video": (
        lambda good, t: (_edit_config(_copy(good, t), model_type="sam3_video"), t)[1],
        "holds a 'sam3_video' model",
    ),
    "only pickled weights": (
        lambda good, t: ((_copy(good, t) / "model.safetensors").unlink(), t)[1],
        "no *.safetensors",
    ),
    "weights cut in half": (
        lambda good, t: (_cut(_copy(good, t), lambda b: b[: len(b) // 2]), t)[1],
        "could not load",
    ),
    "weights cut to 8 bytes": (
        lambda good, t: (_cut(_copy(good, t), lambda b: b[:8]), t)[1],
        "could not load",
    ),
    "weights empty": (
        lambda good, t: (_cut(_copy(good, t), lambda b: b""), t)[1],
        "could not load",
    ),
    "weights random bytes": (
        lambda good, t: (_cut(_copy(good, t), lambda b: np.random.default_rng(0).bytes(4096)), t)[
            1
        ],
        "could not load",
    ),
    "weights bit-flipped header": (
        lambda good, t: (_cut(_copy(good, t), lambda b: b[:8] + b"\xff" * 32 + b[40:]), t)[1],
        "could not load",
    ),
    "wider config than the weights": (
        lambda good, t: (_edit_config(_copy(good, t), memory_attention_hidden_size=64), t)[1],
        "tensor shapes do not fit config.json",
    ),
    "EdgeTAM config on SAM 2.1 weights": (
        lambda good, t: (
            (_copy(good, t) / "config.json").write_text(tiny_edgetam_config().to_json_string()),
            t,
        )[1],
        "tensor shapes do not fit config.json",
    ),
}


def load_sam2(folder: pathlib.Path) -> Any:
    return build_backend(BackendConfig(backend="sam2", model=str(folder), device="cpu"))


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_broken_checkpoint_gives_a_clear_model_load_error(
    tiny_sam2: pathlib.Path, tmp_path: pathlib.Path, name: str
) -> None:
    corrupt, expected = CORRUPTIONS[name]
    folder = corrupt(tiny_sam2, tmp_path / "model")
    with pytest.raises(ModelLoadError) as info:
        load_sam2(folder)
    message = str(info.value)
    assert expected in message, message
    assert str(folder.name) in message or "config.json" in message, message  # says which


def test_the_good_checkpoint_loads(tiny_sam2: pathlib.Path) -> None:
    """The control: the uncorrupted folder loads and tracks (so the refusals above are real)."""
    backend = load_sam2(tiny_sam2)
    session = SegmentationSession(backend)
    session.step(np.zeros((H, W, 3), np.uint8))
    assert session.add_prompt(Prompt(points=[[20, 20]])).object_id == "1"
    session.close()


def test_checkpoint_missing_half_its_tensors_is_refused(
    tiny_sam2: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    from safetensors.torch import load_file, save_file

    folder = _copy(tiny_sam2, tmp_path / "half")
    tensors = load_file(folder / "model.safetensors")
    kept = dict(sorted(tensors.items())[: len(tensors) // 2])
    save_file(kept, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError):
        load_sam2(folder)


def test_a_planted_pickle_is_never_unpickled(
    tiny_sam2: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    marker = tmp_path / "UNPICKLED"
    # 1. Pickles only: refused before anything is read.
    only = _copy(tiny_sam2, tmp_path / "only_pickle")
    (only / "model.safetensors").unlink()
    plant_pickle(only, marker)
    with pytest.raises(ModelLoadError, match="pickled weights are refused"):
        load_sam2(only)
    for backend in ("sam3",):  # the other weight loader refuses the same folder
        _edit_config(only, model_type="sam3_video")
        with pytest.raises(ModelLoadError):
            build_backend(BackendConfig(backend=backend, model=str(only), device="cpu"))
    # 2. Pickles beside good safetensors: the safetensors load, the pickles stay unread.
    both = _copy(tiny_sam2, tmp_path / "both")
    plant_pickle(both, marker)
    load_sam2(both).close()
    # The control: the payload does create the marker when unpickled.
    assert not marker.exists()
    pickle.loads((both / "model.bin").read_bytes())
    assert marker.exists()


# ----------------------------------------------------------------------- ... through the node
NODE_CASES = [
    "missing folder",
    "a file, not a folder",
    "only pickled weights",
    "weights cut in half",
]


@pytest.mark.graph
@pytest.mark.parametrize("name", NODE_CASES)
def test_node_on_a_broken_checkpoint_stays_up_and_says_why(
    ros_graph: RosGraph, tiny_sam2: pathlib.Path, tmp_path: pathlib.Path, name: str
) -> None:
    corrupt, expected = CORRUPTIONS[name]
    folder = corrupt(tiny_sam2, tmp_path / "model")
    nut = start_node_under_test(ros_graph, backend="sam2", model=str(folder), device="cpu")
    assert nut.node.session is None
    reason = nut.node.load_error
    assert "backend 'sam2' failed to load: ModelLoadError" in reason and expected in reason
    answers = [
        nut.call("add_points", points=[Point(x=5.0, y=5.0)]),
        nut.call("add_box"),
        nut.call("add_mask"),
        nut.call("add_text", text="mug"),
        nut.call("remove_object", object_id="1"),
        nut.call("reset"),
        nut.call("segment", points=[Point(x=5.0, y=5.0)]),
    ]
    for res in answers:
        assert not res.success and res.message == reason, res.message
    for sec in (1, 2):
        nut.image.publish(good_frame(sec))
        assert wait_for(lambda s=sec: nut.node.stats.failed == s)  # type: ignore[misc]
    assert nut.node.stats.processed == 0
    assert all(reason in text for text in nut.warnings)


# ================================================================================ model steps
def session_with_faults(error: Callable[[str, int], Exception]) -> SegmentationSession:
    session = SegmentationSession(FaultyBackend(FakeBackend(), error), max_objects=4)
    session.step(np.zeros((H, W, 3), np.uint8), stamp_ns=1)
    session.add_prompt(Prompt(points=[[10, 10]]), label="a")
    session.add_prompt(Prompt(box=[30, 20, 50, 40]), label="b")
    return session


def state(session: SegmentationSession) -> list[tuple[str, str, int]]:
    latest = session.latest
    assert latest is not None
    return [(o.object_id, o.label, o.area) for o in latest.objects]


CALLS: dict[str, Callable[[SegmentationSession], Any]] = {
    "step": lambda s: s.step(np.zeros((H, W, 3), np.uint8), stamp_ns=2),
    "add_prompt": lambda s: s.add_prompt(Prompt(points=[[40, 5]]), label="c"),
    "add_prompt refine": lambda s: s.add_prompt(Prompt(points=[[5, 40]]), object_id="1"),
    "remove_object": lambda s: s.remove_object("2"),
    "reset": lambda s: s.reset(),
    "segment": lambda s: s.segment(Prompt(points=[[5, 5]])),
}


@pytest.mark.parametrize("error", list(ERRORS))
@pytest.mark.parametrize("call", list(CALLS))
def test_a_failing_model_call_changes_nothing_and_the_next_one_works(call: str, error: str) -> None:
    factory, text = ERRORS[error]
    session = session_with_faults(factory)
    backend = session.backend
    assert isinstance(backend, FaultyBackend)
    before, index = state(session), session.frame_index
    backend.fail_next(call.split()[0])
    with pytest.raises(Exception, match=text):
        CALLS[call](session)
    assert state(session) == before and session.frame_index == index
    assert backend.raised[call.split()[0]] == 1
    CALLS[call](session)  # the same call, now working
    if call != "reset":
        result = session.step(np.zeros((H, W, 3), np.uint8), stamp_ns=3)
        ids = {o.object_id for o in result.objects}
        assert {"1"} <= ids and all(o.label for o in result.objects if o.object_id in ("1", "2"))


def test_fault_injection_arming() -> None:
    backend = FaultyBackend(FakeBackend())
    backend.fail_on("step", {2, 4})
    backend.fail_every("segment", 3)
    with pytest.raises(ValueError, match="unknown method"):
        backend.fail_next("forward")
    outcomes = []
    for i in range(6):
        try:
            backend.step(i, np.zeros((4, 4, 3), np.uint8))
            outcomes.append(True)
        except Exception:
            outcomes.append(False)
    assert outcomes == [True, False, True, False, True, True]
    assert backend.calls["step"] == 6 and backend.raised["step"] == 2
    assert backend.stats()["injected_faults"] == 2.0
    assert set(METHODS) >= {"step", "add_prompt", "remove_object", "reset", "detect", "segment"}


@pytest.fixture
def tracked_node(ros_graph: RosGraph) -> Iterator[NodeUnderTest]:
    """A fake-backend node tracking 'a' (id 1) and 'b' (id 2)."""
    nut = start_node_under_test(ros_graph, max_objects=4)
    nut.send_until_output(1)
    assert nut.call("add_points", points=[Point(x=10.0, y=10.0)], label="a").success
    assert nut.call("add_points", points=[Point(x=40.0, y=30.0)], label="b").success
    yield nut


def publish_and_wait(nut: NodeUnderTest, sec: int, **kw: Any) -> None:
    """Publish one frame and wait until the node is done with it (processed or failed)."""
    stats = nut.node.stats
    done = stats.processed + stats.failed
    nut.image.publish(good_frame(sec, **kw))
    assert wait_for(lambda: stats.processed + stats.failed == done + 1), stats


def output_of(nut: NodeUnderTest, sec: int) -> Any:
    """The ~/instances message of frame `sec`, waiting for it to arrive."""
    assert wait_for(lambda: any(m.header.stamp.sec == sec for m in nut.received))
    return next(m for m in nut.received if m.header.stamp.sec == sec)


def instances_of(nut: NodeUnderTest, sec: int) -> list[tuple[str, str, bool]]:
    return [(i.id, i.label, i.visible) for i in output_of(nut, sec).instances]


KEPT = [("1", "a", True), ("2", "b", True)]


@pytest.mark.graph
@pytest.mark.parametrize("error", list(ERRORS))
def test_node_drops_frames_the_model_fails_on_and_tracking_resumes(
    tracked_node: NodeUnderTest, error: str
) -> None:
    nut = tracked_node
    factory, text = ERRORS[error]
    session = nut.node.session
    assert session is not None
    faulty = FaultyBackend(session.backend, factory)
    session.backend = faulty
    stats = nut.node.stats
    failed, processed = stats.failed, stats.processed
    faulty.fail_next("step", 2)
    publish_and_wait(nut, 2)
    publish_and_wait(nut, 3)
    assert (stats.failed, stats.processed) == (failed + 2, processed), stats
    assert all(text in w and "frame dropped" in w for w in nut.warnings[-2:]), nut.warnings
    publish_and_wait(nut, 4)
    assert stats.processed == processed + 1
    assert instances_of(nut, 4) == KEPT
    assert not any(m.header.stamp.sec in (2, 3) for m in nut.received)  # nothing for lost frames
    # Requests the model fails on: success=false with the model's words; nothing changes.
    faulty.fail_next("add_prompt")
    res = nut.call("add_points", points=[Point(x=50.0, y=5.0)], label="c")
    assert not res.success and text in res.message, res.message
    faulty.fail_next("add_prompt")
    res = nut.call("add_points", object_id="1", points=[Point(x=5.0, y=40.0)])
    assert not res.success and text in res.message, res.message
    faulty.fail_next("remove_object")
    res = nut.call("remove_object", object_id="2")
    assert not res.success and text in res.message, res.message
    faulty.fail_next("segment")
    res = nut.call("segment", points=[Point(x=5.0, y=5.0)])
    assert not res.success and text in res.message, res.message
    publish_and_wait(nut, 5)
    assert instances_of(nut, 5) == KEPT
    out = output_of(nut, 5)
    # Object 1 is still the disc r=12 at (10, 10) it was made with (x 0..22), not refined.
    assert (out.instances[0].bbox.width, out.instances[0].bbox.height) == (23, 23)
    # ... and the same requests work once the model does.
    new = nut.call("add_points", points=[Point(x=50.0, y=5.0)], label="c")
    # A fresh id (the failed creation may have used up "3": ids are never reused soon anyway).
    assert new.success and new.object_id not in ("1", "2"), new.message
    assert nut.call("remove_object", object_id=new.object_id).success
    assert stats.received == stats.processed + stats.dropped + stats.failed


@pytest.mark.graph
def test_node_with_the_fake_fail_every_option(ros_graph: RosGraph) -> None:
    """The documented way to inject faults into a running node: backend_options fail_every."""
    nut = start_node_under_test(ros_graph, backend_options='{"fail_every": 3}')
    stats = nut.node.stats
    publish_and_wait(nut, 1)
    publish_and_wait(nut, 2)
    assert nut.call("add_points", points=[Point(x=10.0, y=10.0)], label="a").success
    for sec in range(3, 12):
        publish_and_wait(nut, sec)
    assert (stats.processed, stats.failed) == (8, 3), stats  # steps 3, 6, 9 failed
    assert wait_for(lambda: len([m for m in nut.received if m.header.stamp.sec >= 3]) >= 6)
    # Nothing more may come in the next 0.1 s (the claim): the failed frames have no output.
    assert stays(lambda: len([m for m in nut.received if m.header.stamp.sec >= 3]) == 6, 0.1)
    outputs = [m for m in nut.received if m.header.stamp.sec >= 3]
    assert sorted(m.header.stamp.sec for m in outputs) == [4, 5, 7, 8, 10, 11]
    assert all([(i.id, i.label) for i in m.instances] == [("1", "a")] for m in outputs)


@pytest.mark.graph
def test_a_broken_output_does_not_silence_the_others(tracked_node: NodeUnderTest) -> None:
    nut = tracked_node

    def broken_output(_frame: Any) -> None:
        raise RuntimeError("output exploded")

    nut.node.outputs.insert(0, broken_output)
    publish_and_wait(nut, 7)
    assert instances_of(nut, 7) == KEPT  # published after the broken one
    assert any("broken_output" in w and "output exploded" in w for w in nut.warnings)
    nut.node.outputs.remove(broken_output)


# ===================================================================== camera stops / restarts
@pytest.mark.graph
def test_camera_pause_then_restart_with_a_new_resolution(tracked_node: NodeUnderTest) -> None:
    nut = tracked_node
    stats = nut.node.stats
    publish_and_wait(nut, 2)
    # The camera stops for 1.5 s (the claim): no frames, nothing happens, nothing is lost.
    counts = (stats.received, stats.processed, stats.dropped, stats.failed)
    assert stays(
        lambda: (stats.received, stats.processed, stats.dropped, stats.failed) == counts, 1.5
    )
    assert nut.call("segment", points=[Point(x=5.0, y=5.0)]).success  # on the last frame
    publish_and_wait(nut, 10)
    assert instances_of(nut, 10) == KEPT and stats.failed == 0
    # The camera comes back at another resolution: the old objects live on the old geometry.
    publish_and_wait(nut, 11, width=2 * W, height=2 * H)
    assert stats.failed == 1 and "reset to change resolution" in nut.warnings[-1]
    assert nut.call("reset").success
    publish_and_wait(nut, 12, width=2 * W, height=2 * H)
    res = nut.call("add_points", points=[Point(x=2.0 * W - 5, y=2.0 * H - 5)], label="new")
    # A new stream, but ids are never reused: the objects from before the reset had 1 and 2.
    assert res.success and res.object_id == "3", res.message
    publish_and_wait(nut, 13, width=2 * W, height=2 * H)
    out = output_of(nut, 13)
    assert (out.width, out.height) == (2 * W, 2 * H)
    assert [(i.id, i.label, i.visible) for i in out.instances] == [("3", "new", True)]
    # ... and back to the old resolution the same way.
    assert nut.call("reset").success
    publish_and_wait(nut, 14)
    out = output_of(nut, 14)
    assert (out.width, out.height, out.instances) == (W, H, [])
    assert stats.failed == 1


def test_classic_backend_restarts_with_a_new_resolution_after_reset() -> None:
    """The default backend (optical flow between frames) through a stop and a size change."""
    rng = np.random.default_rng(0)

    def scene(height: int, width: int, x: int) -> np.ndarray:
        img = rng.integers(0, 40, (height, width, 3), dtype=np.uint8)
        img[height // 3 : height // 3 + 20, x : x + 20] = (220, 40, 40)
        return img

    session = SegmentationSession(ClassicBackend(), max_objects=4)
    session.step(scene(96, 128, 30))
    session.add_prompt(Prompt(box=[28, 30, 52, 54]), label="red")
    for t in range(3):
        assert session.step(scene(96, 128, 31 + t)).objects[0].label == "red"
    with pytest.raises(Exception, match="reset to change resolution"):
        session.step(scene(192, 256, 60))
    session.reset()
    result = session.step(scene(192, 256, 60))
    assert (result.height, result.width, result.objects) == (192, 256, ())
    out = session.add_prompt(Prompt(box=[58, 62, 82, 86]), label="red")
    assert out.object_id == "2" and out.object.visible  # "1" was the object before the reset
    result = session.step(scene(192, 256, 61))
    assert [(o.object_id, o.label) for o in result.objects] == [("2", "red")]
    assert result.objects[0].mask.shape == (192, 256)


# ==================================================================================== security
REPO = pathlib.Path(__file__).resolve().parent.parent
#: Where the shipped code lives (tests may use pickle, e.g. to plant one above).
SHIPPED = ("seg_ros", "scripts", "launch", "tools")
#: from_pretrained receivers that read configs / tokenizers, never weights.
NO_WEIGHTS = ("Config", "config_class", "Tokenizer", "Processor")
UNSAFE_MODULES = {
    "pickle",
    "cPickle",
    "_pickle",
    "dill",
    "cloudpickle",
    "joblib",
    "marshal",
    "shelve",
}


def shipped_python() -> list[pathlib.Path]:
    files = []
    for top in SHIPPED:
        for path in sorted((REPO / top).rglob("*")):
            if "__pycache__" in path.parts or not path.is_file():
                continue
            head = path.read_bytes()[:64]
            if path.suffix == ".py" or (head.startswith(b"#!") and b"python" in head):
                files.append(path)
    return files


def unsafe_calls(path: pathlib.Path, root: pathlib.Path = REPO) -> list[str]:
    """Every place in one file that could unpickle, evaluate or trust remote code."""
    import ast

    tree = ast.parse(path.read_text(), filename=str(path))
    found = []

    def kw(call: ast.Call, name: str) -> Any:
        for keyword in call.keywords:
            if keyword.arg == name and isinstance(keyword.value, ast.Constant):
                return keyword.value.value
        return None

    for node in ast.walk(tree):
        where = f"{path.relative_to(root)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            for name in names:
                if name and name.split(".")[0] in UNSAFE_MODULES:
                    found.append(f"{where} imports {name}")
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        text = ast.unparse(func)
        if isinstance(func, ast.Name) and func.id in ("eval", "exec", "compile", "__import__"):
            found.append(f"{where} calls {func.id}()")
        if text == "torch.load" and kw(node, "weights_only") is not True:
            found.append(f"{where} torch.load without weights_only=True")
        if text.endswith(("np.load", "numpy.load")) and kw(node, "allow_pickle"):
            found.append(f"{where} np.load(allow_pickle=True)")
        if text in ("yaml.load", "yaml.unsafe_load", "yaml.full_load"):
            found.append(f"{where} {text} (use yaml.safe_load)")
        if kw(node, "trust_remote_code"):
            found.append(f"{where} trust_remote_code=True")
        if kw(node, "shell"):
            found.append(f"{where} shell=True")
        if isinstance(func, ast.Attribute) and func.attr == "from_pretrained":
            receiver = ast.unparse(func.value)
            if not any(part in receiver for part in NO_WEIGHTS) and (
                kw(node, "use_safetensors") is not True
            ):
                found.append(f"{where} {receiver}.from_pretrained without use_safetensors=True")
    return found


def test_no_code_path_unpickles_evaluates_or_trusts_remote_code() -> None:
    files = shipped_python()
    assert len(files) > 20 and any(f.as_posix().endswith("engine/sam/loading.py") for f in files)
    problems = [p for f in files for p in unsafe_calls(f)]
    assert not problems, "\n".join(problems)


def test_the_checker_finds_what_it_looks_for(tmp_path: pathlib.Path) -> None:
    """The control: each unsafe pattern in a file is reported (so a clean tree means clean)."""
    bad = tmp_path / "probe.py"
    bad.write_text(
        "import pickle\nimport torch, yaml, numpy as np\n"
        "torch.load('w.pt')\ntorch.load('w.pt', weights_only=False)\n"
        "np.load('a.npy', allow_pickle=True)\nyaml.load(open('c'))\neval('1')\n"
        "Model.from_pretrained('m')\nAutoModel.from_pretrained('m', trust_remote_code=True)\n"
        "AutoConfig.from_pretrained('m')\ntorch.load('w.pt', weights_only=True)\n"
    )
    problems = unsafe_calls(bad, tmp_path)
    kinds = [p.split(" ", 1)[1] for p in problems]
    assert kinds == [
        "imports pickle",
        "torch.load without weights_only=True",
        "torch.load without weights_only=True",
        "np.load(allow_pickle=True)",
        "yaml.load (use yaml.safe_load)",
        "calls eval()",
        "Model.from_pretrained without use_safetensors=True",
        "trust_remote_code=True",
        "AutoModel.from_pretrained without use_safetensors=True",
    ], kinds


MODEL_PARAM_CASES = {
    "nonexistent folder": (lambda tmp: str(tmp / "nope"), "does not exist"),
    "a file": (lambda tmp: (tmp / "f.json").write_text("{}") and str(tmp / "f.json"), "is a file"),
    "relative escape": (lambda tmp: "../../../../etc", "config.json"),
    "home-relative missing": (lambda tmp: "~/no_such_seg_ros_model", "does not exist"),
}


@pytest.mark.parametrize("backend", ["sam2", "sam3"])
@pytest.mark.parametrize("case", list(MODEL_PARAM_CASES))
def test_model_parameter_is_validated(backend: str, case: str, tmp_path: pathlib.Path) -> None:
    make, expected = MODEL_PARAM_CASES[case]
    with pytest.raises(ModelLoadError) as info:
        build_backend(BackendConfig(backend=backend, model=make(tmp_path), device="cpu"))
    assert expected in str(info.value), str(info.value)


INJECTED = "SEGROS_INJECTED_7f3a"


@pytest.mark.graph
def test_nothing_from_a_message_is_used_as_a_path_or_evaluated(ros_graph: RosGraph) -> None:
    """An audit hook watches every file open, directory listing, compile / exec and process
    start in this process while requests full of path- and code-like strings are served."""
    events: list[tuple[str, str]] = []
    watching = threading.Event()
    watched = (
        "open",
        "os.listdir",
        "os.scandir",
        "exec",
        "compile",
        "subprocess.Popen",
        "os.system",
        "os.exec",
        "os.posix_spawn",
        "shutil.rmtree",
        "os.remove",
    )

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if watching.is_set() and event.startswith(watched):
            text = repr(args)
            if INJECTED in text:
                events.append((event, text[:200]))

    sys.addaudithook(hook)  # cannot be removed; inert once `watching` is cleared
    nut = start_node_under_test(ros_graph)
    nut.send_until_output(1)
    paths = [
        f"/tmp/{INJECTED}",
        f"../../{INJECTED}/etc/passwd",
        f"~/{INJECTED}",
        f"file:///{INJECTED}",
        f"__import__('os').system('touch /tmp/{INJECTED}')",
        f"{{{INJECTED}}}",
        f"$(touch /tmp/{INJECTED})",
    ]
    watching.set()
    try:
        for text in paths:
            point = [Point(x=5.0, y=5.0)]
            for res in (
                nut.call("add_points", points=point, label=text),
                nut.call("add_points", object_id=text, points=point),
                nut.call("add_text", text=text),
                nut.call("remove_object", object_id=text),
                nut.call("segment", points=point, text=text),
            ):
                assert res.message  # answered, whatever the answer
            frame = good_frame(2)
            frame.header.frame_id = text
            frame.encoding = text
            nut.image.publish(frame)
        assert wait_for(lambda: nut.node.stats.failed >= len(paths))
        session = nut.node.session
        assert session is not None  # labels are kept, as plain text
        assert paths[0] in [session.label_of(i) for i in session.object_ids]
    finally:
        watching.clear()
    assert not events, events
    assert not list(pathlib.Path("/tmp").glob(f"{INJECTED}*"))
