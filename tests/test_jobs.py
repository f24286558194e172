"""Which job runs on each accelerator: the kubelet's pod-resources API over a real gRPC server
on a unix socket (the generated podresources/v1 servicer), Slurm jobs from real
/proc/<pid>/cgroup texts (tests/data/slurm, sources in cgroups.source), through the NVML source
(the H100 capture's UUIDs) and the npu-smi source (the 910B3 capture's process table).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent.accelerators import podresources_pb2, podresources_pb2_grpc
from agent.accelerators.config import AcceleratorSettings, JobSettings
from agent.accelerators.job_energy import JobEnergy
from agent.accelerators.jobs import JobFinder
from agent.accelerators.kubelet import Container, KubeletError, PodResources
from agent.accelerators.npu_smi import NpuSmiSource
from agent.accelerators.nvml import NvmlSource
from agent.accelerators.slurm import CgroupError, job_of_pid, slurm_job
from agent.accelerators.sources import job_totals, with_jobs
from telemetry.lineproto import encode, parse_line
from telemetry.sample import Sample
from telemetry.schema import schema
from tests.nvml_fake import FakeNvml

ROOT = Path(__file__).parent.parent
DATA = Path(__file__).parent / "data"
SLURM = DATA / "slurm"
NVML_CAPTURE = DATA / "nvml" / "h100-nvidia-smi-q.txt"
GPU0 = "GPU-b42dd28e-ffdd-8720-1df0-98bd8cdc05b1"  # the capture's first H100
GPU1 = "GPU-7c3cadbd-17e5-0913-f69b-c618122ea0cd"
# `npu-smi info` on 8 x 910B3: the process on NPU 0 and on NPU 2, from its process table
PID_NPU0, PID_NPU2 = 1067983, 1073093
TAGS = {"site": "hub", "room": "hall-2", "row": "B", "rack": "B07", "host": "gpu-b07-03"}


def pod(namespace: str, name: str, container: str, resource: str, *ids: str) -> Any:
    devices = podresources_pb2.ContainerDevices(resource_name=resource, device_ids=ids)
    return podresources_pb2.PodResources(
        name=name,
        namespace=namespace,
        containers=[podresources_pb2.ContainerResources(name=container, devices=[devices])],
    )


class Kubelet(podresources_pb2_grpc.PodResourcesListerServicer):
    """The kubelet's side of podresources/v1 List, answering with `pods`."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket
        self.pods: list[Any] = []
        self.calls = 0

    def List(self, request: Any, context: Any) -> Any:  # the RPC's name
        self.calls += 1
        return podresources_pb2.ListPodResourcesResponse(pod_resources=self.pods)


@pytest.fixture
def kubelet(tmp_path: Path) -> Iterator[Kubelet]:
    servicer = Kubelet(tmp_path / "kubelet.sock")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    podresources_pb2_grpc.add_PodResourcesListerServicer_to_server(servicer, server)
    assert server.add_insecure_port(f"unix:{servicer.socket}") > 0
    server.start()
    yield servicer
    server.stop(grace=None)


def cgroups(root: Path, texts: dict[int, str]) -> Path:
    """A /proc-shaped tree: <root>/<pid>/cgroup holding each text."""
    for pid, name in texts.items():
        (root / str(pid)).mkdir(parents=True)
        shutil.copy(SLURM / name, root / str(pid) / "cgroup")
    return root


# --- the generated podresources/v1 modules -----------------------------------------------------


def test_generated_modules_match_the_proto(tmp_path: Path) -> None:
    source = "agent/accelerators/podresources.proto"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            str(ROOT),
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            str(ROOT / source),
        ],
        check=True,
    )
    for generated in ("podresources_pb2.py", "podresources_pb2.pyi", "podresources_pb2_grpc.py"):
        fresh = (tmp_path / "agent" / "accelerators" / generated).read_text(encoding="utf-8")
        committed = (ROOT / "agent" / "accelerators" / generated).read_text(encoding="utf-8")
        assert fresh == committed, f"{generated} is stale: regenerate it from {source}"


# --- Slurm jobs from /proc/<pid>/cgroup --------------------------------------------------------


@pytest.mark.parametrize(
    ("recording", "job"),
    [("cgroup_v2_job_840392.txt", "840392"), ("cgroup_v1_job_280678.txt", "280678")],
)
def test_slurm_job_from_a_real_cgroup_text(recording: str, job: str) -> None:
    assert slurm_job((SLURM / recording).read_text()) == job


def test_a_process_in_no_job_has_none() -> None:
    # this test's own process, through the real /proc: not a Slurm step on this machine
    assert job_of_pid(os.getpid(), Path("/proc")) is None
    assert slurm_job("0::/kubepods.slice/kubepods-burstable.slice/cri-containerd-1.scope\n") is None


def test_a_process_that_has_ended_has_no_job(tmp_path: Path) -> None:
    assert job_of_pid(PID_NPU0, tmp_path) is None


def test_a_text_that_is_not_a_cgroup_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "cgroup").write_text("0::/system.slice\ngarbage\n")
    with pytest.raises(CgroupError, match=r"42/cgroup: line 2: 'garbage' is not"):
        job_of_pid(42, tmp_path)


# --- Kubernetes pods from the kubelet ----------------------------------------------------------


async def test_the_kubelet_names_the_container_of_each_device(kubelet: Kubelet) -> None:
    kubelet.pods = [
        pod("train", "llama-70b-0", "trainer", "nvidia.com/gpu", GPU0),
        pod("infer", "glm-0", "vllm", "huawei.com/Ascend910", "Ascend910-2", "Ascend910-3"),
        pod("kube-system", "cpu-only", "app", "cpu.example/none", "x"),
    ]
    pods = PodResources(str(kubelet.socket), JobSettings().resources, timeout_s=5)
    try:
        found = await pods.containers()
    finally:
        pods.close()
    assert found == {
        GPU0: Container("train", "llama-70b-0", "trainer"),
        "huawei:2": Container("infer", "glm-0", "vllm"),
        "huawei:3": Container("infer", "glm-0", "vllm"),
    }


async def test_a_kubelet_that_does_not_answer_is_named_and_counted(tmp_path: Path) -> None:
    socket = tmp_path / "no-kubelet.sock"
    finder = JobFinder(JobSettings(kubelet_socket=str(socket), timeout_s=1))
    try:
        with pytest.raises(KubeletError, match=rf"kubelet pod-resources at {socket}: UNAVAILABLE"):
            await finder.pods.containers()  # type: ignore[union-attr]
        lookup = await finder.lookup()
    finally:
        finder.close()
    assert finder.failures == {"kubelet": 1}
    # unknown is not idle: no `job` field at all, rather than a claim that the card is free
    assert lookup.fields([GPU0], []) == {}


# --- through the NVML source -------------------------------------------------------------------


async def test_gpus_carry_their_pod_and_a_free_gpu_says_so(kubelet: Kubelet) -> None:
    kubelet.pods = [pod("train", "llama-70b-0", "trainer", "nvidia.com/gpu", GPU0)]
    finder = JobFinder(JobSettings(kubelet_socket=str(kubelet.socket)))
    source = NvmlSource(TAGS, nvml=FakeNvml(NVML_CAPTURE.read_text()), jobs=finder)
    try:
        samples = await source.collect()
    finally:
        finder.close()
    cards = {s.tags["uuid"]: s for s in samples if s.measurement == "accelerator"}
    assert {k: cards[GPU0].fields[k] for k in ("job", "k8s_namespace", "k8s_pod")} == {
        "job": "k8s:train/llama-70b-0",
        "k8s_namespace": "train",
        "k8s_pod": "llama-70b-0",
    }
    assert cards[GPU0].fields["k8s_container"] == "trainer"
    assert cards[GPU1].fields["job"] == ""
    assert "k8s_pod" not in cards[GPU1].fields
    assert parse_line(encode(cards[GPU0])) == cards[GPU0]
    assert kubelet.calls == 1  # once per poll, not once per card


async def test_a_gpu_carries_the_slurm_job_of_its_processes(tmp_path: Path) -> None:
    proc = cgroups(tmp_path / "proc", {4242: "cgroup_v2_job_840392.txt"})
    nvml = FakeNvml(NVML_CAPTURE.read_text(), processes={1: [4242]})
    finder = JobFinder(JobSettings(slurm=True, proc_root=str(proc)))
    source = NvmlSource(TAGS, nvml=nvml, jobs=finder)  # no slow interval: pids every poll

    samples = await source.collect()

    cards = {s.tags["uuid"]: s for s in samples if s.measurement == "accelerator"}
    assert (cards[GPU1].fields["job"], cards[GPU1].fields["slurm_job_id"]) == (
        "slurm:840392",
        "840392",
    )
    assert cards[GPU1].fields["processes"] == 1
    assert (cards[GPU0].fields["job"], cards[GPU0].fields["processes"]) == ("", 0)


# --- through the npu-smi source ----------------------------------------------------------------


@pytest.fixture
def npu_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tests/data/npu_smi/npu-smi on PATH, answering `info` with the 8 x 910B3 recording."""
    scenario = tmp_path / "npu-smi"
    scenario.mkdir()
    monkeypatch.setenv("PATH", f"{DATA / 'npu_smi'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_NPU_SMI_DIR", str(scenario))
    shutil.copy(DATA / "npu_smi" / "info_910b3_x8.txt", scenario / "info.txt")
    for npu in range(8):
        (scenario / f"info_-t_board_-i_{npu}_-c_0.fail").write_text("Permission denied\n")
    return scenario


async def test_npus_carry_pods_and_slurm_jobs_and_an_unreadable_cgroup_is_counted(
    npu_smi: Path, kubelet: Kubelet, tmp_path: Path
) -> None:
    kubelet.pods = [pod("infer", "glm-0", "vllm", "huawei.com/Ascend910", "Ascend910-5")]
    proc = cgroups(
        tmp_path / "proc",
        {PID_NPU0: "cgroup_v1_job_280678.txt", PID_NPU2: "cgroup_v2_job_840392.txt"},
    )
    (proc / "1070524" / "cgroup").mkdir(parents=True)  # NPU 1's process: unreadable
    settings = JobSettings(kubelet_socket=str(kubelet.socket), slurm=True, proc_root=str(proc))
    finder = JobFinder(settings)
    source = NpuSmiSource(TAGS, timeout_s=5, jobs=finder)
    try:
        samples = await source.collect()
    finally:
        finder.close()

    jobs = {s.tags["index"]: s.fields["job"] for s in samples}
    assert jobs == {
        "0": "slurm:280678",
        "1": "",  # its one process's cgroup could not be read: counted, not guessed
        "2": "slurm:840392",
        "3": "",
        "4": "",  # the process ended (no /proc entry): no job
        "5": "k8s:infer/glm-0",
        "6": "",
        "7": "",
    }
    assert finder.failures == {"cgroup": 1}


# --- per job -----------------------------------------------------------------------------------


def test_one_accelerator_job_sample_per_job_with_its_cards_and_power() -> None:
    def card(index: int, job: str, power_w: float) -> Sample:
        tags = {**TAGS, "vendor": "nvidia", "index": str(index)}
        return Sample("accelerator", tags, {"job": job, "power_w": power_w, "util_pct": 50.0}, 1)

    samples = [card(0, "slurm:7", 700.0), card(1, "slurm:7", 650.0), card(2, "", 90.0)]
    (total,) = job_totals(samples, TAGS)
    assert total.measurement == "accelerator_job"
    assert dict(total.tags) == {**TAGS, "vendor": "nvidia", "job": "slurm:7"}
    assert dict(total.fields) == {"cards": 2, "power_w": 1350.0, "util_pct": 50.0}


def test_the_config_takes_a_jobs_section() -> None:
    settings = AcceleratorSettings.model_validate(
        {"jobs": {"kubelet_socket": "/var/lib/kubelet/pod-resources/kubelet.sock", "slurm": True}}
    )
    assert settings.jobs is not None
    assert settings.jobs.resources[0] == "nvidia.com/gpu"


async def test_job_fields_and_samples_keep_to_the_schema(kubelet: Kubelet, tmp_path: Path) -> None:
    kubelet.pods = [pod("train", "llama-70b-0", "trainer", "nvidia.com/gpu", GPU0)]
    proc = cgroups(tmp_path / "proc", {4242: "cgroup_v1_job_280678.txt"})
    nvml = FakeNvml(NVML_CAPTURE.read_text(), processes={1: [4242]})
    settings = JobSettings(kubelet_socket=str(kubelet.socket), slurm=True, proc_root=str(proc))
    finder = JobFinder(settings)
    source = NvmlSource(TAGS, nvml=nvml, jobs=finder)
    try:
        samples = await with_jobs(source.collect, finder, TAGS)()
    finally:
        finder.close()

    by_measurement = {s.measurement: s for s in samples}
    assert by_measurement["accelerator_host"].fields["job_kubelet_failures_total"] == 0
    jobs = sorted(s.tags["job"] for s in samples if s.measurement == "accelerator_job")
    assert jobs == ["k8s:train/llama-70b-0", "slurm:280678"]
    problems = sorted({p for s in samples for p in schema().sample_problems(s, ())})
    assert problems == []


# --- energy per job ----------------------------------------------------------------------------


def card_at(seconds: float, job: str, **fields: float) -> Sample:
    tags = {**TAGS, "vendor": "nvidia", "index": "0"}
    return Sample("accelerator", tags, {"job": job, **fields}, int(seconds * 1e9))


def test_a_jobs_energy_is_its_cards_power_over_time_without_a_counter() -> None:
    energy = JobEnergy(max_gap_s=30)
    energy.add([card_at(0, "slurm:7", power_w=700.0)])
    energy.add([card_at(10, "slurm:7", power_w=700.0)])
    energy.add([card_at(20, "slurm:7", power_w=650.0)])
    assert energy.joules == {("nvidia", "slurm:7"): 7000.0 + 6500.0}
    energy.add([card_at(120, "slurm:7", power_w=700.0)])  # after a 100 s gap: no guess
    assert energy.joules[("nvidia", "slurm:7")] == 13500.0


def test_a_jobs_energy_comes_from_the_energy_counter_where_the_card_has_one() -> None:
    energy = JobEnergy()
    energy.add([card_at(0, "k8s:train/a", power_w=700.0, energy_j=1_000_000.0)])
    energy.add([card_at(10, "k8s:train/a", power_w=700.0)])  # between counter readings
    energy.add([card_at(60, "k8s:train/a", power_w=700.0, energy_j=1_042_000.0)])
    assert energy.joules == {("nvidia", "k8s:train/a"): 42_000.0}
    # another job on the card starts from its own first reading
    energy.add([card_at(120, "slurm:8", power_w=300.0, energy_j=1_060_000.0)])
    energy.add([card_at(180, "slurm:8", power_w=300.0, energy_j=1_078_000.0)])
    assert energy.joules[("nvidia", "slurm:8")] == 18_000.0
    assert energy.joules[("nvidia", "k8s:train/a")] == 42_000.0


def test_a_finished_job_is_forgotten() -> None:
    energy = JobEnergy(forget_after_s=600)
    energy.add([card_at(0, "slurm:7", power_w=700.0)])
    energy.add([card_at(700, "slurm:9", power_w=100.0)])
    assert set(energy.joules) == {("nvidia", "slurm:9")}
