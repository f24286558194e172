"""Accelerator telemetry (NVIDIA through NVML, Huawei Ascend through npu-smi, ...).

Every source produces the same vendor-neutral `accelerator` measurement (docs/schema.md), so one
dashboard and one rule set cover every vendor.
"""
