"""Launch configurations of the Triton scan: candidates, spill pruning, autotuning, defaults.

Candidates: (BLOCK_L, BLOCK_D) so that the (BLOCK_L, BLOCK_D, BLOCK_N) tile holds 4096, 2048,
1024, 512 or 256 elements (BLOCK_L = 64 where BLOCK_D >= 1 allows it, else 32 or 16), times
num_warps in {4, 8} and NUM_STAGES (see there). `python -m kernels.compile_check --write`
compiles every candidate for sm_80 and sm_90 at the zoo's shapes and writes the spill bytes ptxas
reports into `triton_spills.json` beside this file; a candidate that spilled anywhere is pruned
before autotuning (a config never measured is kept). On a GPU the autotuner then times the
survivors once per (channels per group DG, d_state N, flags, dtype). Under the interpreter, and
for `deterministic=True` (whose partial sums depend on BLOCK_D), the first survivor is used
without timing.
"""

import contextlib
import functools
import json
import os
from collections.abc import Iterator
from pathlib import Path

import torch
import triton

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
SPILLS_PATH = Path(__file__).with_name("triton_spills.json")
CHUNK_L = 64  # the tile's sequence length: ops.CHUNK (not imported: this module stays leaf)
TILE_SIZES = (
    4096,
    2048,
    1024,
    512,
    256,  # (16, 1) at d_state 16: the bfloat16 split+deterministic backward spills above it
)  # elements of the (BLOCK_L, BLOCK_D, BLOCK_N) tile, by preference
NUM_WARPS = (4, 8)
# num_stages: measured to change nothing here (identical registers, spills and shared memory at
# 1 and 2 for all 24 config pairs of `compile_check --quick` on sm_90: the tile loop's loads are
# not software-pipelined), so tuning it would only double the compiles and the autotuning time.
NUM_STAGES = (1,)


def block_n(n: int) -> int:
    """The state axis padded to a power of two (at least 2, Triton's smallest useful tile)."""
    return max(triton.next_power_of_2(n), 2)


def tiles(n: int) -> list[tuple[int, int]]:
    """(BLOCK_L, BLOCK_D) per tile size, largest tile first; BLOCK_L divides CHUNK_L."""
    bn, found = block_n(n), []
    for size in TILE_SIZES:
        block_l = CHUNK_L
        while size // (block_l * bn) < 1 and block_l > 16:
            block_l //= 2
        block_d = min(64, size // (block_l * bn))
        if block_d >= 1 and (block_l, block_d) not in found:
            found.append((block_l, block_d))
    return found


def candidates(n: int) -> list[triton.Config]:
    """Every config the launcher may choose for d_state n, preferred first."""
    return [
        triton.Config({"BLOCK_L": bl, "BLOCK_D": bd}, num_warps=w, num_stages=s)
        for bl, bd in tiles(n)
        for w in NUM_WARPS
        for s in NUM_STAGES
    ]


def _params(cfg: triton.Config) -> tuple[int, int, int, int]:
    return cfg.kwargs["BLOCK_L"], cfg.kwargs["BLOCK_D"], cfg.num_warps, cfg.num_stages


def config_key(kernel: str, bn: int, dtype: torch.dtype | str, cfg: triton.Config) -> str:
    """The spill table's key: kind/dtype/BLOCK_N/BLOCK_L/BLOCK_D/warps/stages.

    kind: "fwd" or "bwd" (the one-pass launch the autotuner times), or a fixed launch:
    "fwd_split", "bwd_split" (summary and full passes), "bwd_deterministic",
    "bwd_split_deterministic"."""
    name = str(dtype).removeprefix("torch.")
    block_l, block_d, warps, stages = _params(cfg)
    return f"{kernel}/{name}/N{bn}/L{block_l}/D{block_d}/w{warps}/s{stages}"


@functools.cache
def spill_table() -> dict[str, int]:
    """key -> the most spill bytes (stores + loads) ptxas reported for it; {} when not written."""
    if not SPILLS_PATH.exists():
        return {}
    return json.loads(SPILLS_PATH.read_text())["spill_bytes"]


def _table_dtype(dtype: torch.dtype) -> torch.dtype:
    # float16 tiles cost what bfloat16 tiles cost: both load 16 bits and compute in float32
    return torch.bfloat16 if dtype == torch.float16 else dtype


def launchable(kernel: str, n: int, dtype: torch.dtype) -> list[triton.Config]:
    """Candidates for (kind, n, dtype) that did not spill in the compile check: a fixed kind
    keeps those of its one-pass kernel that did not spill in its own launches either."""
    table, bn, dtype = spill_table(), block_n(n), _table_dtype(dtype)
    kinds = {kernel.split("_")[0], kernel}

    def clean(c: triton.Config) -> bool:
        return all(table.get(config_key(k, bn, dtype, c), 0) == 0 for k in kinds)

    keep = [c for c in candidates(n) if clean(c)]
    if not keep:
        raise RuntimeError(
            f"every {kernel} config spills at d_state={n}, {dtype}: see compile_check"
        )
    return keep


def default_config(kernel: str, n: int, dtype: torch.dtype) -> triton.Config:
    """The untimed choice: the first launchable candidate."""
    return launchable(kernel, n, dtype)[0]


_forced: list[triton.Config] = []


@contextlib.contextmanager
def forced_config(cfg: triton.Config) -> Iterator[None]:
    """Within this block every launch uses `cfg` (tests: smaller tiles under the interpreter)."""
    _forced.append(cfg)
    try:
        yield
    finally:
        _forced.pop()


def launch_meta(
    kernel: str, dim_group: int, n: int, dtype: torch.dtype, fixed: bool = False
) -> dict[str, int]:
    """Keyword arguments for the launch: {} lets the autotuner choose; otherwise a fixed config."""
    if not (INTERPRET or fixed or _forced):
        return {}
    cfg = _forced[-1] if _forced else default_config(kernel, n, dtype)
    return {**cfg.kwargs, "num_warps": cfg.num_warps, "num_stages": cfg.num_stages}


def split_block_d(kernel: str, n: int, dtype: torch.dtype, meta: dict[str, int]) -> int:
    """BLOCK_D for counting programs: the fixed one, else the largest the autotuner may pick."""
    if "BLOCK_D" in meta:
        return meta["BLOCK_D"]
    return max(c.kwargs["BLOCK_D"] for c in launchable(kernel, n, dtype))


def _prune(kernel: str):
    def prune(configs, named_args, **kwargs):
        n, dtype = named_args["N"], named_args["u"].dtype
        allowed = {_params(c) for c in launchable(kernel, n, dtype)}
        return [c for c in configs if _params(c) in allowed]

    return prune


@functools.cache
def _autotuned(fn, kernel: str, n_max: int = 64):
    configs = {config_key(kernel, 0, "", c): c for n in (1, 16, n_max) for c in candidates(n)}
    return triton.autotune(
        configs=list(configs.values()),
        key=["DG", "N", "HAS_Z", "SUMMARY"],  # the autotuner adds every tensor's dtype
        prune_configs_by={"early_config_prune": _prune(kernel)},
        reset_to_zero=["dB", "dC"] if kernel == "bwd" else None,
    )(fn)


def kernel(fn, name: str, meta: dict[str, int]):
    """The launchable kernel: autotuned when `meta` leaves the choice open, else `fn` itself."""
    return fn if meta else _autotuned(fn, name)


def programs_to_fill(device: torch.device) -> int:
    """Programs that keep every SM busy: two per SM on CUDA (one under the interpreter)."""
    if device.type != "cuda":
        return 1
    return 2 * torch.cuda.get_device_properties(device).multi_processor_count
