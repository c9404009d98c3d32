"""reconcile: one pass against a fake API server (a table), then a few passes in a row: the round trips
a pass makes, its one status write, what it records of refusals, and what it leaves for the next pass."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pytest
import yaml

from ltj_operator import constants as C
from ltj_operator import kueue, render
from ltj_operator.config import OperatorConfig
from ltj_operator.expectations import Expectations
from ltj_operator.kube import ApiError, ObjectCache
from ltj_operator.podview import observe_pod
from ltj_operator.reconcile import Outcome, reconcile
from ltj_operator.spec import MAX_ARGS_BYTES, parse_job
from ltj_operator.status import Observed, Outcomes, decide
from unit.operator.fake_api import FakeApi
from unit.operator.operator_helpers import UID, Clock, at, job_body, pod, running, terminated, ts, workload

pytestmark = pytest.mark.unit
R = C.Reason

CRD = Path(__file__).resolve().parents[3] / "crds" / "ltj.dev_lightningtrainingjobs.yaml"
NS, J = "team-a", "mnist"
CONFIG = OperatorConfig()
WRITE = "PATCH lightningtrainingjobs/status"
# The job's children but its pods (the relay's and the trainer's ServiceAccounts among them).
CHILDREN = ["POST networkpolicies", "POST persistentvolumeclaims", "POST rolebindings", "POST roles",
            "POST services", "POST serviceaccounts", "POST serviceaccounts"]
# The same where they exist: each create's 409, then the owner of the object in the way read.
IN_PLACE = CHILDREN + [r.replace("POST", "GET") for r in CHILDREN]
PODS = ["POST pods", "POST pods"]
REFUSAL = str(ApiError(403, "Forbidden", "pods is forbidden: exceeded quota: q"))


def trip(*requests: str | list[str]) -> list[str]:
    return sorted(r for group in requests for r in ([group] if isinstance(group, str) else group))


def recorded(status: dict[str, Any] | None, pods: list[dict[str, Any]], spec: dict[str, Any] | None = None,
             **outcomes: Any) -> dict[str, Any]:
    """The status a pass at time 0 recorded from these pods (of a job of this spec: 2 nodes by default)."""
    body = job_body(name=J, **(spec or {"nodes": 2}))
    return dict(decide(parse_job(body), status, Observed(pods=tuple(map(observe_pod, pods))), at(0),
                       spec=body["spec"], outcomes=Outcomes(**outcomes)).status)


TTL = {"nodes": 2, "runPolicy": {"ttlSecondsAfterFinished": 60}}
RECORDED = recorded(None, [])  # the record of a gang being created (after a refusal, say), not launched yet
LAUNCHED = recorded(None, [pod(J, 0), pod(J, 1)])
RUNNING = recorded(None, [running(J, 0), running(J, 1)])
RESTARTING = recorded(RUNNING, [running(J, 0), terminated(J, 1, exit_code=137, reason="OOMKilled")])
REFUSED = recorded(None, [], refusal=REFUSAL)  # the first record of a gang the API server refused
SUSPENDED = recorded(RUNNING, [], spec={"nodes": 2, "runPolicy": {"suspend": True}})
# What the API server shows of a job before its first status write.
CRD_DEFAULT_STATUS = yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"][
    "properties"]["status"]["default"]
FOREIGN_CLAIM = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": f"{J}-output", "namespace": NS}}
FOREIGN_SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {
    "name": J, "namespace": NS, "ownerReferences": [{"apiVersion": C.API_VERSION, "kind": C.KIND, "name": "other",
                                                     "uid": "someone-else", "controller": True}]}}
FOREIGN_BINDING = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                   "metadata": {"name": f"{J}-relay", "namespace": NS}}


@dataclass
class Case:
    id: str
    status: dict[str, Any] | None
    pods: list[dict[str, Any]]
    trips: list[list[str]]  # the requests of each round trip, in order
    written: dict[str, Any] | None = None  # status fields the pass's one write set (None: no write)
    created: tuple[str, str] | None = None  # the Created condition after the pass
    spec: dict[str, Any] = field(default_factory=lambda: {"nodes": 2})
    generation: int = 1  # the job's metadata.generation
    listed: bool = True  # the cache holds the job's pods from a list; else the pass lists them
    have: bool = False  # the job's children (but its pods) exist, controlled by the job
    objects: list[dict[str, Any]] = field(default_factory=list)  # in the API server, unseen by the cache
    refuse: dict[str, int] = field(default_factory=dict)  # resource -> HTTP status of a refused create
    since_write: float | None = None  # the controller's last status write (or first gang created), seconds ago
    now: float = 60
    requeue: float | None = None  # when to look again, where it matters
    error: int | None = None  # the refusal's HTTP status: the pass is retried with backoff
    events: tuple[str, ...] = ()  # reasons among the events to post
    unposted: tuple[str, ...] = ()  # reasons not among them (posted by an earlier pass)
    pods_after: int | None = None  # how many of the job's pods exist after the pass (None: as before)
    gone: bool = False  # the job was deleted


CASES = [
    # --- a new job ---
    Case("first pass: the children with the pod list, then the gang, no status yet", None, [],
         [trip("LIST pods", CHILDREN), trip(PODS)], listed=False, events=(R.CREATING_PODS,), pods_after=2),
    Case("the first record waits within the hold of the gang's creation", None, [pod(J, 0), pod(J, 1)], [],
         have=True, since_write=0.25, requeue=0.75),
    Case("the first record, launched", None, [pod(J, 0), pod(J, 1)], [trip(WRITE)],
         written={"phase": C.PHASE_PENDING, "launchedAttempt": 0, "attempt": 0}, created=("True", R.PODS_CREATED),
         have=True, since_write=2.0),
    Case("the whole gang running within the hold: one write of Running", LAUNCHED, [running(J, 0), running(J, 1)],
         [trip(WRITE)], written={"phase": C.PHASE_RUNNING, "readyNodes": 2}, since_write=0.25,
         events=(R.ALL_PODS_RUNNING,)),
    Case("progress within the hold is not written", LAUNCHED, [running(J, 0), pod(J, 1)], [], since_write=0.25,
         requeue=0.75),
    Case("nothing changed: no request at all", RUNNING, [running(J, 0), running(J, 1)], []),
    Case("a pod name taken by a pod the job does not own", None, [], [trip(CHILDREN), trip(PODS), trip("GET pods")],
         objects=[pod(J, 1, owner="someone-else")], events=(R.POD_NAME_CONFLICT,)),
    # --- refusals: recorded in the pass that meets them before its write ---
    Case("refused pods: the first record says so", None, [],
         [trip("LIST pods", CHILDREN), trip(PODS), trip(WRITE)], listed=False,
         written={"phase": C.PHASE_PENDING, "attempt": 0}, created=("False", R.POD_CREATION_FAILED),
         refuse={"pods": 403}, error=403, events=(R.POD_CREATION_FAILED,), pods_after=0),
    Case("a refused child: no pod, the first record says so", None, [],
         [trip("LIST pods", CHILDREN), trip(WRITE)], listed=False, created=("False", R.POD_CREATION_FAILED),
         written={"phase": C.PHASE_PENDING}, refuse={"serviceaccounts": 403}, error=403, pods_after=0),
    Case("a refused NetworkPolicy: no pod listens unguarded, the first record says so", None, [],
         [trip("LIST pods", CHILDREN), trip(WRITE)], listed=False, created=("False", R.POD_CREATION_FAILED),
         written={"phase": C.PHASE_PENDING}, refuse={"networkpolicies": 403}, error=403, pods_after=0),
    Case("a refused Service: no pod runs before it", None, [],
         [trip("LIST pods", CHILDREN), trip(WRITE)], listed=False, created=("False", R.POD_CREATION_FAILED),
         written={"phase": C.PHASE_PENDING}, refuse={"services": 403}, error=403, pods_after=0),
    Case("a claim without a controller in the way: no pod, AlreadyExists", None, [],
         [trip("LIST pods", CHILDREN, "GET persistentvolumeclaims"), trip(WRITE)], listed=False,
         objects=[FOREIGN_CLAIM], written={"phase": C.PHASE_PENDING}, created=("False", R.ALREADY_EXISTS),
         error=409, events=(R.ALREADY_EXISTS,), pods_after=0),
    Case("a Service another job controls in the way: no pod, AlreadyExists", None, [],
         [trip("LIST pods", CHILDREN, "GET services"), trip(WRITE)], listed=False,
         objects=[FOREIGN_SERVICE], written={"phase": C.PHASE_PENDING}, created=("False", R.ALREADY_EXISTS),
         error=409, events=(R.ALREADY_EXISTS,), pods_after=0),
    Case("a RoleBinding in the way: no pod, AlreadyExists", None, [],
         [trip("LIST pods", CHILDREN, "GET rolebindings"), trip(WRITE)], listed=False,
         objects=[FOREIGN_BINDING], written={"phase": C.PHASE_PENDING}, created=("False", R.ALREADY_EXISTS),
         error=409, events=(R.ALREADY_EXISTS,), pods_after=0),
    Case("a retry still refused: creates first, nothing new to write or to post", REFUSED, [],
         [trip(IN_PLACE), trip(PODS)], created=("False", R.POD_CREATION_FAILED),
         have=True, refuse={"pods": 403}, error=403, unposted=(R.POD_CREATION_FAILED,), pods_after=0),
    Case("a retry that gets through: the job's own children adopted, the pods, recorded once they are seen",
         REFUSED, [], [trip(IN_PLACE), trip(PODS)], created=("False", R.POD_CREATION_FAILED), have=True,
         pods_after=2),
    # --- what the record must precede ---
    Case("a restart: the new attempt recorded before the old pods go", RUNNING,
         [running(J, 0), terminated(J, 1, exit_code=137, reason="OOMKilled")], [trip(WRITE), trip("DELETE pods",
                                                                                                 "DELETE pods")],
         written={"phase": C.PHASE_RESTARTING, "restarts": 1, "attempt": 1}, requeue=5,
         pods_after=0),
    Case("the restarted gang: its record with its other children, then its pods", RESTARTING, [],
         [trip(WRITE, CHILDREN), trip(PODS)], written={"phase": C.PHASE_RESTARTING, "readyNodes": 0},
         pods_after=2),
    Case("the restarted gang refused: the next pass, at once, records the refusal", RESTARTING, [],
         [trip(WRITE, CHILDREN), trip(PODS)], written={"phase": C.PHASE_RESTARTING},
         refuse={"pods": 403}, requeue=0, pods_after=0),
    Case("resumption: the new attempt recorded, with its other children, then its pods", SUSPENDED, [],
         [trip(WRITE, CHILDREN), trip(PODS)], written={"phase": C.PHASE_PENDING, "attempt": 1},
         events=(R.RESUMED,), pods_after=2),
    Case("suspension: recorded, then the pods deleted", RUNNING, [running(J, 0), running(J, 1)],
         [trip(WRITE), trip("DELETE pods", "DELETE pods")], written={"phase": C.PHASE_SUSPENDED},
         spec={"nodes": 2, "runPolicy": {"suspend": True}}, pods_after=0),
    Case("an invalid edit of a running job: recorded, the gang untouched", RUNNING, [running(J, 0), running(J, 1)],
         [trip(WRITE)], written={"phase": C.PHASE_RUNNING, "observedGeneration": 2, "appliedGeneration": 1},
         spec={"nodes": 2, "model": {"args": {"notes": "x" * MAX_ARGS_BYTES}}}, generation=2,
         events=(R.INVALID_EDIT,), pods_after=2),
    Case("an invalid spec: Failed recorded, then the pods deleted", None, [pod(J, 1)], [trip(WRITE), trip("DELETE pods")],
         written={"phase": C.PHASE_FAILED}, spec={"nodes": 0}, pods_after=0, events=(R.INVALID_SPEC,)),
    Case("the TTL of a finished job: it is deleted", recorded(RUNNING, [terminated(J, 0, exit_code=0),
                                                                     terminated(J, 1, exit_code=0)], spec=TTL), [],
         [trip("GET lightningtrainingjobs"), trip("LIST pods"), trip("DELETE lightningtrainingjobs")],
         spec=TTL, now=61, events=(R.TTL_EXPIRED,),
         gone=True),
]


class World:
    """One job in the fake API server, the cache as the watch filled it, the controller's memory."""

    def __init__(self, status: dict[str, Any] | None = None, pods: Sequence[dict[str, Any]] = (), *,
                 spec: dict[str, Any] | None = None, generation: int = 1, listed: bool = True):
        self.clock = Clock()
        self.cache = ObjectCache(max_age=50, clock=self.clock)
        self.api = FakeApi(self.cache)
        self.expectations = Expectations(self.cache)
        self.written = 0  # status writes of all passes so far
        body = job_body(name=J, generation=generation, **(spec or {"nodes": 2}))
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

    def reconcile(self, now: float = 60, config: OperatorConfig = CONFIG) -> Outcome:
        """One pass; its requests replace the previous pass's."""
        self.api.requests.clear()
        outcome = reconcile(self.api, config, self.expectations, NS, J, now=lambda: at(now))
        self.written += self.writes()
        return outcome

    def writes(self) -> int:
        return sum(1 for _, r in self.api.requests if r == WRITE)


def world_of(case: Case) -> World:
    world = World(case.status, case.pods, spec=case.spec, generation=case.generation, listed=case.listed)
    if case.have:
        for manifest in render.render_children(parse_job(job_body(name=J, **case.spec)), CONFIG):
            world.api.put(manifest)
    for obj in case.objects:
        world.put(obj)
    world.api.refuse = dict(case.refuse)
    if case.since_write is not None:
        world.expectations.wrote(NS, J)
        world.clock.now += case.since_write
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


def test_a_child_in_the_way_is_recorded_retried_and_the_gang_made_once_it_is_gone() -> None:
    world = World(listed=False)
    world.put(FOREIGN_SERVICE)
    try:
        refused = world.reconcile()
        assert isinstance(refused.error, ApiError) and world.writes() == 1 and world.pods() == []
        created = next(c for c in world.status()["conditions"] if c["type"] == C.COND_CREATED)
        assert (created["status"], created["reason"]) == ("False", R.ALREADY_EXISTS)
        assert f"Service {J} exists and is not controlled by this job" in created["message"]
        assert world.api.get_object("v1", "Service", NS, J)["metadata"]["ownerReferences"][0]["uid"] == "someone-else"
        world.watch()
        world.reconcile()  # still in the way: the same record, not written again, no pod
        assert world.writes() == 0 and world.pods() == []
        del world.api.objects[next(p for p, o in world.api.objects.items() if o["kind"] == "Service")]
        world.reconcile()
        assert len(world.pods()) == 2
        assert world.api.get_object("v1", "Service", NS, J)["metadata"]["ownerReferences"][0]["uid"] == UID
    finally:
        world.api.close()


def test_a_stale_read_never_moves_restarts_back_and_deletes_nothing() -> None:
    """Fencing: the cache still shows attempt 0 while another writer (a deposed leader's successor) has
    recorded two restarts. This pass decides restart 1 from its stale read: its write is refused (nothing
    written, no pod deleted, no restart event); the job read again is what the next pass decides from."""
    world = World(RUNNING, [running(J, 0), terminated(J, 1, exit_code=137, reason="OOMKilled")])
    moved = world.api.get_object(C.API_VERSION, C.KIND, NS, J)
    moved["status"] = {**RESTARTING, "restarts": 2, "attempt": 2}
    world.api.put(moved)  # not watched yet: the cache holds the older status
    try:
        outcome = world.reconcile()
        assert world.api.trips() == [["GET lightningtrainingjobs", WRITE]]  # the refused write, then the read
        assert outcome.error is None and outcome.requeue_after == 0.0
        assert R.SIGNALED not in {e.reason for e in outcome.events} and R.OOM_KILLED not in {e.reason for e in outcome.events}
        assert world.status() == moved["status"] and len(world.pods()) == 2

        world.reconcile()  # attempt 2 is on record: the pods of attempt 0 go
        assert ["DELETE pods", "DELETE pods"] in world.api.trips()
        assert (world.status()["restarts"], world.status()["attempt"]) == (2, 2)
    finally:
        world.api.close()


def test_a_platform_without_per_job_policies_gets_none() -> None:
    """With the operator's NetworkPolicy turned off (the chart's networkPolicy.enabled: false) a new job's
    first pass makes its other children and pods, and no policy."""
    world = World(listed=False)
    try:
        world.reconcile(config=OperatorConfig(network_policy=False))
        assert world.api.trips() == [trip("LIST pods", [r for r in CHILDREN if "networkpolicies" not in r]),
                                     trip(PODS)]
        assert not world.api.of_kind("NetworkPolicy") and len(world.pods()) == 2
    finally:
        world.api.close()


def test_the_policy_exists_before_the_pods_and_is_owned_by_the_job() -> None:
    world = World(listed=False)
    try:
        world.reconcile()
        (policy,) = world.api.of_kind("NetworkPolicy")
        assert policy == {**render.render_network_policy(parse_job(job_body(name=J, nodes=2))),
                          "metadata": policy["metadata"]}
        assert policy["metadata"]["ownerReferences"][0]["uid"] == UID
        # Its round trip precedes the pods'.
        assert "POST networkpolicies" in world.api.trips()[0] and "POST pods" in world.api.trips()[1]
    finally:
        world.api.close()


class TokenControllerApi(FakeApi):
    """The fake API server with the token controller's rule (a token Secret whose ServiceAccount does not
    exist is deleted), running a round trip's calls one by one, the last first: the worst order they can
    come in."""

    def all(self, calls: Sequence[Any]) -> list[Any]:
        return list(reversed([super(TokenControllerApi, self).all([call])[0] for call in reversed(calls)]))

    def _create(self, path: str, resource: str, manifest: Any) -> dict[str, Any]:
        created = super()._create(path, resource, manifest)
        if manifest.get("type") == C.SERVICE_ACCOUNT_TOKEN_TYPE:
            account = manifest["metadata"]["annotations"][C.ANNOTATION_SERVICE_ACCOUNT_NAME]
            if self.get_object("v1", "ServiceAccount", NS, account) is None:
                del self.objects[f"{path}/{manifest['metadata']['name']}"]
        return created


def test_a_named_accounts_gang_gets_the_relays_token_secret_after_the_relays_account() -> None:
    world = World(spec={"nodes": 2, "podTemplate": {"serviceAccountName": "reader"}}, listed=False)
    api = TokenControllerApi(world.cache)
    api.objects = world.api.objects
    world.api.close()
    world.api = api
    try:
        world.reconcile()
        assert {s["metadata"]["name"] for s in api.of_kind("ServiceAccount")} == {f"{J}-relay"}
        (secret,) = api.of_kind("Secret")
        assert secret["metadata"]["name"] == f"{J}-relay-token"
        assert {p["spec"]["serviceAccountName"] for p in world.pods()} == {"reader"}
        # The relay's account refused: no token Secret either, and no pod.
        again = World(spec={"nodes": 2, "podTemplate": {"serviceAccountName": "reader"}}, listed=False)
        again.api.refuse = {"serviceaccounts": 403}
        try:
            assert isinstance(again.reconcile().error, ApiError)
            assert again.api.of_kind("Secret") == [] and again.pods() == []
            assert "POST secrets" not in [r for _, r in again.api.requests]
        finally:
            again.api.close()
    finally:
        api.close()


def test_a_queued_job_on_a_cluster_without_kueue_is_held_on_one_cached_discovery_answer() -> None:
    world = World()
    body = world.api.get_object(C.API_VERSION, C.KIND, NS, J)
    body["metadata"]["labels"] = {C.LABEL_KUEUE_QUEUE: "gpus"}
    world.api.put(body)
    world.watch()
    discover = f"DISCOVER {C.KUEUE_API}"
    try:
        held = world.reconcile()
        assert discover in [r for _, r in world.api.requests]
        assert world.pods() == [] and world.writes() == 1
        reserved = next(c for c in world.status()["conditions"] if c["type"] == C.COND_QUOTA_RESERVED)
        assert (reserved["status"], reserved["reason"]) == ("False", R.KUEUE_NOT_INSTALLED)
        assert R.KUEUE_NOT_INSTALLED in {e.reason for e in held.events if e.type == "Warning"}
        world.watch()
        world.clock.now += 10
        again = world.reconcile()
        assert discover not in [r for _, r in world.api.requests] and world.pods() == []
        assert again.requeue_after is not None
        # Kueue installed: seen once the cached answer is older than the cache's max age; the job then
        # waits for Kueue's admission of its Workload instead.
        world.api.served.add(C.KUEUE_API)
        world.clock.now += 50
        world.watch()
        world.reconcile()
        assert discover in [r for _, r in world.api.requests] and world.pods() == []
        assert len(world.api.of_kind("Workload")) == 1
    finally:
        world.api.close()


def queued_world() -> tuple[World, dict[str, Any]]:
    """The job labelled for LocalQueue gpus, on an API server that serves Kueue's API; and its body."""
    world = World()
    body = world.api.get_object(C.API_VERSION, C.KIND, NS, J)
    body["metadata"]["labels"] = {C.LABEL_KUEUE_QUEUE: "gpus"}
    world.api.put(body)
    world.api.served.add(C.KUEUE_API)
    return world, body


def test_a_queued_job_gets_one_workload_and_its_gang_only_once_admitted_then_releases_the_quota() -> None:
    world, body = queued_world()
    world.watch()
    try:
        created = world.reconcile()
        (wl,) = world.api.of_kind("Workload")
        assert wl["metadata"]["name"] == kueue.workload_name(parse_job(body))
        assert wl["metadata"]["ownerReferences"][0]["uid"] == UID and wl["spec"]["queueName"] == "gpus"
        # The priority was read (no class named: the global default, here none) before the Workload was created;
        # nothing else of the job's is made before Kueue admits it.
        assert world.api.trips()[0] == ["GET workloads", "LIST priorityclasses"]
        assert world.api.trips()[-1] == trip(WRITE, "POST workloads")
        assert R.CREATED_WORKLOAD in {e.reason for e in created.events} and world.pods() == []
        assert world.status()["queue"]["reason"] == R.WORKLOAD_CREATED

        world.watch()
        again = world.reconcile()
        assert len(world.api.of_kind("Workload")) == 1 and world.pods() == []
        assert R.CREATED_WORKLOAD not in {e.reason for e in again.events}

        # Kueue admits it on a flavor with node labels and a toleration.
        world.api.put({"apiVersion": C.KUEUE_API, "kind": "ResourceFlavor", "metadata": {"name": "gpu-a"},
                       "spec": {"nodeLabels": {"pool": "a100"},
                                "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]}})
        admitted = workload(J, reserved=("True", "QuotaReserved", "Quota reserved in ClusterQueue cq"),
                            cluster_queue="cq", admitted=("True", "Admitted", "The workload is admitted"))
        world.api.put({**wl, "status": admitted["status"]})
        world.watch()
        started = world.reconcile()
        assert "GET resourceflavors" in [r for _, r in world.api.requests]
        assert R.ADMITTED in {e.reason for e in started.events}
        pods = world.pods()
        assert len(pods) == 2
        for p in pods:
            assert p["spec"]["nodeSelector"] == {"pool": "a100"}
            assert p["spec"]["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
        assert world.status()["queue"]["admitted"] is True
        assert world.status()["queue"]["podSets"][0]["nodeSelector"] == {"pool": "a100"}

        # The placement is on record: later passes do not read the flavors again.
        world.watch()
        world.reconcile()
        assert "GET resourceflavors" not in [r for _, r in world.api.requests]

        # The job succeeds and its pods have finished: after the record, its Workload is marked Finished.
        world.put(terminated(J, 0, exit_code=0))
        world.put(terminated(J, 1, exit_code=0))
        world.watch()
        world.reconcile()
        assert world.status()["phase"] == C.PHASE_SUCCEEDED
        requests = [r for _, r in world.api.requests]
        assert requests.index(WRITE) < requests.index("PATCH workloads/status")
        (finished,) = [c for c in world.api.of_kind("Workload")[0]["status"]["conditions"] if c["type"] == "Finished"]
        assert (finished["status"], finished["reason"]) == ("True", "Succeeded")
        # Seen finished: recorded, and then the Workload is no longer read.
        world.watch()
        world.reconcile()
        assert world.status()["queue"]["finished"] is True and world.status()["queue"]["admitted"] is False
        world.watch()
        world.reconcile()
        assert not [r for _, r in world.api.requests if "workloads" in r]
    finally:
        world.api.close()


def pods_ready(world: World) -> tuple[str, str]:
    """The (status, reason) of the PodsReady condition of the job's Workload as stored."""
    (cond,) = [c for c in world.api.of_kind("Workload")[0]["status"]["conditions"] if c["type"] == "PodsReady"]
    return cond["status"], cond["reason"]


def test_an_evicted_job_records_the_eviction_deletes_its_pods_then_clears_the_admission() -> None:
    world, _ = queued_world()
    world.api.put({"apiVersion": C.KUEUE_API, "kind": "ResourceFlavor", "metadata": {"name": "gpu-a"}, "spec": {}})
    admitted = workload(J, reserved=("True", "QuotaReserved", "Quota reserved in ClusterQueue cq"), cluster_queue="cq",
                        admitted=("True", "Admitted", "The workload is admitted"))
    world.api.put(admitted)
    world.watch()
    try:
        world.reconcile()
        assert pods_ready(world) == ("False", "WaitForStart")  # admitted, the gang not up yet
        for made in world.pods():  # the pods created, running
            world.put({**made, "status": running(J, int(made["metadata"]["labels"][C.LABEL_NODE_RANK]))["status"]})
        # A write of Kueue's between the pass's read of the Workload and its PodsReady patch: refused (409),
        # read again, patched again, and the pass goes through.
        real_request = world.api.request
        kueue_writes = [1]

        def kueue_writes_first(method: str, path: str, **kw: Any) -> Any:
            if method == "PATCH" and path.endswith("/status") and "/workloads/" in path and kueue_writes[0] > 0:
                kueue_writes[0] -= 1
                world.api.put(world.api.of_kind("Workload")[0])  # a new resourceVersion
            return real_request(method, path, **kw)

        world.api.request = kueue_writes_first  # type: ignore[method-assign]
        world.watch()
        assert world.reconcile().error is None
        assert world.status()["phase"] == C.PHASE_RUNNING
        assert pods_ready(world) == ("True", "Started")
        requests = [r for _, r in world.api.requests]
        assert requests.count("GET workloads") == 2 and requests.count("PATCH workloads/status") == 2

        # The Workload is read once per pass when nobody writes it in between: the patch uses that read.
        running_again = world.api.of_kind("Workload")[0]
        running_again["status"]["conditions"] = [c for c in running_again["status"]["conditions"]
                                                 if c["type"] != "PodsReady"]
        world.api.put(running_again)
        world.watch()
        world.reconcile()
        assert pods_ready(world) == ("True", "Started")
        requests = [r for _, r in world.api.requests]
        assert requests.count("GET workloads") == 1 and requests.count("PATCH workloads/status") == 1

        # Kueue preempts it: the eviction is recorded before the pods are deleted (with their grace period).
        preempted = world.api.of_kind("Workload")[0]
        preempted["status"]["conditions"].append({"type": "Evicted", "status": "True", "reason": "Preempted",
                                                  "message": "Preempted to accommodate a workload",
                                                  "lastTransitionTime": ts(0)})
        world.api.put(preempted)
        world.watch()
        world.reconcile()
        requests = [r for _, r in world.api.requests]
        assert requests.index(WRITE) < requests.index("DELETE pods")
        assert world.pods() == [] and world.status()["evictions"] == 1
        assert world.status()["phase"] == C.PHASE_SUSPENDED and world.status()["restarts"] == 0
        # Still admitted, its pods stopping: the Workload's one write is PodsReady's, its admission kept.
        assert requests.count("PATCH workloads/status") == 1 and pods_ready(world) == ("False", "WaitForRecovery")
        assert "admission" in world.api.of_kind("Workload")[0]["status"]

        # Kueue writes before each patch (the pass's read, then the read again): refused, the pass retried.
        kueue_writes[0] = 2
        world.api.request = kueue_writes_first  # type: ignore[method-assign]
        world.watch()
        refused = world.reconcile()
        assert isinstance(refused.error, ApiError) and refused.error.status == 409
        world.api.request = real_request  # type: ignore[method-assign]

        # No pod is left: one status write gives the quota back and queues the Workload again.
        world.reconcile()
        assert [r for _, r in world.api.requests].count("PATCH workloads/status") == 1
        wl = world.api.of_kind("Workload")[0]
        assert "admission" not in wl["status"]
        conds = {c["type"]: c for c in wl["status"]["conditions"]}
        assert (conds["QuotaReserved"]["status"], conds["QuotaReserved"]["reason"]) == ("False", "Pending")
        assert (conds["Requeued"]["status"], conds["Requeued"]["reason"]) == ("True", "Preempted")
        assert (conds["Admitted"]["status"], conds["Admitted"]["reason"]) == ("False", "NoReservation")
        # Admitted no more: the next pass's write is PodsReady's (jobframework's WaitForStart), and then
        # nothing is written to it.
        world.watch()
        world.reconcile()
        assert [r for _, r in world.api.requests].count("PATCH workloads/status") == 1
        assert pods_ready(world) == ("False", "WaitForStart") and "admission" not in world.api.of_kind("Workload")[0]["status"]
        world.watch()
        world.reconcile()
        assert "PATCH workloads/status" not in [r for _, r in world.api.requests]
        assert world.status()["queue"]["reason"] == "Pending" and world.status()["phase"] == C.PHASE_SUSPENDED
    finally:
        world.api.close()
