"""The segmentation node's services: one `_on_<service>` handler each, mixed into each camera.

    ~/add_points  ~/add_box  ~/add_mask   create or refine an object (`_prompt`)
    ~/add_reference  ~/remove_reference   an object shown on another image (a photo, another
                                          camera), searched for and tracked in the stream
    ~/add_text                            objects from a text prompt (sam3; sam2 + text_detector);
                                          with track_new a standing query (live concepts)
    ~/list_queries  ~/remove_query        the standing queries; stop one
    ~/remove_object  ~/reset              forget one object / everything
    ~/segment                             one-shot segmentation, tracking untouched
    ~/segment_everything                  every object on the latest frame (optionally tracked)

Every handler is one `_serve` call: it answers success + message and never raises (rclpy would
re-raise out of spin and kill the node). A refusal (`SegRosError`, `ValueError`: bad request,
unknown id, no frame yet) leaves the session as it was; any other failure is logged with its
traceback and answered as an internal error. Requests register with `RequestsFirst` so the
worker's next frame waits for them; the session's own lock serialises them with frames.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from std_msgs.msg import Header
from std_srvs.srv import Trigger

from seg_ros.conversions import (
    ConversionError,
    Locate3D,
    build_prompt,
    candidate_instances,
    everything_options,
    image_to_rgb,
    instance_to_msg,
    ns_to_stamp,
    numpy_to_image,
    stamp_to_ns,
)
from seg_ros.engine import Prompt, SegmentationSession, SegRosError
from seg_ros.frame_queue import RequestsFirst
from seg_ros.msg import StandingQuery
from seg_ros.node_params import NodeParams
from seg_ros.outputs.registry import ProcessedFrame
from seg_ros.srv import (
    AddBox,
    AddMask,
    AddPoints,
    AddReference,
    AddText,
    ListQueries,
    RemoveObject,
    RemoveQuery,
    RemoveReference,
    SegmentEverything,
    SegmentImage,
)


class ServiceHandlers:
    """A camera's service handlers (a mixin of seg_ros.camera.Camera, which provides the state)."""

    # Provided by seg_ros.camera.Camera (one per camera of the node).
    session: SegmentationSession | None
    params: NodeParams
    load_error: str
    locate: Locate3D | None
    _latest: ProcessedFrame | None
    _requests: RequestsFirst

    if TYPE_CHECKING:  # for the type checker only: at run time these would shadow the node's

        def get_logger(self) -> Any: ...  # rclpy's Node

        def _clear_markers(self) -> None: ...  # Camera: DELETEALL on its ~/markers

    def _service_table(self) -> list[tuple[Any, str, Callable[[Any, Any], Any]]]:
        """(type, name, handler) of every service, for the node's open_io."""
        return [
            (AddPoints, "~/add_points", self._on_add_points),
            (AddBox, "~/add_box", self._on_add_box),
            (AddMask, "~/add_mask", self._on_add_mask),
            (AddText, "~/add_text", self._on_add_text),
            (AddReference, "~/add_reference", self._on_add_reference),
            (RemoveReference, "~/remove_reference", self._on_remove_reference),
            (RemoveObject, "~/remove_object", self._on_remove_object),
            (Trigger, "~/reset", self._on_reset),
            (SegmentImage, "~/segment", self._on_segment),
            (SegmentEverything, "~/segment_everything", self._on_segment_everything),
            (ListQueries, "~/list_queries", self._on_list_queries),
            (RemoveQuery, "~/remove_query", self._on_remove_query),
        ]

    def _locate_at(self, stamp_ns: int) -> Locate3D | None:
        """3D for an answer about the frame with this stamp: the latest frame's depth, if it is."""
        latest = self._latest
        if latest is not None and stamp_to_ns(latest.header.stamp) == stamp_ns:
            return latest.locate
        return self.locate

    def _header_at(self, stamp_ns: int) -> Header:
        """Header of a processed frame named by its stamp (frame_id of the stream)."""
        latest = self._latest
        if latest is not None and stamp_to_ns(latest.header.stamp) == stamp_ns:
            return latest.header
        frame_id = latest.header.frame_id if latest is not None else ""
        return Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id)

    def _serve(self, srv_type: Any, handle: Callable[[SegmentationSession], Any]) -> Any:
        """Run a request; any refusal or failure becomes success=false + the reason."""
        session = self.session
        if session is None:
            return srv_type.Response(success=False, message=self.load_error)
        try:
            with self._requests.request():
                response = handle(session)
            response.success = True
            return response
        except (SegRosError, ValueError) as exc:  # refused: the session changed nothing
            message = str(exc)
        except Exception as exc:  # a bug or a model failure must not kill the node
            self.get_logger().error(f"{srv_type.__name__} failed: {traceback.format_exc()}")
            message = f"internal error: {type(exc).__name__}: {exc}"
        return srv_type.Response(success=False, message=message)

    def _prompt(
        self, srv_type: Any, session: SegmentationSession, req: Any, prompt: Prompt, multimask: bool
    ) -> Any:
        """add_points / add_box / add_mask: create or refine an object on a frame in memory."""
        out = session.add_prompt(
            prompt,
            req.object_id,
            label=req.label,
            stamp_ns=stamp_to_ns(req.stamp),
            multimask=multimask,
        )
        header = self._header_at(out.stamp_ns)
        locate = self._locate_at(out.stamp_ns)
        response = srv_type.Response(
            object_id=out.object_id, instance=instance_to_msg(out.object, header, locate)
        )
        if multimask:
            response.candidates = candidate_instances(out.object, header)
        label = f" '{out.object.label}'" if out.object.label else ""
        hidden = "" if out.object.visible else " (not visible: empty mask or low score)"
        verb = "refined" if req.object_id else "created"
        response.message = f"{verb} object {out.object_id}{label}{hidden}"
        return response

    def _on_add_points(self, req: AddPoints.Request, _: AddPoints.Response) -> Any:
        return self._serve(
            AddPoints,
            lambda s: self._prompt(
                AddPoints,
                s,
                req,
                build_prompt(points=req.points, point_labels=req.point_labels),
                req.multimask,
            ),
        )

    def _on_add_box(self, req: AddBox.Request, _: AddBox.Response) -> Any:
        return self._serve(
            AddBox,
            lambda s: self._prompt(
                AddBox,
                s,
                req,
                build_prompt(points=req.points, point_labels=req.point_labels, box=req.box),
                False,
            ),
        )

    def _on_add_mask(self, req: AddMask.Request, _: AddMask.Response) -> Any:
        return self._serve(
            AddMask,
            lambda s: self._prompt(
                AddMask, s, req, build_prompt(mask=req.mask, scribble=req.scribble), False
            ),
        )

    def _on_add_reference(self, req: AddReference.Request, _: AddReference.Response) -> Any:
        """An object shown on `req.image` (not a frame of the stream) by a mask, a box or
        points on it: a new object (`object_id` empty) or one more reference of an existing
        one. The answer carries the region taken from the image (mono8, its size)."""

        def run(session: SegmentationSession) -> AddReference.Response:
            if req.image.height == 0 or req.image.width == 0:
                raise ConversionError("a reference needs an image (the one the object is on)")
            rgb = image_to_rgb(req.image)
            prompt = build_prompt(
                points=req.points,
                point_labels=req.point_labels,
                box=req.box if req.box.width and req.box.height else None,
                mask=req.mask if req.mask.height or req.mask.width else None,
            )
            out = session.add_reference(rgb, prompt, req.object_id, label=req.label)
            label = f" '{out.label}'" if out.label else ""
            if req.object_id:
                what = f"added reference {out.reference} to object {out.object_id}{label}"
            else:
                what = (
                    f"created object {out.object_id}{label} from reference {out.reference}; "
                    "listed not visible until it is found in the stream"
                )
            mask = numpy_to_image(out.mask.astype(np.uint8) * 255, "mono8", req.image.header)
            return AddReference.Response(
                message=f"{what} (score {out.score:.2f})",
                object_id=out.object_id,
                reference_id=out.reference,
                score=out.score,
                reference_mask=mask,
            )

        return self._serve(AddReference, run)

    def _on_remove_reference(
        self, req: RemoveReference.Request, _: RemoveReference.Response
    ) -> Any:
        def run(session: SegmentationSession) -> RemoveReference.Response:
            removed = session.remove_reference(req.object_id, req.reference_id)
            left = session.references(req.object_id)
            names = ", ".join(str(r) for r in removed)
            kept = ", ".join(str(r) for r in left) or "none"
            return RemoveReference.Response(
                message=f"object {req.object_id}: removed reference(s) {names}; "
                f"references left: {kept}"
            )

        return self._serve(RemoveReference, run)

    def _on_add_text(self, req: AddText.Request, _: AddText.Response) -> Any:
        def run(session: SegmentationSession) -> AddText.Response:
            query_id = ""
            if req.track_new:
                options = self.params.query_options(
                    req.every_n, float(req.new_instance_threshold), req.max_objects
                )
                added = session.add_query(
                    req.text, options, score_threshold=float(req.score_threshold)
                )
                objects, query_id = added.objects, added.query_id
            else:
                objects = session.add_text(
                    req.text,
                    score_threshold=float(req.score_threshold),
                    max_objects=req.max_objects,
                )
            latest = session.latest
            stamp_ns = latest.stamp_ns if latest is not None else 0
            header, locate = self._header_at(stamp_ns), self._locate_at(stamp_ns)
            standing = f"; standing query {query_id} keeps looking" if query_id else ""
            return AddText.Response(
                message=f"{len(objects)} object(s) found for '{req.text.strip()}'{standing}",
                object_ids=[o.object_id for o in objects],
                instances=[instance_to_msg(o, header, locate) for o in objects],
                query_id=query_id,
            )

        return self._serve(AddText, run)

    def _on_list_queries(self, _req: ListQueries.Request, _: ListQueries.Response) -> Any:
        def run(session: SegmentationSession) -> ListQueries.Response:
            queries = [
                StandingQuery(
                    id=q.query_id,
                    phrases=list(q.phrases),
                    label=q.label,
                    every_n=q.options.every_n,
                    new_instance_threshold=q.options.new_instance_threshold,
                    object_ids=list(q.object_ids),
                    lost_ids=list(q.lost_ids),
                    added=q.stats.added,
                    refound=q.stats.refound,
                    dropped=q.stats.dropped,
                    detections_run=q.stats.detections_run,
                    errors=q.stats.errors,
                    last_error=q.stats.last_error,
                )
                for q in session.queries
            ]
            return ListQueries.Response(message=f"{len(queries)} query(ies)", queries=queries)

        return self._serve(ListQueries, run)

    def _on_remove_query(self, req: RemoveQuery.Request, _: RemoveQuery.Response) -> Any:
        def run(session: SegmentationSession) -> RemoveQuery.Response:
            ids = session.remove_query(req.query_id, keep_objects=req.keep_objects)
            fate = "kept" if req.keep_objects else "removed"
            return RemoveQuery.Response(
                message=f"removed query {req.query_id}; its {len(ids)} object(s) {fate}",
                object_ids=ids,
            )

        return self._serve(RemoveQuery, run)

    def _on_remove_object(self, req: RemoveObject.Request, _: RemoveObject.Response) -> Any:
        def run(session: SegmentationSession) -> RemoveObject.Response:
            session.remove_object(req.object_id)
            return RemoveObject.Response(message=f"removed object {req.object_id}")

        return self._serve(RemoveObject, run)

    def _on_reset(self, _req: Trigger.Request, _: Trigger.Response) -> Any:
        def run(session: SegmentationSession) -> Trigger.Response:
            session.reset()
            self._latest = None
            self._clear_markers()
            return Trigger.Response(message="forgot every object and frame")

        return self._serve(Trigger, run)

    def _on_segment(self, req: SegmentImage.Request, _: SegmentImage.Response) -> Any:
        """One-shot: every prompt kind given makes one Prompt; tracking is untouched.

        Without an image the session segments its latest frame. With `multimask`, each object's
        alternatives follow the objects in `instances`.
        """

        def run(session: SegmentationSession) -> SegmentImage.Response:
            given = req.image.height != 0 and req.image.width != 0
            rgb = image_to_rgb(req.image) if given else None  # None: the latest frame
            prompt = build_prompt(
                points=req.points,
                point_labels=req.point_labels,
                box=req.box if req.box.width and req.box.height else None,
                mask=req.mask if req.mask.height else None,
                text=req.text,
            )
            objects = session.segment(
                prompt, rgb, multimask=req.multimask, score_threshold=float(req.score_threshold)
            )
            # The session's latest frame is the one segmented: this request holds the worker's
            # next frame back (RequestsFirst, up to its max_wait_s).
            latest = session.latest
            if given or latest is None:
                header = req.image.header
            else:
                header = self._header_at(latest.stamp_ns)
            instances = [instance_to_msg(o, header) for o in objects]
            if req.multimask:
                for obj in objects:
                    instances += candidate_instances(obj, header)
            return SegmentImage.Response(
                message=f"{len(objects)} object(s)", header=header, instances=instances
            )

        return self._serve(SegmentImage, run)

    def _on_segment_everything(
        self, req: SegmentEverything.Request, _: SegmentEverything.Response
    ) -> Any:
        """Every object on the latest frame; with `track`, each becomes a tracked object.

        Fields left at their defaults mean the generator's (`everything_options`).
        """

        def run(session: SegmentationSession) -> SegmentEverything.Response:
            options = everything_options(req)
            objects = session.segment_everything(
                options, track=req.track, label=req.label, vocabulary=list(req.vocabulary)
            )
            latest = session.latest
            stamp_ns = latest.stamp_ns if latest is not None else 0
            header, locate = self._header_at(stamp_ns), self._locate_at(stamp_ns)
            return SegmentEverything.Response(
                message=f"{len(objects)} object(s)"
                + (" now tracked" if req.track and objects else ""),
                instances=[instance_to_msg(o, header, locate) for o in objects],
            )

        return self._serve(SegmentEverything, run)
