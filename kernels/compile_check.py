"""Compile every Triton kernel for real GPUs, without one: registers, spills, shared memory.

    python -m kernels.compile_check [--archs 80 90] [--dtypes float32 bfloat16] [--quick]
                                    [--jobs N] [--write]

Triton compiles for NVIDIA targets on any machine: `triton.compile(ASTSource(...),
target=GPUTarget("cuda", arch, 32))` gives PTX, and the `ptxas` inside the triton wheel
(`-v`, the flags Triton itself passes) reports registers, stack and spill bytes. The arguments are
the launchers' own: each launcher runs on meta tensors of a zoo shape with its kernel replaced by
a recorder, and Triton's binder turns the recorded call into the signature, constants and
alignment attributes a real launch would compile, so what is checked is what would run.

What is compiled, for sm_80 and sm_90, float32 and bfloat16:
- the scan forward and backward at every zoo shape (Vim-Ti/S/B layers at d_state 16, VMamba-T/S/B
  stages at d_state 1 and the d_state 16 VMamba, a Vim-S layer at d_state 64): the one-pass launch
  with every autotuning candidate, and the split-sequence passes and `deterministic=True` with the
  untimed default (those launches do not autotune);
- cross-scan and cross-merge at the VMamba stage shapes, contiguous and channels_last.

Prints one row per compiled kernel and config, and exits 1 if any config the launcher can choose
spills (a candidate the committed table `triton_spills.json` prunes cannot be chosen). `--write`
compiles every candidate at every zoo shape (the alignment specialisations differ between shapes,
and so do the spills) and rewrites that table. `--quick` checks sm_90 float32, Vim-S and a
VMamba-T stage, the one-pass launches with every config the table leaves to the autotuner (the CI
test). The PTX
of `deterministic=True` kernels must hold no atomic instruction.
"""

import os

os.environ.pop("TRITON_INTERPRET", None)  # compiling needs the real JIT, not the interpreter

import argparse  # noqa: E402
import hashlib  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource, make_backend  # noqa: E402
from triton.runtime.jit import create_function_from_signature  # noqa: E402

from kernels.ops.cross_scan import triton_cross  # noqa: E402
from kernels.ops.selective_scan import triton_bwd, triton_configs, triton_fwd  # noqa: E402
from kernels.ops.selective_scan.ops import CHUNK  # noqa: E402

PTXAS = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class ScanShape:
    """One selective-scan call of the zoo at 224 px: the channels of one group and its layout."""

    name: str
    dim_group: int
    groups: int
    n: int
    length: int
    vim_layout: bool  # Vim: delta and B/C are transposed views of (batch, L, ·); VMamba: dense


# Vim (Zhu et al. 2024, vim/models_mamba.py): d_inner = 2 x embed 192/384/768, d_state 16, L=197.
# VMamba (Liu et al. 2024, classification/models/vmamba.py): K=4 directions share one call,
# d_inner = ssm_ratio x dims per stage, d_state 1 (v2 T/S/B) or 16 (the v0-style tiny).
ZOO = [
    ScanShape("vim_tiny", 384, 1, 16, 197, True),
    ScanShape("vim_small", 768, 1, 16, 197, True),
    ScanShape("vim_base", 1536, 1, 16, 197, True),
    ScanShape("vim_small_d_state_64", 768, 1, 64, 197, True),
    *[
        ScanShape(f"vmamba_{size}_stage{i}", dims * ratio * 2**i, 4, 1, (56 // 2**i) ** 2, False)
        for size, dims, ratio in (("tiny", 96, 1), ("small", 96, 2), ("base", 128, 2))
        for i in range(4)
    ],
    *[
        ScanShape(f"vmamba_d16_stage{i}", 192 * 2**i, 4, 16, (56 // 2**i) ** 2, False)
        for i in range(4)
    ],  # fmt: skip
]
QUICK_SHAPES = ("vim_small", "vmamba_tiny_stage0")


@dataclass
class Job:
    """One compile: a kernel, what a launch binds to it, and the target."""

    label: str  # kernel/launch/shape/dtype/config, for the table
    module: str
    fn_name: str
    signature: dict
    constexprs: dict
    attrs: dict
    options: dict
    arch: int
    table_key: str | None  # the spill table's key for scan configs; None for the cross kernels
    autotuned: bool

    def spec_hash(self) -> str:
        key = repr((self.module, self.fn_name, self.signature, self.constexprs, self.attrs,
                    self.options, self.arch))  # fmt: skip
        return hashlib.sha256(key.encode()).hexdigest()


class _Recorder:
    """Stands in for a kernel: records `kernel[grid](*args, **kwargs)` instead of launching."""

    def __init__(self, fn, calls: list) -> None:
        self.fn, self.calls = fn, calls

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.calls.append((self.fn, args, kwargs))


def _meta(*shape, dtype=torch.float32):
    return torch.empty(*shape, device="meta", dtype=dtype)


def _scan_inputs(s: ScanShape, dtype: torch.dtype, batch: int = 1) -> dict:
    """Meta tensors with the zoo's layouts (strides are what specialisation looks at)."""
    dim, n, length = s.dim_group * s.groups, s.n, s.length
    if s.vim_layout:
        delta = _meta(batch, length, dim, dtype=dtype).transpose(1, 2)
        bc = _meta(batch, length, n, dtype=dtype).transpose(1, 2)
    else:
        delta = _meta(batch, dim, length, dtype=dtype)
        bc = _meta(batch, s.groups, n, length, dtype=dtype)
    return dict(
        u=_meta(batch, dim, length, dtype=dtype), delta=delta, A=_meta(dim, n), B=bc, C=bc,
        D=_meta(dim), z=_meta(batch, dim, length, dtype=dtype) if s.vim_layout else None,
        delta_bias=_meta(dim),
    )  # fmt: skip


def _record(launcher, *args, **kwargs) -> list:
    """Run a launcher on meta tensors with every kernel recorded, never launched."""
    calls: list = []
    saved = triton_configs.kernel
    triton_configs.kernel = lambda fn, name, meta: _Recorder(fn, calls)
    try:
        launcher(*args, **kwargs)
    finally:
        triton_configs.kernel = saved
    return calls


def _scan_launches(s: ScanShape, dtype: torch.dtype) -> list[tuple[str, object, tuple, dict]]:
    """(launch name, table kind, kernel, args, kwargs) of every scan launch the launchers make."""
    x = _scan_inputs(s, dtype)
    args = [x[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    nchunk = triton.cdiv(s.length, CHUNK)
    states = _meta(1, s.dim_group * s.groups, nchunk + 1, s.n)
    grad_y = _meta(1, s.dim_group * s.groups, s.length, dtype=dtype)
    found = []
    for segments, det in ((None, False), (2, False), (None, True), (2, True)):
        calls = []
        if not det:
            calls += _record(triton_fwd.fwd, *args, True, False, segments=segments)
        calls += _record(triton_bwd.bwd, grad_y, None, states, *args, True, False,
                         deterministic=det, segments=segments)  # fmt: skip
        for fn, a, kw in calls:
            kind = "fwd" if fn is triton_fwd._selective_scan_fwd_kernel else "bwd"
            split = "summary" if kw["SUMMARY"] else ("split" if segments else "one_pass")
            launch = f"{split}_deterministic" if det else split
            table_kind = kind + ("_split" if segments else "") + ("_deterministic" if det else "")
            found.append((f"{kind}/{launch}", table_kind, fn, a, kw))
    return found


def _bind(fn, args: tuple, kwargs: dict, arch: int) -> tuple:
    """(signature, constexprs, attrs, options) exactly as Triton's launcher would compile them."""
    backend = make_backend(GPUTarget("cuda", arch, 32))
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(
        backend, kwargs, bound, specialization, options
    )
    opts = {k: options.__dict__[k] for k in ("num_warps", "num_stages")}
    return signature, constexprs, attrs, opts


def scan_jobs(
    shapes: list[ScanShape], dtypes: list[str], archs: list[int], quick: bool, which: str = "all"
) -> list:
    """Jobs for the scan launches: "tuned" (one-pass), "fixed" (the default-config ones) or all.

    `quick`: the tuned launches with only the configs the table leaves to the autotuner."""
    jobs = []
    for s in shapes:
        for dname in dtypes:
            dtype = DTYPES[dname]
            for launch, kind, fn, args, kw in _scan_launches(s, dtype):
                autotuned = launch.endswith("one_pass")
                if (quick or which == "tuned") and not autotuned:
                    continue
                if which == "fixed" and autotuned:
                    continue
                if not autotuned:
                    cfgs = [triton_configs.default_config(kind, s.n, dtype)]
                elif quick:  # what the committed table lets the autotuner choose
                    cfgs = triton_configs.launchable(kind, s.n, dtype)
                else:
                    cfgs = triton_configs.candidates(s.n)
                for cfg in cfgs:
                    meta = {**cfg.kwargs, "num_warps": cfg.num_warps, "num_stages": cfg.num_stages}
                    key = triton_configs.config_key(kind, triton_configs.block_n(s.n), dtype, cfg)
                    for arch in archs:
                        sig, cons, attrs, opts = _bind(fn, args, {**kw, **meta}, arch)
                        label = f"{launch}/{s.name}/{dname}/{key.split('/', 3)[3]}"
                        jobs.append(Job(label, fn.__module__, fn.__name__, sig, cons,
                                        attrs, opts, arch, key,
                                        autotuned))  # fmt: skip
    return jobs


def cross_jobs(dtypes: list[str], archs: list[int], first_stage_only: bool = False) -> list:
    """Cross-scan and cross-merge at each VMamba stage, contiguous and channels_last."""
    jobs = []
    for dims in (96,) if first_stage_only else (96, 192, 384, 768, 128, 256, 512, 1024):
        side = 56 * 96 // dims if dims in (96, 192, 384, 768) else 56 * 128 // dims
        for dname in dtypes:
            dtype = DTYPES[dname]
            for layout in ("contiguous", "channels_last"):
                x = torch.empty(1, dims, side, side, dtype=dtype)
                if layout == "channels_last":
                    x = x.to(memory_format=torch.channels_last)
                length = side * side
                block_c, block_p = triton_cross._blocks(dims, length)
                out4 = torch.empty(1, 4, dims, length, dtype=dtype)
                y = torch.empty(1, 4, dims, side, side, dtype=dtype)
                if layout == "channels_last":
                    y = y.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
                out = torch.empty(1, dims, length, dtype=dtype)
                acc = triton.language.float32
                launches = [
                    ("cross_scan", triton_cross._cross_scan_kernel,
                     (x, out4, *x.stride(), dims, side, side, block_c, block_p)),
                    ("cross_merge", triton_cross._cross_merge_kernel,
                     (y, out, *y.stride(), dims, side, side, block_c, block_p, acc)),
                ]  # fmt: skip
                for name, fn, args in launches:
                    for arch in archs:
                        sig, cons, attrs, opts = _bind(fn, args, {}, arch)
                        label = f"{name}/{layout}/C{dims}_{side}x{side}/{dname}/default"
                        jobs.append(Job(label, fn.__module__, fn.__name__, sig, cons,
                                        attrs, opts, arch, None,
                                        False))  # fmt: skip
    return jobs


def compile_one(job: Job) -> dict:
    """Compile `job` to PTX and run ptxas -v on it: registers, spill bytes, shared memory."""
    fn = getattr(importlib.import_module(job.module), job.fn_name)
    target = GPUTarget("cuda", job.arch, 32)
    src = ASTSource(fn, job.signature, job.constexprs, job.attrs)
    try:
        kernel = triton.compile(src, target=target, options=job.options)
    except Exception as err:  # report it as a failed row, go on with the others
        return {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}
    gpu_name = f"sm_{job.arch}a" if job.arch >= 90 else f"sm_{job.arch}"
    with tempfile.TemporaryDirectory() as tmp:
        ptx = Path(tmp) / "k.ptx"
        ptx.write_text(kernel.asm["ptx"])
        cmd = [str(PTXAS), "-lineinfo", "-v", "--regAllocOptLevel=2", f"--gpu-name={gpu_name}",
               str(ptx), "-o", str(Path(tmp) / "k.cubin")]  # fmt: skip
        log = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    regs = re.search(r"Used (\d+) registers", log)
    stack = re.search(r"(\d+) bytes stack frame", log)
    ptx_text = kernel.asm["ptx"]
    return {
        "atomics": len(re.findall(r"\b(?:atom|red)\.", ptx_text)),
        "registers": int(regs.group(1)),
        "spill_store_bytes": int(spills.group(1)),
        "spill_load_bytes": int(spills.group(2)),
        "stack_bytes": int(stack.group(1)),
        "shared_bytes": kernel.metadata.shared,
    }


def run(jobs: list, n_jobs: int) -> list[tuple[Job, dict]]:
    """Compile each distinct specialisation once (zoo shapes often share one), in parallel."""
    unique = {}
    for job in jobs:
        unique.setdefault(job.spec_hash(), job)
    with ProcessPoolExecutor(max_workers=n_jobs) as pool:
        results = dict(zip(unique, pool.map(compile_one, unique.values()), strict=True))
    return [(job, results[job.spec_hash()]) for job in jobs]


def table_rows(results: list[tuple[Job, dict]]) -> list[str]:
    header = f"{'kernel/launch/shape/dtype/config':<72} {'sm':>3} {'regs':>5} {'spill B':>8} "
    header += f"{'shared B':>9}  launchable"
    rows, seen = [header], set()
    for job, r in results:
        line_key = (job.label.split("/", 3)[0], job.spec_hash())
        if line_key in seen:  # same compile as a row already printed (another zoo shape)
            continue
        seen.add(line_key)
        if "error" in r:
            rows.append(f"{job.label:<72} {job.arch:>3}  ERROR {r['error']}")
            continue
        spill = r["spill_store_bytes"] + r["spill_load_bytes"]
        ok = "yes" if _launchable(job) else "pruned"
        rows.append(f"{job.label:<72} {job.arch:>3} {r['registers']:>5} {spill:>8} "
                    f"{r['shared_bytes']:>9}  {ok}")  # fmt: skip
    return rows


def _launchable(job: Job) -> bool:
    """Could the launcher run this config? Autotuning candidates the table prunes cannot; the
    fixed (untimed default) and cross-scan configs always run."""
    if job.table_key is None or not job.autotuned:
        return True
    return triton_configs.spill_table().get(job.table_key, 0) == 0


def new_table(results: list[tuple[Job, dict]]) -> dict[str, int]:
    table: dict[str, int] = {}
    for job, r in results:
        if job.table_key is not None:
            spill = r.get("spill_store_bytes", 1) + r.get("spill_load_bytes", 1)
            table[job.table_key] = max(table.get(job.table_key, 0), spill)
    return dict(sorted(table.items()))


def write_table(results: list[tuple[Job, dict]], archs: list[int], dtypes: list[str]) -> None:
    """This run's spill bytes replace the table's entries for its dtypes (one run per dtype
    keeps each run shorter); other dtypes' entries stay."""
    path = triton_configs.SPILLS_PATH
    old = json.loads(path.read_text()) if path.exists() else {}
    kept = {k: v for k, v in old.get("spill_bytes", {}).items() if k.split("/")[1] not in dtypes}
    payload = {"written_by": "python -m kernels.compile_check --write",
               "triton": triton.__version__,
               "archs": sorted(set(old.get("archs", [])) | set(archs)),
               "dtypes": sorted(set(old.get("dtypes", [])) | set(dtypes)),
               "spill_bytes": dict(sorted({**kept, **new_table(results)}.items()))}  # fmt: skip
    path.write_text(json.dumps(payload, indent=1) + "\n")
    triton_configs.spill_table.cache_clear()


def _is_default(job: Job) -> bool:
    """Is this fixed job's config still the default for its kernel, d_state and dtype?"""
    kind, dtype, bn = job.table_key.split("/")[:3]
    n = int(bn[1:])
    cfg = triton_configs.default_config(kind, n, DTYPES[dtype])
    return (
        triton_configs.config_key(kind, triton_configs.block_n(n), DTYPES[dtype], cfg)
        == job.table_key
    )


def _spills(r: dict) -> bool:
    return "error" in r or r["spill_store_bytes"] + r["spill_load_bytes"] > 0


def build_table(shapes: list[ScanShape], dtypes: list[str], archs: list[int], n_jobs: int):
    """Every candidate of the one-pass launches, then the untimed defaults of the other launches;
    a default that spills is marked in the table and the next one is tried."""
    results = run(scan_jobs(shapes, dtypes, archs, False, "tuned"), n_jobs)
    write_table(results, archs, dtypes)
    while True:
        fixed = run(scan_jobs(shapes, dtypes, archs, False, "fixed"), n_jobs)
        results += fixed
        write_table(results, archs, dtypes)
        if not any(_spills(r) for _, r in fixed):
            return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", type=int, nargs="+", default=[80, 90])
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--quick", action="store_true", help="sm_90, float32, two shapes")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    table = triton_configs.SPILLS_PATH.name
    parser.add_argument("--write", action="store_true",
                        help=f"every candidate at every zoo shape; rewrite {table}")  # fmt: skip
    args = parser.parse_args(argv)
    shapes, archs, dtypes = ZOO, args.archs, args.dtypes
    if args.quick:
        shapes = [s for s in ZOO if s.name in QUICK_SHAPES]
        archs, dtypes = [90], ["float32"]
    if args.write:  # every candidate at every shape (specialisations differ), then the defaults
        results = build_table(ZOO, dtypes, archs, args.jobs)
    else:  # what the launcher can choose, at every shape
        results = run(scan_jobs(shapes, dtypes, archs, True), args.jobs)
        if not args.quick:
            results += run(scan_jobs(shapes, dtypes, archs, False, "fixed"), args.jobs)
    if not args.quick:
        results += run(cross_jobs(dtypes, archs, args.write), args.jobs)
    print("\n".join(table_rows(results)))
    if args.write:  # the defaults that spilled were replaced: judge only the final ones
        results = [(j, r) for j, r in results if j.autotuned or j.table_key is None
                   or _is_default(j)]  # fmt: skip
    bad = [(job, r) for job, r in results if _launchable(job) and _spills(r)]
    bad += [(job, {"error": "atomics in a deterministic kernel"}) for job, r in results
            if "deterministic" in job.label and r.get("atomics", 0) > 0]  # fmt: skip
    errors = [(job, r) for job, r in results if "error" in r]
    print(f"\n{len({j.spec_hash() for j, _ in results})} kernels compiled, "
          f"{len(bad)} launchable configs spill or fail, {len(errors)} compile errors")  # fmt: skip
    for job, r in bad:
        print(f"FAIL {job.label} sm_{job.arch}: {r.get('error') or 'spills'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
