"""Pod status as the kubelet reports it, from a snapshot of the containers' states (pure).

The phase follows kubelet's getPhase (pkg/kubelet/kubelet_pods.go, 1.29+ with native sidecars);
conditions follow pkg/kubelet/status/generate.go.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Union

PENDING, RUNNING, SUCCEEDED, FAILED = "Pending", "Running", "Succeeded", "Failed"
TERMINAL_PHASES = (SUCCEEDED, FAILED)

# Conditions this agent owns; others (PodScheduled, DisruptionTarget, ...) are left alone.
OWNED_CONDITIONS = ("PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready")


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(int(ts), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Waiting:
    reason: str
    message: str = ""


@dataclass(frozen=True)
class Running:
    started_at: float


@dataclass(frozen=True)
class Terminated:
    exit_code: int
    reason: str
    started_at: float
    finished_at: float
    message: str = ""
    signal: int | None = None
    container_id: str = ""


ContainerState = Union[Waiting, Running, Terminated]


@dataclass(frozen=True)
class ContainerView:
    name: str
    image: str
    state: ContainerState
    last_state: Terminated | None = None
    restart_count: int = 0
    started: bool = False
    ready: bool = False
    container_id: str = ""


@dataclass(frozen=True)
class PodView:
    sandbox_ready: bool
    host_ip: str
    pod_ip: str | None = None
    start_time: float | None = None
    init_statuses: tuple[ContainerView, ...] = ()
    statuses: tuple[ContainerView, ...] = ()
    terminal: bool = False
    has_initialized: bool = False
    reason: str | None = None
    message: str | None = None
    phase_override: str | None = None  # e.g. Failed for DeadlineExceeded


def is_sidecar(container: Mapping[str, Any]) -> bool:
    return container.get("restartPolicy") == "Always"


def _by_name(views: Sequence[ContainerView]) -> dict[str, ContainerView]:
    return {v.name: v for v in views}


def compute_phase(
    spec: Mapping[str, Any],
    init_statuses: Sequence[ContainerView],
    statuses: Sequence[ContainerView],
    pod_is_terminal: bool,
    pod_has_initialized: bool,
) -> str:
    restart_policy = spec.get("restartPolicy", "Always")
    inits = _by_name(init_statuses)
    regular = _by_name(statuses)
    pending_sidecars = pending_init = failed_init = 0
    for c in spec.get("initContainers") or []:
        if is_sidecar(c):
            continue
        st = inits.get(c["name"])
        if st is None:
            pending_init += 1
        elif isinstance(st.state, Running):
            pending_init += 1
        elif isinstance(st.state, Terminated):
            if st.state.exit_code != 0:
                failed_init += 1
        elif st.last_state is not None:
            if st.last_state.exit_code != 0:
                failed_init += 1
        else:
            pending_init += 1

    unknown = running = waiting = stopped = succeeded = 0
    for c in spec.get("initContainers") or []:
        if not is_sidecar(c):
            continue
        st = inits.get(c["name"])
        if st is None:
            pending_sidecars += 1
            unknown += 1
        elif isinstance(st.state, Running):
            if not st.started:
                pending_sidecars += 1
            running += 1
        elif isinstance(st.state, Waiting) and st.last_state is None:
            pending_sidecars += 1
            waiting += 1
    for c in spec.get("containers") or []:
        st = regular.get(c["name"])
        if st is None:
            unknown += 1
        elif isinstance(st.state, Running):
            running += 1
        elif isinstance(st.state, Terminated):
            stopped += 1
            if st.state.exit_code == 0:
                succeeded += 1
        elif st.last_state is not None:
            stopped += 1
        else:
            waiting += 1

    if failed_init > 0 and restart_policy == "Never":
        return FAILED
    if pending_init > 0 or (pending_sidecars > 0 and not pod_has_initialized):
        return PENDING
    if waiting > 0:
        return PENDING
    if running > 0 and unknown == 0:
        return RUNNING
    if running == 0 and stopped > 0 and unknown == 0:
        if pod_is_terminal:
            return SUCCEEDED if stopped == succeeded else FAILED
        if restart_policy == "Always":
            return RUNNING
        if stopped == succeeded:
            return SUCCEEDED
        if restart_policy == "Never":
            return FAILED
        return RUNNING
    return PENDING


def _names(names: Sequence[str]) -> str:
    return "[" + " ".join(names) + "]"


def _initialized(spec: Mapping[str, Any], view: PodView, phase: str) -> dict[str, Any]:
    inits = _by_name(view.init_statuses)
    unknown: list[str] = []
    incomplete: list[str] = []
    for c in spec.get("initContainers") or []:
        st = inits.get(c["name"])
        if st is None:
            unknown.append(c["name"])
        elif is_sidecar(c):
            if not st.started:
                incomplete.append(c["name"])
        elif not st.ready:
            incomplete.append(c["name"])
    if phase == SUCCEEDED and not unknown:
        return {"type": "Initialized", "status": "True", "reason": "PodCompleted"}
    if any(isinstance(s.state, (Running, Terminated)) for s in view.statuses):
        return {"type": "Initialized", "status": "True"}
    msgs = []
    if unknown:
        msgs.append(f"containers with unknown status: {_names(unknown)}")
    if incomplete:
        msgs.append(f"containers with incomplete status: {_names(incomplete)}")
    if msgs:
        return {"type": "Initialized", "status": "False", "reason": "ContainersNotInitialized", "message": ", ".join(msgs)}
    return {"type": "Initialized", "status": "True"}


def _containers_ready(spec: Mapping[str, Any], view: PodView, phase: str) -> dict[str, Any]:
    inits = _by_name(view.init_statuses)
    regular = _by_name(view.statuses)
    unknown: list[str] = []
    unready: list[str] = []
    for c in spec.get("initContainers") or []:
        if not is_sidecar(c):
            continue
        st = inits.get(c["name"])
        if st is None:
            unknown.append(c["name"])
        elif not st.ready:
            unready.append(c["name"])
    for c in spec.get("containers") or []:
        st = regular.get(c["name"])
        if st is None:
            unknown.append(c["name"])
        elif not st.ready:
            unready.append(c["name"])
    if (phase == SUCCEEDED and not unknown) or phase == FAILED:
        return {
            "type": "ContainersReady",
            "status": "False",
            "reason": "PodCompleted" if phase == SUCCEEDED else "PodFailed",
        }
    msgs = []
    if unknown:
        msgs.append(f"containers with unknown status: {_names(unknown)}")
    if unready:
        msgs.append(f"containers with unready status: {_names(unready)}")
    if msgs:
        return {"type": "ContainersReady", "status": "False", "reason": "ContainersNotReady", "message": ", ".join(msgs)}
    return {"type": "ContainersReady", "status": "True"}


def _ready(pod: Mapping[str, Any], containers_ready: Mapping[str, Any]) -> dict[str, Any]:
    if containers_ready["status"] != "True":
        out = dict(containers_ready)
        out["type"] = "Ready"
        return out
    gates = [g.get("conditionType") for g in pod.get("spec", {}).get("readinessGates") or []]
    have = {c.get("type"): c.get("status") for c in pod.get("status", {}).get("conditions") or []}
    missing = [g for g in gates if have.get(g) != "True"]
    if missing:
        return {
            "type": "Ready",
            "status": "False",
            "reason": "ReadinessGatesNotReady",
            "message": f"corresponding condition of pod readiness gate {' '.join(repr(m) for m in missing)} "
            "does not exist or is not True.",
        }
    return {"type": "Ready", "status": "True"}


def compute_conditions(
    pod: Mapping[str, Any],
    view: PodView,
    phase: str,
    now: float,
    previous_conditions: Sequence[Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Our four conditions; lastTransitionTime kept from previous_conditions (default: the pod's)."""
    spec = pod.get("spec", {})
    if previous_conditions is None:
        previous_conditions = pod.get("status", {}).get("conditions") or []
    previous = {c.get("type"): c for c in previous_conditions}
    cready = _containers_ready(spec, view, phase)
    conds = [
        {"type": "PodReadyToStartContainers", "status": "True" if view.sandbox_ready else "False"},
        _initialized(spec, view, phase),
        _ready(pod, cready),
        cready,
    ]
    out = []
    for c in conds:
        prev = previous.get(c["type"])
        same = prev is not None and prev.get("status") == c["status"] and prev.get("lastTransitionTime")
        c["lastProbeTime"] = None
        c["lastTransitionTime"] = prev["lastTransitionTime"] if same else rfc3339(now)  # type: ignore[index]
        out.append(c)
    return out


def _terminated_dict(t: Terminated) -> dict[str, Any]:
    d: dict[str, Any] = {
        "exitCode": t.exit_code,
        "reason": t.reason,
        "startedAt": rfc3339(t.started_at),
        "finishedAt": rfc3339(t.finished_at),
    }
    if t.message:
        d["message"] = t.message
    if t.signal:
        d["signal"] = t.signal
    if t.container_id:
        d["containerID"] = t.container_id
    return d


def container_status(v: ContainerView) -> dict[str, Any]:
    if isinstance(v.state, Waiting):
        state: dict[str, Any] = {"waiting": {"reason": v.state.reason}}
        if v.state.message:
            state["waiting"]["message"] = v.state.message
    elif isinstance(v.state, Running):
        state = {"running": {"startedAt": rfc3339(v.state.started_at)}}
    else:
        state = {"terminated": _terminated_dict(v.state)}
    d: dict[str, Any] = {
        "name": v.name,
        "image": v.image,
        "imageID": f"ltj-local://{v.image}" if v.image else "",
        "state": state,
        "lastState": {"terminated": _terminated_dict(v.last_state)} if v.last_state else {},
        "ready": v.ready,
        "restartCount": v.restart_count,
        "started": v.started,
    }
    if v.container_id:
        d["containerID"] = v.container_id
    return d


def build_status(
    pod: Mapping[str, Any],
    view: PodView,
    now: float,
    previous_conditions: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The status fields this agent owns, ready for a strategic-merge patch of pods/status."""
    spec = pod.get("spec", {})
    phase = view.phase_override or compute_phase(
        spec, view.init_statuses, view.statuses, view.terminal, view.has_initialized
    )
    old_phase = pod.get("status", {}).get("phase")
    if old_phase in TERMINAL_PHASES:
        phase = old_phase  # a terminal phase never changes (API validation enforces it too)
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": compute_conditions(pod, view, phase, now, previous_conditions),
        "hostIP": view.host_ip,
        "hostIPs": [{"ip": view.host_ip}],
        "containerStatuses": [container_status(v) for v in view.statuses],
    }
    if spec.get("initContainers"):
        status["initContainerStatuses"] = [container_status(v) for v in view.init_statuses]
    if view.pod_ip:
        status["podIP"] = view.pod_ip
        status["podIPs"] = [{"ip": view.pod_ip}]
    if view.start_time is not None:
        status["startTime"] = rfc3339(view.start_time)
    if view.reason:
        status["reason"] = view.reason
    if view.message:
        status["message"] = view.message
    return status
