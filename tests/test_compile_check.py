"""The Triton kernels compiled for sm_80 / sm_90 without a GPU (kernels.compile_check).

Compiling needs Triton's real JIT, not the interpreter these tests' process may have on, so the
check runs in a child process.
"""

import os
import subprocess
import sys

import pytest
import torch

from kernels.ops.selective_scan import triton_configs


def _compile_check(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run(
        [sys.executable, "-m", "kernels.compile_check", *args],
        env=env, capture_output=True, text=True, timeout=3000,
    )  # fmt: skip


def test_quick_compile_check_finds_no_spill_in_launchable_configs():
    # sm_90, float32, Vim-S and VMamba-T stage 0, every config the table leaves to the autotuner
    result = _compile_check("--quick")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith(("fwd/", "bwd/"))]
    assert len(rows) >= 8 and all(line.split()[3] == "0" for line in rows)


@pytest.mark.slow
def test_full_compile_check_every_zoo_shape_sm80_sm90_float32_bfloat16():
    result = _compile_check()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.parametrize("kernel", ["fwd", "bwd"])
@pytest.mark.parametrize("n", [1, 16, 64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_zoo_key_keeps_a_config_and_the_table_prunes_spills(kernel, n, dtype):
    table = triton_configs.spill_table()
    assert table, "triton_spills.json missing: run python -m kernels.compile_check --write"
    keep = {triton_configs._params(c) for c in triton_configs.launchable(kernel, n, dtype)}
    assert keep
    bn = triton_configs.block_n(n)
    for cfg in triton_configs.candidates(n):
        key = triton_configs.config_key(kernel, bn, dtype, cfg)
        assert key in table, f"{key} was never compiled"
        assert (triton_configs._params(cfg) in keep) == (table[key] == 0), key


@pytest.mark.parametrize(
    "kind", ["fwd_split", "bwd_split", "bwd_deterministic", "bwd_split_deterministic"]
)
@pytest.mark.parametrize("n", [1, 16, 64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_untimed_launches_use_a_default_checked_without_spills(kind, n, dtype):
    cfg = triton_configs.default_config(kind, n, dtype)
    bn = triton_configs.block_n(n)
    table = triton_configs.spill_table()
    assert table.get(triton_configs.config_key(kind, bn, dtype, cfg)) == 0
    assert table.get(triton_configs.config_key(kind.split("_")[0], bn, dtype, cfg)) == 0


def test_autotuner_prune_drops_the_spilling_configs():
    prune = triton_configs._prune("bwd")
    configs = triton_configs.candidates(16)
    kept = prune(configs, {"N": 16, "u": torch.empty(0)})
    want = triton_configs.launchable("bwd", 16, torch.float32)
    assert [triton_configs._params(c) for c in kept] == [triton_configs._params(c) for c in want]
    assert len(kept) < len(configs)  # something spills at d_state 16 in the backward
