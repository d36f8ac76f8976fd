"""``autotune k8s``: the manifests that run a study on a Kubernetes cluster, read back through
the official client's own deserialiser, as the API server would take them."""
from __future__ import annotations

import importlib.util
import stat
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from autotune.cli import main
from autotune.spec import load_spec

URL = "postgresql://tuner:s3cr3t-pw@db.example:5432/autotune"
needs_client = pytest.mark.skipif(importlib.util.find_spec("kubernetes") is None,
                                  reason='the kubernetes client is not installed: pip install -e ".[test]"')


def from_manifest(doc: dict):
    """One YAML document as the client's model: its deserialiser, the one place this test relies
    on a private name (public ``deserialize`` changed its arguments between client versions)."""
    from kubernetes.client import ApiClient
    return ApiClient()._ApiClient__deserialize(doc, f"V1{doc['kind']}")


def study_files(tmp_path: Path) -> Path:
    """A study in studies/ whose search space is ../search_spaces/, as in this repository."""
    (tmp_path / "studies").mkdir()
    (tmp_path / "search_spaces").mkdir()
    (tmp_path / "search_spaces" / "small.yaml").write_text(
        "# the space\nlr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n")
    study = tmp_path / "studies" / "small.yaml"
    study.write_text("# a study\nstudy: small\nstorage: sqlite:///autotune.db\n"
                     "space: ../search_spaces/small.yaml\n"
                     "objectives: [{metric: val_loss, direction: minimize}]\n"
                     "parallel: {gpus: auto}\n")
    return study


def k8s(tmp_path: Path, *args: str, study: Path | None = None):
    study = study or study_files(tmp_path)
    out = tmp_path / "study-k8s.yaml"
    result = CliRunner().invoke(main, ["k8s", str(study), "--storage", URL, "--out", str(out), *args])
    return result, out


def objects(out: Path) -> dict:
    return {doc["kind"]: from_manifest(doc) for doc in yaml.safe_load_all(out.read_text())}


@needs_client
def test_job_runs_n_indexed_pods_of_autotune_worker_that_create_the_study(tmp_path):
    result, out = k8s(tmp_path, "--pods", "3", "--image", "registry.example.com/ml/autotune:0.1.0")
    assert result.exit_code == 0, result.output
    job = objects(out)["Job"]
    assert (job.spec.completion_mode, job.spec.parallelism, job.spec.completions) == ("Indexed", 3, 3)
    (worker,) = job.spec.template.spec.containers
    assert worker.image == "registry.example.com/ml/autotune:0.1.0"
    assert worker.command + worker.args == ["autotune", "worker", "/autotune/studies/small.yaml",
                                            "--storage", "$(AUTOTUNE_STORAGE)", "--create", "--no-live"]


@needs_client
def test_each_pod_requests_its_gpus_and_cpu_and_memory_sized_from_them(tmp_path):
    result, out = k8s(tmp_path, "--gpus-per-pod", "4")
    assert result.exit_code == 0, result.output
    res = objects(out)["Job"].spec.template.spec.containers[0].resources
    assert res.limits == {"nvidia.com/gpu": "4", "cpu": "32", "memory": "64Gi"}
    assert res.requests == {"nvidia.com/gpu": "4", "cpu": "16", "memory": "64Gi"}


@needs_client
def test_cpu_pods_request_no_gpu(tmp_path):
    study = study_files(tmp_path)
    study.write_text(study.read_text().replace("gpus: auto", "gpus: 0"))
    result, out = k8s(tmp_path, "--gpus-per-pod", "0", study=study)
    assert result.exit_code == 0, result.output
    spec = objects(out)["Job"].spec.template.spec
    assert "nvidia.com/gpu" not in spec.containers[0].resources.limits and not spec.tolerations


@needs_client
def test_the_store_url_is_only_in_the_secret_and_the_pods_read_it_from_there(tmp_path):
    result, out = k8s(tmp_path)
    assert result.exit_code == 0, result.output
    docs = list(yaml.safe_load_all(out.read_text()))
    assert [URL in yaml.safe_dump(d) for d in docs] == [d["kind"] == "Secret" for d in docs]
    assert "s3cr3t-pw" not in out.read_text().split("kind: Secret")[0]   # nor in the header
    found = objects(out)
    assert found["Secret"].string_data == {"url": URL}
    (env,) = [e for e in found["Job"].spec.template.spec.containers[0].env if e.name == "AUTOTUNE_STORAGE"]
    assert (env.value, env.value_from.secret_key_ref.name) == (None, found["Secret"].metadata.name)


@needs_client
def test_the_manifest_file_is_private_and_the_output_says_so_without_the_password(tmp_path):
    result, out = k8s(tmp_path)
    assert result.exit_code == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert "s3cr3t-pw" not in result.output and "tuner:***@db.example" in result.output
    assert "Secret" in result.output and "kubectl apply -f" in result.output


@needs_client
def test_the_config_map_holds_the_study_and_its_space_mounted_so_the_relative_path_resolves(tmp_path):
    result, out = k8s(tmp_path)
    assert result.exit_code == 0, result.output
    found = objects(out)
    data = found["ConfigMap"].data
    assert data["study.yaml"] == (tmp_path / "studies" / "small.yaml").read_text()
    assert data["space.yaml"] == (tmp_path / "search_spaces" / "small.yaml").read_text()
    (volume,) = [v for v in found["Job"].spec.template.spec.volumes if v.name == "study"]
    assert volume.config_map.name == found["ConfigMap"].metadata.name
    pod = tmp_path / "pod" / "autotune"           # the volume as the pod sees it at /autotune
    for item in volume.config_map.items:
        (pod / item.path).parent.mkdir(parents=True, exist_ok=True)
        (pod / item.path).write_text(data[item.key])
    assert load_spec(pod / "studies" / "small.yaml").space.names == ("lr",)


@needs_client
def test_stops_that_lose_nothing_do_not_count_as_failures_and_others_do(tmp_path):
    result, out = k8s(tmp_path, "--pods", "2")
    assert result.exit_code == 0, result.output
    spec = objects(out)["Job"].spec
    assert spec.template.spec.restart_policy == "Never" and spec.backoff_limit == 6
    ignored = [r for r in spec.pod_failure_policy.rules if r.action == "Ignore"]
    assert {c.type for r in ignored for c in r.on_pod_conditions or []} == {"DisruptionTarget"}
    assert [r.on_exit_codes.values for r in ignored if r.on_exit_codes] == [[130]]
    assert spec.ttl_seconds_after_finished > 0


@needs_client
def test_namespace_goes_on_every_object(tmp_path):
    result, out = k8s(tmp_path, "--namespace", "tuning")
    assert result.exit_code == 0, result.output
    assert {o.metadata.namespace for o in objects(out).values()} == {"tuning"}


@needs_client
def test_an_existing_output_is_kept_unless_forced(tmp_path):
    (tmp_path / "study-k8s.yaml").write_text("mine")
    result, out = k8s(tmp_path)
    assert result.exit_code == 2 and "--force" in result.output and out.read_text() == "mine"


@pytest.mark.parametrize("args, message", [
    (["--pods", "0"], "--pods 0"),
    (["--gpus-per-pod", "-1"], "--gpus-per-pod -1"),
    (["--image", "Registry/Has Spaces"], "--image"),
    (["--image", "team/UPPER:1"], "--image"),
    (["--namespace", "Not_A_Name"], "--namespace"),
])
def test_bad_options_exit_2_with_a_message(tmp_path, args, message):
    result, out = k8s(tmp_path, *args)
    assert result.exit_code == 2 and message in result.output and not out.exists()
    assert "Traceback" not in result.output


def test_a_sqlite_store_is_refused_because_pods_cannot_share_it(tmp_path, monkeypatch):
    monkeypatch.delenv("AUTOTUNE_STORAGE", raising=False)
    study = study_files(tmp_path)
    result = CliRunner().invoke(main, ["k8s", str(study), "--out", str(tmp_path / "o.yaml")])
    assert result.exit_code == 2 and "SQLite" in result.output


def test_a_study_file_with_a_password_is_refused_because_config_maps_are_not_secret(tmp_path):
    study = study_files(tmp_path)
    study.write_text(study.read_text().replace("sqlite:///autotune.db", URL))
    result, out = k8s(tmp_path, study=study)
    assert result.exit_code == 2 and "password" in result.output and "s3cr3t-pw" not in result.output


@pytest.mark.parametrize("content", [None, "study: [unclosed\n", "objectives: []\n"])
def test_a_missing_or_invalid_study_exits_2(tmp_path, content):
    study = tmp_path / "bad.yaml"
    if content is not None:
        study.write_text(content)
    result, _ = k8s(tmp_path, study=study)
    assert result.exit_code == 2 and "bad.yaml" in result.output and "Traceback" not in result.output


def test_without_the_kubernetes_client_it_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "kubernetes", None)   # import kubernetes -> ImportError
    result, out = k8s(tmp_path)
    assert result.exit_code == 2 and 'pip install "autotune[k8s]"' in result.output
    assert not out.exists()


def test_help_has_an_example():
    result = CliRunner().invoke(main, ["k8s", "--help"])
    assert result.exit_code == 0 and "Example" in result.output and "kubectl apply" in result.output


@needs_client
def test_the_store_url_may_come_from_the_environment_rather_than_the_command_line(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOTUNE_STORAGE", URL)
    out = tmp_path / "o.yaml"
    result = CliRunner().invoke(main, ["k8s", str(study_files(tmp_path)), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert objects(out)["Secret"].string_data == {"url": URL}


def test_object_names_are_kubernetes_names_made_from_the_study_name():
    from autotune.k8s import resource_name
    assert resource_name("MoE_Small v2") == "autotune-moe-small-v2"
    assert len(resource_name("x" * 200)) <= 49 and resource_name("__") == "autotune-study"


@needs_client
def test_a_cpu_study_on_gpu_pods_gets_a_note_that_the_gpus_would_sit_idle(tmp_path):
    study = study_files(tmp_path)
    study.write_text(study.read_text().replace("gpus: auto", "gpus: 0"))
    result, _ = k8s(tmp_path, "--gpus-per-pod", "2", study=study)
    assert result.exit_code == 0 and "would sit idle" in result.output


@needs_client
@pytest.mark.postgres
@pytest.mark.slow      # two workers start torch on a 2-core CPU: ~30 s
def test_pods_started_at_once_create_one_study_and_together_finish_its_budget(tmp_path):
    """Each pod's command run as the kubelet would: the files where the ConfigMap puts them,
    $(AUTOTUNE_STORAGE) expanded from the Secret."""
    import os
    import subprocess
    import uuid

    import optuna
    pg_url = os.environ.get("AUTOTUNE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
    name = f"k8s-{uuid.uuid4().hex[:8]}"
    study = tmp_path / f"{name}.yaml"
    study.write_text(yaml.safe_dump({
        "study": name, "space": {"x": {"type": "float", "low": 0.0, "high": 1.0},
                                 "kind": {"type": "categorical", "choices": ["a", "b"]}},
        "objectives": [{"metric": "val_loss", "direction": "minimize"}],
        "optimizer": {"kind": "random", "seed": 0}, "budget": {"trials": 4},
        "parallel": {"gpus": 0, "workers": 1}, "objective": "tests.user_objectives:quadratic",
        "trainer": {"steps": 4}}))
    out = tmp_path / "k8s.yaml"
    result = CliRunner().invoke(main, ["k8s", str(study), "--storage", pg_url, "--pods", "2",
                                       "--gpus-per-pod", "0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    found = objects(out)
    mount = tmp_path / "pod"
    for item in found["Job"].spec.template.spec.volumes[0].config_map.items:
        (mount / item.path).parent.mkdir(parents=True, exist_ok=True)
        (mount / item.path).write_text(found["ConfigMap"].data[item.key])
    worker = found["Job"].spec.template.spec.containers[0]
    env = {e.name: e.value for e in worker.env if e.value is not None}
    env["AUTOTUNE_STORAGE"] = found["Secret"].string_data["url"]
    argv = [a.replace("$(AUTOTUNE_STORAGE)", env["AUTOTUNE_STORAGE"]).replace("/autotune/", f"{mount}/")
            for a in worker.args]
    env["AUTOTUNE_COMPILE_CACHE"] = str(tmp_path / "cache")
    repo = Path(__file__).resolve().parents[1]
    pods = [subprocess.Popen([sys.executable, "-m", "autotune", *argv], cwd=repo, text=True,
                             env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            for _ in range(2)]
    outputs = [p.communicate(timeout=240)[0] for p in pods]
    if any("cannot be opened" in o for o in outputs) and not os.environ.get("CI"):
        pytest.skip(f"no PostgreSQL at {pg_url}")
    assert [p.returncode for p in pods] == [0, 0], outputs
    try:
        states = [t.state.name for t in optuna.load_study(study_name=name, storage=pg_url).get_trials()]
        assert states.count("COMPLETE") == 4
    finally:
        optuna.delete_study(study_name=name, storage=pg_url)


def test_an_absolute_space_path_is_refused_because_the_pods_do_not_have_it(tmp_path):
    study = study_files(tmp_path)
    space = tmp_path / "search_spaces" / "small.yaml"
    study.write_text(study.read_text().replace("../search_spaces/small.yaml", str(space)))
    result, out = k8s(tmp_path, study=study)
    assert result.exit_code == 2 and "relative to the study file" in result.output and not out.exists()


@needs_client
def test_a_study_name_cannot_add_lines_to_the_manifest(tmp_path):
    study = study_files(tmp_path)
    study.write_text(study.read_text().replace("study: small", 'study: "x\\nkind: Namespace"'))
    result, out = k8s(tmp_path, study=study)
    assert result.exit_code == 0, result.output
    assert sorted(objects(out)) == ["ConfigMap", "Job", "Secret"]
    assert "\nkind: Namespace" not in out.read_text().split("apiVersion")[0]
