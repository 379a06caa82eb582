"""The segmentation node as a managed (lifecycle) node: weights and I/O under a manager's control.

    python -m seg_ros.lifecycle_node --ros-args -p backend:=sam2 -p model:=/opt/models/sam2.1
    ros2 run seg_ros segmentation_lifecycle_node ...      # the installed script
    ros2 lifecycle set /segmentation_node configure       # loads the weights
    ros2 lifecycle set /segmentation_node activate        # topics, services, worker

The same class, parameters, topics and services as seg_ros.segmentation_node; each transition
calls one of its steps, so no behaviour is duplicated here:

    configure   load_model      build the backend (weights); on failure the transition returns
                                FAILURE, the error is logged and the node stays unconfigured
    activate    open_io         subscriptions, publishers, services, worker, diagnostics timer
    deactivate  close_io        the worker finishes its frame; every topic and service goes away
    cleanup     release_model   close the session; the backend's close() frees the model (GPU too)
    shutdown    close_io + release_model, from any state
    error       close_io + release_model, back to unconfigured

While inactive the node has no subscription, publisher or service of its own: nothing is
processed or published. Parameters are read once at construction (read-only), so configuring
again uses the same values.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

from rclpy.lifecycle import LifecycleNodeMixin, LifecycleState, TransitionCallbackReturn

from seg_ros.segmentation_node import NODE_NAME, SegmentationNode, run

SUCCESS = TransitionCallbackReturn.SUCCESS
FAILURE = TransitionCallbackReturn.FAILURE
ERROR = TransitionCallbackReturn.ERROR


class SegmentationLifecycleNode(LifecycleNodeMixin, SegmentationNode):
    """SegmentationNode driven by lifecycle transitions (see the module docstring).

    Constructor arguments are SegmentationNode's (context, parameter_overrides, cli_args, ...);
    it starts unconfigured: no model, no I/O.
    """

    LOAD_FAILURE_CONSEQUENCE = (
        "configure fails and the node stays unconfigured (no topics or services until a "
        "configure succeeds)"
    )

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        SegmentationNode.__init__(self, node_name, start=False, **kwargs)
        LifecycleNodeMixin.__init__(self, enable_communication_interface=True)
        # rclpy (ros2/rclpy#1209, fixed upstream by #1319 but not in every Jazzy release) raises
        # out of the change_state service for a transition invalid in the current state (e.g.
        # activate while unconfigured), and the executor re-raises it: the node would die.
        service = self._service_change_state
        service.callback = self._refusing_invalid_transitions(service.callback)

    def _refusing_invalid_transitions(self, handle: Callable[[Any, Any], Any]) -> Any:
        def change_state(request: Any, response: Any) -> Any:
            try:
                return handle(request, response)
            except Exception as exc:  # RCLError: the state machine has no such transition
                t = request.transition
                self.get_logger().warning(
                    f"transition {t.id} '{t.label}' refused in this state: {exc}"
                )
                response.success = False
                return response

        return change_state

    def _transition(self, name: str, step: Callable[[], bool | None]) -> TransitionCallbackReturn:
        """Run one step; rclpy turns an exception into ERROR silently, so log it here."""
        try:
            ok = step()
        except Exception:
            self.get_logger().error(f"{name} failed: {traceback.format_exc()}")
            return ERROR
        if ok is False:
            self.get_logger().error(f"{name} failed: {self.load_error}")
            return FAILURE
        self.get_logger().info(f"{name}: done")
        return SUCCESS

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._transition("configure", self.load_model)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._transition("activate", self.open_io)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._transition("deactivate", self.close_io)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._transition("cleanup", self.release_model)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._transition("shutdown", self._close_all)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._transition("error recovery", self._close_all)

    def _close_all(self) -> None:
        self.close_io()
        self.release_model()


def main(args: list[str] | None = None) -> int:
    """Run the lifecycle node until Ctrl-C (unconfigured until a manager configures it)."""
    return run(SegmentationLifecycleNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
