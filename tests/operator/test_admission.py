"""Bad manifests and disallowed pods get a named answer from the operator (pure: no cluster).

- API server refusals of a child are mapped back to the spec field the user wrote
  (`builders/field_routes.py`, `reconcile/rejection.py`) and fail the pool or job visibly until
  the spec changes;
- the installation's pod policy (`settings.PodPolicy`, `reconcile/policy.py`) refuses
  ServiceAccounts, volume types and images before anything is created.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from rollout_operator.api.rolloutjob_types import RolloutJob
from rollout_operator.api.sglangpool_types import SGLangPool
from rollout_operator.builders import rolloutjob as build_job
from rollout_operator.builders import sglangpool as build_pool
from rollout_operator.builders.field_routes import batch_job_routes, router_routes, server_routes, spec_field
from rollout_operator.reconcile.rejection import Rejection, explain
from rollout_operator.reconcile.rolloutjob import JobObserved, decide_job
from rollout_operator.reconcile.sglangpool import PoolObserved, decide_pool
from rollout_operator.settings import OperatorConfig, PodPolicy

from tests.operator.conftest import rolloutjob, sglangpool

POD = "spec.template.spec"
C0 = f"{POD}.containers[0]"


def cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


# ------------------------------------------------------------------ child paths -> spec paths


@pytest.mark.parametrize("pool_spec,child_field,user_field", [
    ({}, f"{POD}.volumes[0].emptyDir.sizeLimit", "spec.shmSize"),
    ({}, f"{C0}.resources.requests[cpu]", "spec.resources.requests[cpu]"),
    ({"env": [{"name": "A=B", "value": "1"}]}, f"{C0}.env[0].name", "spec.env[0].name"),
    ({"volumes": [{"name": "hf", "emptyDir": {}}], "volumeMounts": [{"name": "hf", "mountPath": "/hf"},
                                                                    {"name": "data", "mountPath": "/d"}]},
     f"{C0}.volumeMounts[2].name", "spec.volumeMounts[1].name"),  # [0] is the operator's /dev/shm
    ({"volumes": [{"name": "data", "persistentVolumeClaim": {}}]},
     f"{POD}.volumes[1].persistentVolumeClaim.claimName", "spec.volumes[0].persistentVolumeClaim.claimName"),
    ({"model": {"pvc": {"claimName": "m"}}, "volumes": [{"name": "x", "emptyDir": {}}]},
     f"{POD}.volumes[2].name", "spec.volumes[0].name"),  # dshm and model come first
    ({"model": {"pvc": {"claimName": "m"}}}, f"{POD}.volumes[1].persistentVolumeClaim.claimName",
     "spec.model.pvc.claimName"),
    ({"scheduling": {"nodeSelector": {"bad key!": "x"}}}, f"{POD}.nodeSelector", "spec.scheduling.nodeSelector"),
    ({}, "spec.replicas", "spec.replicas"),
], ids=["shm", "cpu", "env", "mount", "volume", "volume-after-model", "model-pvc", "node-selector", "replicas"])
def test_server_deployment_fields_map_to_the_pool_spec(config: OperatorConfig, pool_spec: dict[str, Any],
                                                        child_field: str, user_field: str) -> None:
    pool = SGLangPool.from_body(sglangpool(**pool_spec))
    routes = server_routes(pool, build_pool.server_deployment(pool, config))
    assert spec_field(child_field, routes) == user_field


def test_router_and_job_fields_map_to_their_spec_sections(config: OperatorConfig) -> None:
    pool = SGLangPool.from_body(sglangpool())
    routes = router_routes(pool, build_pool.router_deployment(pool, config))
    assert spec_field(f"{C0}.resources.limits[memory]", routes) == "spec.router.resources.limits[memory]"
    assert spec_field(f"{POD}.tolerations[0].effect", routes) == "spec.router.scheduling.tolerations[0].effect"
    job = RolloutJob.from_body(rolloutjob(runtime={"env": [{"name": "A=B"}], "serviceAccountName": "x"}))
    child = build_job.batch_job(job, 1, "http://e", config)
    routes = batch_job_routes(job, child)
    assert spec_field(f"{C0}.env[4].name", routes) == "spec.runtime.env[0].name"  # 4 variables are the operator's
    assert spec_field(f"{C0}.env[1].name", routes) is None
    assert spec_field(f"{POD}.serviceAccountName", routes) == "spec.runtime.serviceAccountName"
    assert spec_field(f"{C0}.resources.requests[cpu]", routes) == "spec.runtime.resources.requests[cpu]"
    assert spec_field("metadata.labels", routes) is None


def test_explain_names_each_cause_in_the_users_terms(config: OperatorConfig) -> None:
    pool = SGLangPool.from_body(sglangpool(env=[{"name": "A=B"}]))
    routes = server_routes(pool, build_pool.server_deployment(pool, config))
    rejection = Rejection(1, 'Deployment.apps "qwen-server" is invalid: ...', "Deployment", "qwen-server", (
        (f"{C0}.env[0].name", "Invalid value: \"A=B\": must not contain '='"),
        ("metadata.annotations", "Too long"),
    ))
    assert explain(rejection, routes) == ("spec.env[0].name: Invalid value: \"A=B\": must not contain '='; "
                                          "metadata.annotations: Too long (in Deployment qwen-server)")
    assert explain(Rejection(1, "quota exceeded"), routes) == "quota exceeded"


# --------------------------------------------------------------------- pool: refused children


def test_a_pool_whose_child_is_refused_fails_naming_the_field_and_recovers_when_fixed(config: OperatorConfig) -> None:
    body = sglangpool(volumes=[{"name": "data", "persistentVolumeClaim": {}}],
                      volumeMounts=[{"name": "data", "mountPath": "/data"}])
    refused = Rejection(1, 'Deployment.apps "qwen-server" is invalid', "Deployment", "qwen-server",
                        ((f"{POD}.volumes[1].persistentVolumeClaim.claimName", "Required value"),))
    plan = decide_pool(PoolObserved(body=body, rejection=refused), config)
    st = plan.status.wire()
    message = ("the API server rejected Deployment qwen-server: "
               "spec.volumes[0].persistentVolumeClaim.claimName: Required value")
    assert (st["phase"], st["message"]) == ("Failed", message)
    assert cond(st, "ConfigValid") | {"lastTransitionTime": None} == {
        "type": "ConfigValid", "status": "False", "reason": "SpecRejected", "message": message,
        "lastTransitionTime": None, "observedGeneration": 1}
    assert cond(st, "Ready")["reason"] == "SpecRejected"
    assert plan.apply == [] and plan.delete == []
    assert [(e.type, e.reason, e.message) for e in plan.events] == [("Warning", "SpecRejected", message)]
    # The same generation again: still Failed, quiet.
    body["status"] = st
    again = decide_pool(PoolObserved(body=body, rejection=refused), config)
    assert again.status.wire()["phase"] == "Failed" and not again.events and again.apply == []
    # Fixed (generation 2): the children are applied, the conditions say so, once.
    body["metadata"]["generation"] = 2
    body["spec"]["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": "rollout-data"}}]
    fixed = decide_pool(PoolObserved(body=body, rejection=refused), config)
    st = fixed.status.wire()
    assert st["phase"] == "Pending" and cond(st, "ConfigValid")["status"] == "True"
    assert fixed.apply and [e.reason for e in fixed.events] == ["SpecFixed"]


def test_an_unparsable_quantity_is_named_even_without_the_crds_cel_rules(config: OperatorConfig) -> None:
    """Stored under an older CRD: the API server would refuse the Deployment naming no field at all."""
    plan = decide_pool(PoolObserved(body=sglangpool(shmSize="lots", resources={"requests": {"cpu": "2 cores"}})),
                       config)
    st = plan.status.wire()
    assert st["phase"] == "Failed" and cond(st, "ConfigValid")["reason"] == "InvalidSpec"
    assert "spec.shmSize: 'lots' is not a non-negative Kubernetes quantity such as 500m, 2, 512Mi or 16Gi" in st["message"]
    assert "spec.resources.requests.cpu: '2 cores' is not" in st["message"] and plan.apply == []
    job = decide_job(JobObserved(body=rolloutjob(runtime={"resources": {"limits": {"memory": "-1Gi"}}})), config)
    assert job.create_job is None and job.ensure == [] and job.status.wire()["reason"] == "InvalidSpec"
    assert "spec.runtime.resources.limits.memory: '-1Gi' is not" in job.status.wire()["message"]


def test_a_refused_runtime_job_names_the_runtime_field(config: OperatorConfig) -> None:
    status = {"phase": "Pending", "attempt": 1, "jobName": "arith-1", "observedGeneration": 1,
              "endpoint": "http://engine:30000"}
    body = rolloutjob(status=status, runtime={"env": [{"name": "GOOD", "value": "1"}, {"name": "A=B"}]})
    refused = Rejection(1, 'Job.batch "arith-1" is invalid', "Job", "arith-1",
                        ((f"{C0}.env[5].name", "Invalid value: \"A=B\""),))
    plan = decide_job(JobObserved(body=body, jobs={}, rejection=refused), config)
    st = plan.status.wire()
    assert (st["phase"], st["reason"]) == ("Failed", "JobRejected")
    assert st["message"] == "the API server rejected the runtime Job: spec.runtime.env[1].name: Invalid value: \"A=B\""


# ------------------------------------------------------------------------------ the pod policy


@pytest.mark.parametrize("runtime,field", [
    ({"serviceAccountName": "default"}, "spec.runtime.serviceAccountName: ServiceAccount 'default' is not allowed"),
    ({"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "d"}},
                  {"name": "root", "hostPath": {"path": "/"}}]},
     "spec.runtime.volumes[1].hostPath: volume type hostPath is not allowed"),
    ({"volumes": [{"name": "n", "nfs": {"server": "x", "path": "/"}}]}, "spec.runtime.volumes[0].nfs"),
], ids=["service-account", "host-path", "nfs"])
def test_the_default_policy_refuses_another_service_account_and_host_volumes(
        config: OperatorConfig, runtime: dict[str, Any], field: str) -> None:
    plan = decide_job(JobObserved(body=rolloutjob(runtime=runtime)), config)
    st = plan.status.wire()
    assert (st["phase"], st["reason"]) == ("Failed", "NotAllowed") and field in st["message"]
    assert cond(st, "Admitted")["status"] == "False" and cond(st, "Admitted")["reason"] == "NotAllowed"
    # Nothing is created for it: no Job, no state ConfigMap, no Role or RoleBinding.
    assert plan.create_job is None and plan.ensure == [] and plan.fence is None
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "NotAllowed")]
    assert "chart value policy." in st["message"]


def test_the_policy_allows_listed_service_accounts_and_types_and_a_widened_policy_recovers(
        config: OperatorConfig) -> None:
    body = rolloutjob(runtime={"serviceAccountName": "rollout-trainer",
                               "volumes": [{"name": "h", "hostPath": {"path": "/models"}}]})
    refused = decide_job(JobObserved(body=body), config)
    assert refused.status.wire()["reason"] == "NotAllowed"
    assert "serviceAccountName" in refused.status.wire()["message"] and "hostPath" in refused.status.wire()["message"]
    wider = replace(config, policy=PodPolicy(allowed_service_accounts=("rollout-*",),
                                             allowed_volume_types=("hostPath",)))
    body["status"] = refused.status.wire()
    plan = decide_job(JobObserved(body=body), wider)  # same generation: the administrator changed the policy
    st = plan.status.wire()
    assert st["phase"] == "Pending" and plan.create_job is not None and cond(st, "Admitted")["status"] == "True"
    pod = plan.create_job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "rollout-trainer" and pod["volumes"][0]["hostPath"] == {"path": "/models"}
    binding = next(m for m in plan.ensure if m["kind"] == "RoleBinding")
    assert binding["subjects"][0]["name"] == "rollout-trainer"


def test_image_prefixes_when_set(config: OperatorConfig) -> None:
    strict = replace(config, policy=PodPolicy(allowed_image_prefixes=("registry.example.com/",)))
    ok = decide_job(JobObserved(body=rolloutjob(runtime={"image": "registry.example.com/rt:1"})), strict)
    assert ok.create_job is not None
    default_image = decide_job(JobObserved(body=rolloutjob()), strict)  # the operator's own default image
    assert default_image.create_job is not None
    bad = decide_job(JobObserved(body=rolloutjob(runtime={"image": "evil.io/rt:1"})), strict)
    assert "spec.runtime.image: image 'evil.io/rt:1' is not from an allowed registry" in bad.status.wire()["message"]
    pool = decide_pool(PoolObserved(body=sglangpool(router={"image": "evil.io/router"})), strict)
    assert pool.status.wire()["phase"] == "Failed" and "spec.router.image" in pool.status.wire()["message"]


def test_a_pool_outside_the_policy_gets_no_children(config: OperatorConfig) -> None:
    body = sglangpool(volumes=[{"name": "cache", "hostPath": {"path": "/var/cache/hf"}}],
                      volumeMounts=[{"name": "cache", "mountPath": "/root/.cache"}])
    plan = decide_pool(PoolObserved(body=body), config)
    st = plan.status.wire()
    assert st["phase"] == "Failed" and plan.apply == [] and cond(st, "Admitted")["reason"] == "NotAllowed"
    assert st["message"].startswith("spec.volumes[0].hostPath: volume type hostPath is not allowed")
    no_pvcs = replace(config, policy=PodPolicy(allowed_volume_types=("configMap",)))
    plan = decide_pool(PoolObserved(body=sglangpool(model={"pvc": {"claimName": "m"}})), no_pvcs)
    assert plan.status.wire()["message"].startswith("spec.model.pvc: volume type persistentVolumeClaim is not allowed")
    # Within the policy: Admitted and ConfigValid are True, and the children are built.
    ok = decide_pool(PoolObserved(body=sglangpool(volumes=[{"name": "cache", "emptyDir": {}}])), config)
    assert ok.apply and cond(ok.status.wire(), "Admitted")["status"] == "True"
    assert cond(ok.status.wire(), "ConfigValid")["status"] == "True" and not ok.events
