"""What the launch files share: launch arguments that override a params file only when given, and
a launch that ends when a node it cannot do without exits, with that node's verdict as its exit code.

Imported by ``launch/*.launch.py`` only (it needs ``launch``, which the nodes do not).
"""
from __future__ import annotations

from typing import Callable

from launch.actions import DeclareLaunchArgument, EmitEvent, LogInfo, OpaqueFunction, RegisterEventHandler, TimerAction
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.launch_context import LaunchContext
from launch.substitutions import LaunchConfiguration

NOT_GIVEN = ""          # the default of every overriding launch argument: the params file decides
SIGNAL_GRACE_S = 0.5   # how long a clean exit waits before it is taken for the end of the node's job


def override(name: str, what: str) -> DeclareLaunchArgument:
    """A launch argument that overrides the params file only when given on the command line."""
    return DeclareLaunchArgument(name, default_value=NOT_GIVEN, description=f"{what} (default: the params file's value)")


def _convert(argument: str, text: str, kind: type):
    if kind is bool:
        if text.lower() not in ("true", "false"):
            raise ValueError(f"launch argument {argument}:={text!r} must be true or false")
        return text.lower() == "true"
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"launch argument {argument}:={text!r} is not a valid {kind.__name__}") from None


def given(context: LaunchContext, mapping: dict[str, tuple[tuple[str, ...], type]]) -> dict:
    """The node parameters set by launch arguments that were given a value: ``mapping`` takes an
    argument name to the parameter names it sets and their type.  An argument left at
    :data:`NOT_GIVEN` sets nothing, so the params file's value (or the node's default) holds."""
    out = {}
    for argument, (names, kind) in mapping.items():
        text = LaunchConfiguration(argument).perform(context)
        if text == NOT_GIVEN:
            continue
        value = _convert(argument, text, kind)
        out.update({name: value for name in names})
    return out


class LaunchVerdict(RuntimeError):
    """Raised from an exit handler: ``ros2 launch`` logs it, shuts down and exits 1."""


def end_when_exits(node, what: str, done: str | None = None, success_ends: bool = True) -> RegisterEventHandler:
    """End the launch when ``node`` exits.  Exit 0 with ``done`` set: the node finished its job
    (log ``done``, launch exit 0); with ``success_ends`` False an exit 0 changes nothing (a bag
    player that has played its bags).  Any other exit status: the launch exits 1, naming the node
    and its status.  While the launch is already shutting down (Ctrl-C), an exit is no news:
    nothing is logged and no verdict is claimed."""
    def finished(context: LaunchContext):
        if context.is_shutdown:   # a Ctrl-C reached the node first: the launch is ending for that
            return None
        reason = done or f"{what} ended"
        return [LogInfo(msg=f"{reason}: ending the launch"), EmitEvent(event=Shutdown(reason=reason))]

    def on_exit(event, context: LaunchContext):
        if context.is_shutdown or (event.returncode == 0 and not success_ends):
            return None
        if event.returncode == 0:   # decided a moment later: a terminal's Ctrl-C may be on its way to launch
            return [TimerAction(period=SIGNAL_GRACE_S, actions=[OpaqueFunction(function=finished)])]
        raise LaunchVerdict(f"{what} exited with status {event.returncode}: ending the launch with exit code 1")
    return RegisterEventHandler(OnProcessExit(target_action=node, on_exit=on_exit))


def nodes_from(make: Callable[[LaunchContext], list]) -> OpaqueFunction:
    """The nodes ``make`` builds once the launch arguments are known."""
    return OpaqueFunction(function=lambda context: make(context))
