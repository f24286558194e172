"""Which Kubernetes pod holds each accelerator: the kubelet's pod-resources API.

One `List` call over the kubelet's unix socket (podresources/v1, agent/accelerators/
podresources.proto) returns every pod on the node with the device ids its containers were given:
GPU UUIDs for `nvidia.com/gpu` (MIG UUIDs with MIG), chip names such as `Ascend910-3` for
Huawei's `huawei.com/Ascend*` resources, where the number is the chip's physical id. grpcio is
imported only when a config names the socket, so hosts without Kubernetes do not need it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
MESSAGE_LIMIT_BYTES = 16 * 1024 * 1024  # the kubelet's own limit on a pod-resources answer
_NUMBERED = re.compile(r".*-(\d+)")  # "Ascend910-3": the chip's physical id


@dataclass(frozen=True, slots=True)
class Container:
    namespace: str
    pod: str
    container: str


class KubeletError(Exception):
    """The kubelet could not be asked; the message names the socket and the problem."""


def device_key(resource: str, device_id: str) -> str:
    """The key a card is found under: NVIDIA's UUIDs as they are, Huawei's chip names by
    number ("huawei:3"), as npu-smi prints the chip's number, not the plugin's name."""
    if resource.startswith("huawei.com/"):
        numbered = _NUMBERED.fullmatch(device_id)
        if numbered:
            return f"huawei:{int(numbered[1])}"
    return device_id


def containers_by_device(response: Any, resources: Iterable[str]) -> dict[str, Container]:
    """Device key -> the container it is given to, from a ListPodResourcesResponse."""
    wanted = frozenset(resources)
    found: dict[str, Container] = {}
    for pod in response.pod_resources:
        for container in pod.containers:
            for devices in container.devices:
                if devices.resource_name not in wanted:
                    continue
                holder = Container(pod.namespace, pod.name, container.name)
                for device_id in devices.device_ids:
                    found[device_key(devices.resource_name, device_id)] = holder
    return found


class PodResources:
    """Asks the kubelet at `socket` which container holds which device, once per call."""

    def __init__(self, socket: str, resources: Iterable[str], timeout_s: float) -> None:
        try:
            import grpc  # only here: a host without Kubernetes needs no grpcio
        except ImportError:
            raise KubeletError(
                f"accelerators.jobs.kubelet_socket ({socket}) needs grpcio: pip install grpcio"
            ) from None
        from agent.accelerators import podresources_pb2, podresources_pb2_grpc

        self.socket = socket
        self.resources = tuple(resources)
        self.timeout_s = timeout_s
        self._grpc = grpc
        self._request = podresources_pb2.ListPodResourcesRequest()
        self._channel = grpc.insecure_channel(
            f"unix://{socket}", options=[("grpc.max_receive_message_length", MESSAGE_LIMIT_BYTES)]
        )
        self._stub = podresources_pb2_grpc.PodResourcesListerStub(self._channel)

    async def containers(self) -> Mapping[str, Container]:
        """Device key -> container. Raises KubeletError naming the socket and the problem."""
        return await asyncio.to_thread(self._list)

    def _list(self) -> dict[str, Container]:
        try:
            response = self._stub.List(self._request, timeout=self.timeout_s)
        except self._grpc.RpcError as exc:
            code = exc.code()
            name = code.name if code is not None else "UNKNOWN"
            detail = (exc.details() or "").strip()[:200]
            raise KubeletError(
                f"kubelet pod-resources at {self.socket}: {name}: {detail or '(no detail)'}"
            ) from None
        return containers_by_device(response, self.resources)

    def close(self) -> None:
        self._channel.close()
