"""Kubernetes manifests that run a study's workers on a cluster (``autotune k8s``).

Owns: the plan (which files the pods need and where they are mounted, how many pods, GPUs and
resources each, the image, the names) and one builder per object: a ConfigMap with the study file
(and its search-space file), a Secret with the store URL, an Indexed Job of pods that run
``autotune worker --create``. The objects are the official ``kubernetes`` client's models (an
optional extra, ``pip install "autotune[k8s]"``), written as multi-document YAML.
Must not know about: the model, Optuna, how the scheduler runs trials (only its contract: a dead
worker's trials are failed after ``grace_period`` and retried by any live process; exit code 130
means it stopped and re-queued its trials).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from autotune import __version__
from autotune.spec_types import StudySpec

INSTALL_HINT = 'pip install "autotune[k8s]" (or: pip install kubernetes)'
MOUNT = "/autotune"              # the ConfigMap's files, laid out as beside the study file
SCRATCH = "/scratch"             # writable working folder and compile cache of each pod
CONTAINER = "worker"
SECRET_KEY = "url"
STUDY_KEY, SPACE_KEY = "study.yaml", "space.yaml"
DEFAULT_IMAGE = f"autotune:{__version__}"

# Per GPU of a pod (a pod without GPUs counts as one): the worker runs one slot process per GPU
# (torch, a CUDA context, the batch pipeline, compile workers). Memory request = limit: it cannot
# be throttled, so a pod gets what it may use; CPU may burst to twice its request.
CPU_REQUEST_PER_GPU, CPU_LIMIT_PER_GPU, MEMORY_GIB_PER_GPU, SHM_GIB_PER_GPU = 4, 8, 16, 1
# A pod fails only when its worker process dies, not a trial (trials run in slot processes). Its
# running trials lose nothing: failed after grace_period and retried (up to max_retries) by any
# live worker. So a failed pod is just replaced, a few times each: enough for a store still
# starting (pod back-off 10 s, 20 s, 40 s), while a study that cannot run stops its Job.
FAILURES_PER_POD = 3
TTL_AFTER_FINISHED_S = 24 * 3600   # a day to read the pods' logs; the results are in the store
TERMINATION_GRACE_S = 60           # SIGTERM: the worker re-queues its running trials and exits 130
EXIT_INTERRUPTED = 130

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::[0-9]+)?"
_IMAGE = re.compile(rf"^(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?"
                    r"(?:@sha256:[0-9a-f]{64})?$")


class K8sError(Exception):
    """Input that cannot become manifests: the message says what and how to fix it."""


class ClientMissing(K8sError):
    """The ``kubernetes`` package (the ``k8s`` extra) is not installed."""


@dataclass(frozen=True)
class Plan:
    name: str                       # of the Job; the ConfigMap and Secret add -study, -storage
    study: str
    storage_url: str
    files: tuple[tuple[str, str, str], ...]   # (ConfigMap key, path under MOUNT, text)
    pods: int
    gpus_per_pod: int
    image: str
    namespace: str | None

    @property
    def study_path(self) -> str:
        return f"{MOUNT}/{self.files[0][1]}"


def plan(spec: StudySpec, *, pods: int, gpus_per_pod: int, image: str | None,
         namespace: str | None) -> Plan:
    """Check everything the manifests depend on; raises K8sError for bad input."""
    from autotune.store import mask_secrets, mask_url, sqlite_path
    if pods < 1:
        raise K8sError(f"--pods {pods}: give at least 1 pod")
    if gpus_per_pod < 0:
        raise K8sError(f"--gpus-per-pod {gpus_per_pod}: give 0 (CPU pods) or more")
    image = image or DEFAULT_IMAGE
    if not _IMAGE.match(image):
        raise K8sError(f"--image {image!r} is not an image reference such as "
                       "registry.example.com/team/autotune:0.1.0 (lower case, no spaces)")
    if namespace is not None and not (len(namespace) <= 63 and re.fullmatch(_LABEL, namespace)):
        raise K8sError(f"--namespace {namespace!r}: lower-case letters, digits and '-', at most 63")
    url = spec.storage
    if url.startswith("sqlite") or sqlite_path(url) is not None:
        raise K8sError(f"storage {mask_url(url)}: pods cannot share a SQLite file; give the "
                       "PostgreSQL they all reach, e.g. --storage postgresql://tuner@db-host/autotune")
    files = _files(spec)
    for _, path, text in files:
        if mask_secrets(text) != text:
            raise K8sError(f"{path}: holds a password, and a ConfigMap is not secret; take it out "
                           "of the file (the pods read the store URL from a Secret)")
    return Plan(name=resource_name(spec.study), study=spec.study, storage_url=url, files=files,
                pods=pods, gpus_per_pod=gpus_per_pod, image=image, namespace=namespace)


def _files(spec: StudySpec) -> tuple[tuple[str, str, str], ...]:
    """The study file and the search-space file it names, at paths relative to their closest
    common folder: mounted that way, ``space: ../search_spaces/x.yaml`` resolves in the pod too."""
    study_file = Path(os.path.abspath(spec.path))   # paths as the pod will see them: no links
    text = study_file.read_text()
    raw = yaml.safe_load(text)
    ref = raw.get("space") if isinstance(raw, dict) else None
    found = [(STUDY_KEY, study_file, text)]
    if isinstance(ref, str):
        if Path(ref).is_absolute():
            raise K8sError(f"{spec.path}: space: {ref} is an absolute path, which the pods do not "
                           "have; give it relative to the study file")
        space_file = Path(os.path.normpath(study_file.parent / ref))
        found.append((SPACE_KEY, space_file, (study_file.parent / ref).resolve().read_text()))
    root = Path(os.path.commonpath([f.parent for _, f, _ in found]))
    return tuple((key, f.relative_to(root).as_posix(), t) for key, f, t in found)


def resource_name(study: str) -> str:
    """``autotune-<study>`` as a Kubernetes name (lower case, '-', short enough for pod names)."""
    slug = re.sub(r"[^a-z0-9]+", "-", study.lower()).strip("-")[:40].strip("-")
    return f"autotune-{slug or 'study'}"


def notes(spec: StudySpec, p: Plan) -> list[str]:
    """What the user should know about how the study will use the pods."""
    out = []
    gpus = spec.parallel.gpus
    if gpus == 0 and p.gpus_per_pod:
        out.append(f"the study runs on CPUs (parallel.gpus: 0): each pod's {p.gpus_per_pod} GPU(s) "
                   "would sit idle; pass --gpus-per-pod 0")
    elif isinstance(gpus, int) and gpus and gpus != p.gpus_per_pod:
        out.append(f"parallel.gpus: {gpus}, but each pod has {p.gpus_per_pod} GPU(s): each worker "
                   f"uses {min(gpus, p.gpus_per_pod)}; `gpus: auto` uses all of them")
    elif isinstance(gpus, (list, tuple)):
        out.append(f"parallel.gpus lists GPU numbers; a pod sees its {p.gpus_per_pod} GPU(s) as "
                   "0, 1, ...; `gpus: auto` uses all of them")
    if "data_path" in spec.trainer_dict or not spec.objective.startswith("builtin:"):
        out.append("the pods need your objective's code and data in the image "
                   "(or a volume you add to the Job)")
    return out


# --- the objects ------------------------------------------------------------------------------

def client():
    """The ``kubernetes.client`` module; ClientMissing (with how to install it) without it."""
    try:
        from kubernetes import client as k8s_client
    except ImportError:
        raise ClientMissing(f"`autotune k8s` needs the kubernetes package: {INSTALL_HINT}") from None
    return k8s_client


def _meta(p: Plan, name: str):
    labels = {"app.kubernetes.io/name": "autotune", "app.kubernetes.io/instance": p.name}
    return client().V1ObjectMeta(name=name, namespace=p.namespace, labels=labels)


def config_map(p: Plan):
    c = client()
    return c.V1ConfigMap(api_version="v1", kind="ConfigMap", metadata=_meta(p, f"{p.name}-study"),
                         data={key: text for key, _, text in p.files})


def secret(p: Plan):
    c = client()
    return c.V1Secret(api_version="v1", kind="Secret", metadata=_meta(p, f"{p.name}-storage"),
                      type="Opaque", string_data={SECRET_KEY: p.storage_url})


def resources(gpus: int) -> dict[str, dict[str, str]]:
    """Requests and limits of a pod with ``gpus`` GPUs (see the *_PER_GPU rule above)."""
    units = max(gpus, 1)
    requests = {"cpu": str(CPU_REQUEST_PER_GPU * units), "memory": f"{MEMORY_GIB_PER_GPU * units}Gi"}
    limits = {"cpu": str(CPU_LIMIT_PER_GPU * units), "memory": f"{MEMORY_GIB_PER_GPU * units}Gi"}
    if gpus:   # an extended resource: requests, where given, must equal limits
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = str(gpus)
    return {"requests": requests, "limits": limits}


def container(p: Plan):
    c = client()
    storage = c.V1EnvVar(name="AUTOTUNE_STORAGE", value_from=c.V1EnvVarSource(
        secret_key_ref=c.V1SecretKeySelector(name=f"{p.name}-storage", key=SECRET_KEY)))
    return c.V1Container(
        name=CONTAINER, image=p.image, command=["autotune"],
        # $(VAR) is expanded by the kubelet: the manifest holds the reference, never the URL;
        # --storage because a URL in the study file would win over $AUTOTUNE_STORAGE
        args=["worker", p.study_path, "--storage", "$(AUTOTUNE_STORAGE)", "--create", "--no-live"],
        env=[storage, c.V1EnvVar(name="AUTOTUNE_COMPILE_CACHE", value=f"{SCRATCH}/compile-cache"),
             c.V1EnvVar(name="PYTHONUNBUFFERED", value="1")],
        working_dir=SCRATCH,
        resources=c.V1ResourceRequirements(**resources(p.gpus_per_pod)),
        volume_mounts=[c.V1VolumeMount(name="study", mount_path=MOUNT, read_only=True),
                       c.V1VolumeMount(name="scratch", mount_path=SCRATCH),
                       c.V1VolumeMount(name="shm", mount_path="/dev/shm")])


def pod_spec(p: Plan):
    c = client()
    items = [c.V1KeyToPath(key=key, path=path) for key, path, _ in p.files]
    shm = f"{SHM_GIB_PER_GPU * max(p.gpus_per_pod, 1)}Gi"   # NCCL and torch share tensors here
    tolerations = ([c.V1Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")]
                   if p.gpus_per_pod else None)
    return c.V1PodSpec(
        restart_policy="Never", containers=[container(p)], tolerations=tolerations,
        termination_grace_period_seconds=TERMINATION_GRACE_S,
        automount_service_account_token=False,    # the worker never talks to the cluster's API
        volumes=[c.V1Volume(name="study", config_map=c.V1ConfigMapVolumeSource(name=f"{p.name}-study",
                                                                                items=items)),
                 c.V1Volume(name="scratch", empty_dir=c.V1EmptyDirVolumeSource()),
                 c.V1Volume(name="shm", empty_dir=c.V1EmptyDirVolumeSource(medium="Memory",
                                                                           size_limit=shm))])


def failure_policy():
    """Stops that lose nothing are not failures: a pod evicted, preempted or drained
    (DisruptionTarget), or a worker that exited 130 after re-queueing its trials, is replaced
    without counting toward backoffLimit. Every other failure counts."""
    c = client()
    return c.V1PodFailurePolicy(rules=[
        c.V1PodFailurePolicyRule(action="Ignore", on_pod_conditions=[
            c.V1PodFailurePolicyOnPodConditionsPattern(type="DisruptionTarget", status="True")]),
        c.V1PodFailurePolicyRule(action="Ignore", on_exit_codes=c.V1PodFailurePolicyOnExitCodesRequirement(
            container_name=CONTAINER, operator="In", values=[EXIT_INTERRUPTED]),
            on_pod_conditions=[])])   # empty, not absent: required by the schema of Kubernetes < 1.31


def job(p: Plan):
    """An Indexed Job of ``pods`` workers. Scale it by patching parallelism and completions
    together (elastic Indexed Job): pods of the highest indices go, or new indices come."""
    c = client()
    return c.V1Job(api_version="batch/v1", kind="Job", metadata=_meta(p, p.name), spec=c.V1JobSpec(
        completion_mode="Indexed", completions=p.pods, parallelism=p.pods,
        backoff_limit=FAILURES_PER_POD * p.pods, pod_failure_policy=failure_policy(),
        ttl_seconds_after_finished=TTL_AFTER_FINISHED_S,
        template=c.V1PodTemplateSpec(metadata=c.V1ObjectMeta(labels=_meta(p, p.name).labels),
                                     spec=pod_spec(p))))


def manifests(p: Plan) -> list[Any]:
    return [config_map(p), secret(p), job(p)]


class _Dumper(yaml.SafeDumper):
    pass


def _text(dumper: yaml.SafeDumper, value: str):   # files as readable | blocks
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def header(p: Plan) -> str:
    """Comment lines that open the manifest file (names quoted: a study name is any text)."""
    from autotune.store import mask_url
    return (f"# autotune k8s: study {p.study!r} in {mask_url(p.storage_url)!r}, {p.pods} pod(s) x "
            f"{p.gpus_per_pod} GPU(s)\n# holds a Secret with the store URL: keep this file private\n"
            "# kubectl apply -f THIS_FILE\n")


def to_yaml(objects: list[Any], header: str = "") -> str:
    """The objects as one multi-document YAML text, as ``kubectl apply -f`` reads it."""
    from kubernetes.client import ApiClient
    docs = [ApiClient().sanitize_for_serialization(o) for o in objects]
    return header + yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, allow_unicode=True)
