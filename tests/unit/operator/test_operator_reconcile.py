"""reconcile: one pass against a fake API server (a table), then a few passes in a row: the round trips
a pass makes, its one status write, what it records of refusals, and what it leaves for the next pass."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pytest
import yaml

from ltj_operator import constants as C
from ltj_operator import render
from ltj_operator.config import OperatorConfig
from ltj_operator.expectations import Expectations
from ltj_operator.kube import ApiError, ObjectCache
from ltj_operator.podview import observe_pod
from ltj_operator.reconcile import Outcome, reconcile
from ltj_operator.spec import parse_job
from ltj_operator.status import Observed, Outcomes, decide
from unit.operator.fake_api import FakeApi
from unit.operator.operator_helpers import UID, Clock, at, job_body, pod, running, terminated

pytestmark = pytest.mark.unit
R = C.Reason

CRD = Path(__file__).resolve().parents[3] / "crds" / "ltj.dev_lightningtrainingjobs.yaml"
NS, J = "team-a", "mnist"
CONFIG = OperatorConfig()
WRITE = "PATCH lightningtrainingjobs/status"
PREREQUISITES = ["POST persistentvolumeclaims", "POST roles", "POST serviceaccounts"]
COMPANIONS = ["POST rolebindings", "POST services"]
PODS = ["POST pods", "POST pods"]
REFUSAL = str(ApiError(403, "Forbidden", "pods is forbidden: exceeded quota: q"))


def trip(*requests: str | list[str]) -> list[str]:
    return sorted(r for group in requests for r in ([group] if isinstance(group, str) else group))


def recorded(status: dict[str, Any] | None, pods: list[dict[str, Any]], **outcomes: Any) -> dict[str, Any]:
    """The status a pass at time 0 recorded from these pods."""
    return dict(decide(parse_job(job_body(name=J, nodes=2)), status, Observed(pods=tuple(map(observe_pod, pods))),
                       at(0), outcomes=Outcomes(**outcomes)).status)


RECORDED = recorded(None, [])  # the record of a gang being created (after a refusal, say), not launched yet
LAUNCHED = recorded(None, [pod(J, 0), pod(J, 1)])
RUNNING = recorded(None, [running(J, 0), running(J, 1)])
RESTARTING = recorded(RUNNING, [running(J, 0), terminated(J, 1, exit_code=137, reason="OOMKilled")])
SUCCEEDED = recorded(RUNNING, [terminated(J, 0, exit_code=0), terminated(J, 1, exit_code=0)])
REFUSED = recorded(None, [], refusal=REFUSAL)  # the first record of a gang the API server refused
SERVICE_REFUSED = recorded(None, [pod(J, 0), pod(J, 1)], refusal=REFUSAL)  # of a launched gang
SUSPENDED = dict(decide(parse_job(job_body(name=J, nodes=2, runPolicy={"suspend": True})), RUNNING, Observed(),
                        at(0)).status)
# What the API server shows of a job before its first status write.
CRD_DEFAULT_STATUS = yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"][
    "properties"]["status"]["default"]
FOREIGN_CLAIM = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": f"{J}-output", "namespace": NS}}


@dataclass
class Case:
    id: str
    status: dict[str, Any] | None
    pods: list[dict[str, Any]]
    trips: list[list[str]]  # the requests of each round trip, in order
    written: dict[str, Any] | None = None  # status fields the pass's one write set (None: no write)
    created: tuple[str, str] | None = None  # the Created condition after the pass
    spec: dict[str, Any] = field(default_factory=lambda: {"nodes": 2})
    listed: bool = True  # the cache holds the job's pods from a list; else the pass lists them
    have: tuple[str, ...] = ()  # children that exist: "prerequisites", "companions"
    objects: list[dict[str, Any]] = field(default_factory=list)  # in the API server, unseen by the cache
    refuse: dict[str, int] = field(default_factory=dict)  # resource -> HTTP status of a refused create
    since_write: float | None = None  # the controller's last status write (or first gang created), seconds ago
    companions_made: bool = False
    others_await: bool = False  # another new job awaits its pods (a burst)
    now: float = 60
    requeue: float | None = None  # when to look again, where it matters
    error: int | None = None  # the refusal's HTTP status: the pass is retried with backoff
    events: tuple[str, ...] = ()  # reasons among the events to post
    unposted: tuple[str, ...] = ()  # reasons not among them (posted by an earlier pass)
    pods_after: int | None = None  # how many of the job's pods exist after the pass (None: as before)
    gone: bool = False  # the job was deleted


CASES = [
    # --- a new job ---
    Case("first pass: prerequisites with the pod list, the gang with its companions, no status yet", None, [],
         [trip("LIST pods", PREREQUISITES), trip(PODS, COMPANIONS)], listed=False, events=(R.CREATING_PODS,),
         pods_after=2),
    Case("first pass in a burst: the companions wait for the gang's launch", None, [],
         [trip("LIST pods", PREREQUISITES), trip(PODS)], listed=False, others_await=True, pods_after=2),
    Case("the first record waits within the hold of the gang's creation; the companions are made meanwhile",
         None, [pod(J, 0), pod(J, 1)], [trip(COMPANIONS)], have=("prerequisites",), since_write=0.25,
         requeue=0.75),
    Case("the first record, launched, with the companions in its round trip", None, [pod(J, 0), pod(J, 1)],
         [trip(WRITE, COMPANIONS)], written={"phase": C.PHASE_PENDING, "launchedAttempt": 0, "attempt": 0},
         created=("True", R.PODS_CREATED), have=("prerequisites",), since_write=2.0),
    Case("the whole gang running within the hold: one write of Running", LAUNCHED, [running(J, 0), running(J, 1)],
         [trip(WRITE)], written={"phase": C.PHASE_RUNNING, "readyNodes": 2}, since_write=0.25,
         companions_made=True, events=(R.ALL_PODS_RUNNING,)),
    Case("progress within the hold is not written", LAUNCHED, [running(J, 0), pod(J, 1)], [], since_write=0.25,
         companions_made=True, requeue=0.75),
    Case("nothing changed: no request at all", RUNNING, [running(J, 0), running(J, 1)], [], companions_made=True),
    Case("a pod name taken by a pod the job does not own", None, [], [trip(PREREQUISITES), trip(PODS, COMPANIONS),
                                                                      trip("GET pods")],
         objects=[pod(J, 1, owner="someone-else")], events=(R.POD_NAME_CONFLICT,)),
    # --- refusals: recorded in the pass that meets them before its write ---
    Case("refused pods: the first record says so", None, [],
         [trip("LIST pods", PREREQUISITES), trip(PODS, COMPANIONS), trip(WRITE)], listed=False,
         written={"phase": C.PHASE_PENDING, "attempt": 0}, created=("False", R.POD_CREATION_FAILED),
         refuse={"pods": 403}, error=403, events=(R.POD_CREATION_FAILED,), pods_after=0),
    Case("a refused prerequisite: no pod, the first record says so", None, [],
         [trip("LIST pods", PREREQUISITES), trip(WRITE)], listed=False, created=("False", R.POD_CREATION_FAILED),
         written={"phase": C.PHASE_PENDING}, refuse={"serviceaccounts": 403}, error=403, pods_after=0),
    Case("a claim the job does not control: no pod", None, [],
         [trip("LIST pods", PREREQUISITES, "GET persistentvolumeclaims"), trip(WRITE)], listed=False,
         objects=[FOREIGN_CLAIM], written={"phase": C.PHASE_PENDING}, created=("False", R.POD_CREATION_FAILED),
         error=409, pods_after=0),
    Case("a retry still refused: creates first, nothing new to write or to post", REFUSED, [],
         [trip(PREREQUISITES, "GET persistentvolumeclaims"), trip(PODS)], created=("False", R.POD_CREATION_FAILED),
         have=("prerequisites",), refuse={"pods": 403}, error=403, unposted=(R.POD_CREATION_FAILED,), pods_after=0),
    Case("a retry that gets through: the pods, recorded once they are seen", REFUSED, [],
         [trip(PREREQUISITES, "GET persistentvolumeclaims"), trip(PODS)], created=("False", R.POD_CREATION_FAILED),
         have=("prerequisites",), pods_after=2),
    Case("the launch recorded while the Service is refused: the next pass, at once, records the refusal",
         RECORDED, [pod(J, 0), pod(J, 1)], [trip(WRITE, COMPANIONS)], written={"launchedAttempt": 0},
         created=("True", R.PODS_CREATED), have=("prerequisites",), refuse={"services": 403}, requeue=0),
    Case("a refused Service of a launched gang", LAUNCHED, [pod(J, 0), pod(J, 1)], [trip(COMPANIONS), trip(WRITE)],
         written={}, created=("False", R.POD_CREATION_FAILED), refuse={"services": 403}, error=403),
    Case("the Service made after a refusal: Created again", SERVICE_REFUSED, [pod(J, 0), pod(J, 1)],
         [trip(COMPANIONS), trip(WRITE)], written={}, created=("True", R.PODS_CREATED)),
    # --- what the record must precede ---
    Case("a restart: the new attempt recorded before the old pods go", RUNNING,
         [running(J, 0), terminated(J, 1, exit_code=137, reason="OOMKilled")], [trip(WRITE), trip("DELETE pods",
                                                                                                 "DELETE pods")],
         written={"phase": C.PHASE_RESTARTING, "restarts": 1, "attempt": 1}, companions_made=True, requeue=5,
         pods_after=0),
    Case("the restarted gang: its record with the prerequisites, then its pods", RESTARTING, [],
         [trip(WRITE, PREREQUISITES), trip(PODS)], written={"phase": C.PHASE_RESTARTING, "readyNodes": 0},
         companions_made=True, pods_after=2),
    Case("the restarted gang refused: the next pass, at once, records the refusal", RESTARTING, [],
         [trip(WRITE, PREREQUISITES), trip(PODS)], written={"phase": C.PHASE_RESTARTING}, companions_made=True,
         refuse={"pods": 403}, requeue=0, pods_after=0),
    Case("resumption: the new attempt recorded, with the prerequisites, then its pods", SUSPENDED, [],
         [trip(WRITE, PREREQUISITES), trip(PODS)], written={"phase": C.PHASE_PENDING, "attempt": 1},
         companions_made=True, events=(R.RESUMED,), pods_after=2),
    Case("suspension: recorded, then the pods deleted", RUNNING, [running(J, 0), running(J, 1)],
         [trip(WRITE), trip("DELETE pods", "DELETE pods")], written={"phase": C.PHASE_SUSPENDED},
         spec={"nodes": 2, "runPolicy": {"suspend": True}}, companions_made=True, pods_after=0),
    Case("an invalid spec: Failed recorded, then the pods deleted", None, [pod(J, 1)], [trip(WRITE), trip("DELETE pods")],
         written={"phase": C.PHASE_FAILED}, spec={"nodes": 0}, pods_after=0, events=(R.INVALID_SPEC,)),
    Case("the TTL of a finished job: it is deleted", SUCCEEDED, [],
         [trip("GET lightningtrainingjobs"), trip("LIST pods"), trip("DELETE lightningtrainingjobs")],
         spec={"nodes": 2, "runPolicy": {"ttlSecondsAfterFinished": 60}}, now=61, events=(R.TTL_EXPIRED,),
         gone=True),
]


class World:
    """One job in the fake API server, the cache as the watch filled it, the controller's memory."""

    def __init__(self, status: dict[str, Any] | None = None, pods: Sequence[dict[str, Any]] = (), *,
                 spec: dict[str, Any] | None = None, listed: bool = True):
        self.clock = Clock()
        self.cache = ObjectCache(max_age=50, clock=self.clock)
        self.api = FakeApi(self.cache)
        self.expectations = Expectations(self.cache)
        self.written = 0  # status writes of all passes so far
        body = job_body(name=J, **(spec or {"nodes": 2}))
        if status is not None:
            body["status"] = status
        self.api.put(body)
        for p in pods:
            self.put(p)
        self.watch(listed)

    def put(self, obj: dict[str, Any]) -> None:
        """An object in the API server (a pod unless it says otherwise), unseen by the cache until watch()."""
        self.api.put({"apiVersion": "v1", "kind": "Pod", **obj})

    def watch(self, listed: bool = True) -> None:
        """Deliver what the API server holds, as the watch (and a list of the job's pods) would."""
        body = self.api.get_object(C.API_VERSION, C.KIND, NS, J)
        if body is None:
            self.cache.forget_job(NS, J)
        else:
            self.cache.put_job(body)
        pods = self.pods()
        for gone in {p.name for p in self.cache.pods(NS, J) or ()} - {p["metadata"]["name"] for p in pods}:
            self.cache.forget_pod({"metadata": {"name": gone, "namespace": NS, "labels": {C.LABEL_JOB_NAME: J}}})
        if listed:
            self.cache.put_pods(NS, J, pods, list_rv=None)

    def pods(self) -> list[dict[str, Any]]:
        return [p for p in self.api.of_kind("Pod") if p["metadata"]["labels"].get(C.LABEL_JOB_NAME) == J]

    def status(self) -> dict[str, Any]:
        return (self.api.get_object(C.API_VERSION, C.KIND, NS, J) or {}).get("status") or {}

    def reconcile(self, now: float = 60) -> Outcome:
        """One pass; its requests replace the previous pass's."""
        self.api.requests.clear()
        outcome = reconcile(self.api, CONFIG, self.expectations, NS, J, now=lambda: at(now))
        self.written += self.writes()
        return outcome

    def writes(self) -> int:
        return sum(1 for _, r in self.api.requests if r == WRITE)


def world_of(case: Case) -> World:
    world = World(case.status, case.pods, spec=case.spec, listed=case.listed)
    job = parse_job(job_body(name=J, **case.spec)) if case.spec.get("nodes") else None
    for group, manifests in (("prerequisites", render.render_prerequisites), ("companions", render.render_companions)):
        if group in case.have and job is not None:
            for manifest in manifests(job):
                world.api.put(manifest)
    for obj in case.objects:
        world.put(obj)
    world.api.refuse = dict(case.refuse)
    if case.since_write is not None:
        world.expectations.wrote(NS, J)
        world.clock.now += case.since_write
    if case.companions_made:
        world.expectations.made_companions(NS, J, UID)
    if case.others_await:
        world.cache.put_job(job_body(name="other"))
    return world


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_one_pass(case: Case) -> None:
    world = world_of(case)
    before = world.status()
    try:
        outcome = world.reconcile(case.now)
    finally:
        world.api.close()
    assert world.api.trips() == case.trips
    assert world.writes() <= 1
    after = world.status()
    if case.written is None:
        assert world.writes() == 0 and after == (before if not case.gone else {})
    else:
        assert world.writes() == 1 and {k: after.get(k) for k in case.written} == case.written
    if case.created is not None:
        created = next(c for c in after.get("conditions", []) if c["type"] == C.COND_CREATED)
        assert (created["status"], created["reason"]) == case.created
        if case.error is not None:
            assert created["message"].endswith(str(outcome.error))
    if case.requeue is not None:
        assert outcome.requeue_after == pytest.approx(case.requeue)
    assert (outcome.error.status if isinstance(outcome.error, ApiError) else outcome.error) == case.error
    assert set(case.events) <= {e.reason for e in outcome.events}
    assert not set(case.unposted) & {e.reason for e in outcome.events}
    if case.pods_after is not None:
        assert len(world.pods()) == case.pods_after


# -- passes in a row ---------------------------------------------------------------------------------------------
def test_a_new_gang_coming_up_writes_its_status_once() -> None:
    """The first gang's record waits for its pods; the pass their events start within the hold waits for
    the gang to run; the gang running is the job's one status write."""
    world = World(listed=False)
    try:
        first = world.reconcile()
        assert world.writes() == 0 and first.requeue_after is None and len(world.pods()) == 2
        world.clock.now += 0.1
        world.watch()  # the pods' ADDED events
        held = world.reconcile()
        assert world.api.trips() == [] and held.requeue_after == pytest.approx(0.9)
        for rank in (0, 1):
            world.put(running(J, rank))
        world.clock.now += 0.2
        world.watch()
        world.reconcile()
        assert world.written == 1 and world.status()["phase"] == C.PHASE_RUNNING
        assert world.status()["launchedAttempt"] == 0 and world.status()["startTime"]
    finally:
        world.api.close()


def test_a_new_job_read_with_the_crds_default_status_costs_no_request_more() -> None:
    """The API server shows a new job with the status schema's default (phase Pending) until the first record:
    a job on a claim of its own (whose access modes a record needs) comes up with the same requests as without
    it, and one status write."""
    def come_up(status: dict[str, Any] | None) -> list[list[list[str]]]:
        world = World(status, spec={"nodes": 2, "output": {"volumeClaimTemplate": None, "claimName": "shared"}},
                      listed=False)
        trips = []
        try:
            for rank_state in (None, pod, running):
                if rank_state is not None:
                    for rank in (0, 1):
                        world.put(rank_state(J, rank))
                    world.clock.now += 0.2
                    world.watch()
                world.reconcile()
                trips.append(world.api.trips())
            assert world.written == 1 and world.status()["phase"] == C.PHASE_RUNNING
        finally:
            world.api.close()
        return trips

    assert CRD_DEFAULT_STATUS == {"phase": C.PHASE_PENDING}
    assert come_up(CRD_DEFAULT_STATUS) == come_up(None)


def test_a_spec_warning_is_posted_once_with_the_record_of_its_generation() -> None:
    world = World(spec={"nodes": 2, "podTemplate": {"env": [{"name": "RANK", "value": "3"}]}}, listed=False)
    posted = []
    try:
        for rank_state in (None, pod, running, running):
            if rank_state is not None:
                for rank in (0, 1):
                    world.put(rank_state(J, rank))
                world.clock.now += 2.0
                world.watch()
            posted += [e.reason for e in world.reconcile().events if e.type == "Warning"]
        assert world.written == 2 and posted == [R.SPEC_WARNING]
    finally:
        world.api.close()


def test_pods_created_but_not_yet_seen_are_neither_created_again_nor_forgotten() -> None:
    """A pass between the gang's creation and its watch events sees the pods the controller expects."""
    world = World(listed=False)
    try:
        world.reconcile()
        world.clock.now += 0.1
        again = world.reconcile()  # no watch event yet: the cache still lists no pod
        assert world.api.trips() == [] and again.requeue_after == pytest.approx(0.9)
        world.clock.now += 2.0
        world.reconcile()  # the hold is over: the first record counts the expected pods
        assert world.api.trips() == [[WRITE]] and world.status()["launchedAttempt"] == 0
    finally:
        world.api.close()


def test_deleted_pods_are_not_deleted_again_before_the_watch_shows_them_gone() -> None:
    world = World(RUNNING, [running(J, 0), terminated(J, 1, exit_code=137, reason="OOMKilled")])
    world.expectations.made_companions(NS, J, UID)
    try:
        world.reconcile()
        world.put(pod(J, 0, deleting=True, phase="Running"))  # graceful deletion: it shuts down
        world.reconcile()  # before any watch event: both still seen, as deleting
        assert world.api.trips() == []
        world.watch()
        world.reconcile()  # rank 0 still shutting down: the new gang waits for it
        assert world.api.trips() == []
    finally:
        world.api.close()


def test_a_refused_service_is_recorded_retried_and_taken_back() -> None:
    world = World(RECORDED, [pod(J, 0), pod(J, 1)])
    world.api.refuse = {"services": 403}
    try:
        assert world.reconcile().requeue_after == 0  # the launch recorded; the refusal next, at once
        world.watch()
        refused = world.reconcile()
        assert isinstance(refused.error, ApiError) and world.writes() == 1
        created = next(c for c in world.status()["conditions"] if c["type"] == C.COND_CREATED)
        assert (created["status"], created["reason"]) == ("False", R.POD_CREATION_FAILED)
        world.watch()
        world.reconcile()  # still refused: the same record, not written again
        assert world.writes() == 0
        world.api.refuse = {}
        world.reconcile()
        created = next(c for c in world.status()["conditions"] if c["type"] == C.COND_CREATED)
        assert (created["status"], created["reason"]) == ("True", R.PODS_CREATED) and world.writes() == 1
        world.watch()
        world.reconcile()
        assert world.api.trips() == []  # made: not tried again
    finally:
        world.api.close()
