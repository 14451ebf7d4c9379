"""CUDA peak memory predicted without a GPU (study.measure.cuda_memory)."""

import pytest
import torch

import study.models as zoo
from study.measure import peak_memory
from study.measure.cuda_memory import (
    CachingAllocator,
    predict_cuda_memory,
    round_size,
    segment_size,
)

MIB = 2**20


def test_round_size_and_segment_size_follow_the_caching_allocator():
    assert [round_size(n) for n in (1, 511, 512, 513, 4096)] == [512, 512, 512, 1024, 4096]
    assert segment_size(512) == segment_size(MIB) == 2 * MIB  # small pool: 2 MiB segments
    assert segment_size(MIB + 512) == segment_size(10 * MIB - 512) == 20 * MIB
    assert segment_size(10 * MIB) == 10 * MIB
    assert segment_size(10 * MIB + 1) == 12 * MIB  # rounded up to 2 MiB


def test_allocator_splits_reuses_and_merges_blocks():
    alloc = CachingAllocator()
    a = alloc.malloc(100)  # small pool: one 2 MiB segment, a 512 B block split off
    assert (alloc.allocated_bytes, alloc.reserved_bytes) == (512, 2 * MIB)
    b = alloc.malloc(3 * MIB // 2)  # large pool: a 20 MiB segment, split (18.5 MiB left)
    assert alloc.allocated_bytes == 512 + 3 * MIB // 2
    assert alloc.reserved_bytes == 22 * MIB
    c = alloc.malloc(18 * MIB)  # best fit in the 18.5 MiB rest; 0.5 MiB left is not split off
    assert alloc.reserved_bytes == 22 * MIB
    assert alloc.allocated_bytes == 512 + 20 * MIB  # the whole rest counts as allocated
    for block in (a, b, c):
        alloc.free(block)
    assert alloc.allocated_bytes == 0
    d = alloc.malloc(19 * MIB)  # b and c merged back into one 20 MiB block: no new segment
    assert alloc.reserved_bytes == 22 * MIB and d.size == 20 * MIB
    alloc.malloc(11 * MIB)  # nothing cached fits: a new 12 MiB segment, handed out whole
    assert alloc.reserved_bytes == 34 * MIB
    assert alloc.peak_allocated_bytes == 32 * MIB and alloc.peak_reserved_bytes == 34 * MIB


def _meta_model(name: str, size: int, **kw) -> torch.nn.Module:
    with torch.device("meta"):
        return zoo.create(name, img_size=size, **kw)


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_cnn_prediction_equals_the_cpu_one_up_to_allocator_rounding(precision):
    # A CNN runs the same ops on both devices under autocast's shared conv/linear rules: the
    # exact storage bytes agree; the allocator adds at most 511 B per block and reserves more.
    model = _meta_model("resnet50", 224)
    cpu = peak_memory(model, 224, 4, device="cpu", precision=precision)
    cuda = peak_memory(model, 224, 4, device="cuda", precision=precision)
    # bfloat16: autocast's CPU and CUDA op lists differ slightly (aten/src/ATen/autocast_mode.cpp):
    # at this size the CUDA forward holds one more 2 KiB bf16 copy (the classifier's bias).
    slack_mib = 0 if precision == "float32" else 4096 / MIB
    assert cuda["unrounded_peak_mib"] == pytest.approx(cpu["peak_mib"], abs=slack_mib + 1e-9)
    assert cpu["peak_mib"] <= cuda["peak_mib"] <= cpu["peak_mib"] + 1.0
    assert cuda["reserved_peak_mib"] >= cuda["peak_mib"]
    assert cuda["params_mib"] > cpu["params_mib"]  # 161 parameter tensors, each rounded to 512 B


def test_fused_attention_takes_the_cuda_kernels_not_the_math_fallback():
    # Without a GPU, SDPA on fake CUDA tensors would fall back to the math path and hold the
    # (batch, heads, L, L) matrix: predicted fused attention must stay far below naive.
    fused = _meta_model("deit_small_patch16_224", 1024, attn="fused")
    naive = _meta_model("deit_small_patch16_224", 1024, attn="naive")
    for precision in ("float32", "bfloat16"):
        f = peak_memory(fused, 1024, 2, device="cuda", precision=precision)
        n = peak_memory(naive, 1024, 2, device="cuda", precision=precision)
        heads, tokens = 6, (1024 // 16) ** 2 + 1
        matrix_mib = 2 * heads * tokens**2 * 4 / MIB
        assert n["activations_mib"] > matrix_mib > 4 * f["activations_mib"]


def test_bfloat16_flash_attention_holds_its_logsumexp():
    from torch.utils.flop_counter import FlopCounterMode

    model = _meta_model("deit_tiny_patch16_224", 224)
    seen = []

    class Ops(torch.utils._python_dispatch.TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(func)
            return func(*args, **(kwargs or {}))

    with FlopCounterMode(display=False):
        predict_cuda_memory(model, (1, 3, 224, 224), "bfloat16", also=Ops())
    assert torch.ops.aten._scaled_dot_product_flash_attention.default in seen
    seen.clear()
    predict_cuda_memory(model, (1, 3, 224, 224), "float32", also=Ops())
    assert torch.ops.aten._scaled_dot_product_efficient_attention.default in seen


def test_bad_precision_is_one_clear_error():
    with pytest.raises(ValueError, match="allowed: float32, bfloat16"):
        predict_cuda_memory(_meta_model("resnet50", 224), (1, 3, 224, 224), "float16")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-GPU path")
def test_sweep_on_cuda_without_a_gpu_is_predicted_only():
    from study.sweep import check_args

    complaint = check_args(["sweep=gpu"])
    assert complaint is not None and "gpu_predicted" in complaint
    assert check_args(["sweep=gpu_predicted"]) is None
    no_runs = ["measure.measured_memory=false", "measure.throughput=false"]
    assert check_args(["sweep=gpu", *no_runs]) is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-GPU route")
@pytest.mark.parametrize("name", ["resnet50", "deit_tiny_patch16_224", "vim_tiny", "vmamba_tiny"])
def test_the_cpu_route_of_the_train_prediction_gives_the_cuda_forward(name):
    # Without a GPU the training step runs on fake CPU tensors with what a GPU runs (the Triton
    # scan, fused attention): the same forward on that route equals the CUDA forward prediction.
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.func import functional_call

    from kernels import use_backend
    from study.measure.cuda_memory import AllocatorTracker, _CudaSdpa
    from study.measure.flops import fake_state

    model = _meta_model(name, 256)
    tracker = AllocatorTracker()
    with FakeTensorMode(allow_non_fake_inputs=True) as fake, _CudaSdpa(), use_backend("triton"):
        state = fake_state(model, fake, torch.device("cpu"))
        for t in state.values():
            tracker.track(t)
        x = torch.randn(2, 3, 256, 256)
        tracker.track(x)
        with tracker, torch.no_grad():
            out = functional_call(model, state, (x,))
            del x, out
    cuda = predict_cuda_memory(model, (2, 3, 256, 256), "float32")
    assert tracker.allocator.peak_allocated_bytes / MIB == pytest.approx(cuda["peak_mib"], abs=1e-9)


def test_train_prediction_counts_adamw_state_and_foreach_temporaries():
    from study.measure.cuda_memory import predict_cuda_train_memory
    from study.measure.train_step import train_memory

    model = _meta_model("resnet50", 224)
    cuda = predict_cuda_train_memory(model, (4, 3, 224, 224))
    cpu = train_memory(model, 224, 4, "predicted", "cpu")
    # exp_avg, exp_avg_sq and a step counter per parameter tensor, as blocks: at least 512 B, and
    # a large-pool block keeps a rest of up to 1 MiB unsplit (here +1.7% in all)
    assert cpu["optimizer_mib"] <= cuda["optimizer_mib"] <= 1.03 * cpu["optimizer_mib"]
    assert cuda["params_mib"] >= cpu["params_mib"]  # blocks of at least 512 B
    assert cuda["unrounded_peak_mib"] <= cuda["peak_mib"] <= cuda["reserved_peak_mib"]
    # AdamW's foreach step holds temporaries for every parameter at once; the CPU's per-parameter
    # loop does not: the CUDA step's peak is at least the CPU's.
    assert cuda["unrounded_peak_mib"] >= cpu["peak_mib"]
    assert train_memory(model, 224, 4, "predicted", "cuda") == cuda  # the sweep's route
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="allowed here: float32"):
            predict_cuda_train_memory(model, (4, 3, 224, 224), "bfloat16")
