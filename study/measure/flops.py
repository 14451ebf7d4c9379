"""FLOP counting without compute: FlopCounterMode under FakeTensorMode, in fvcore's convention.

Papers in this field quote fvcore counts, where one multiply-add is one FLOP ("GFLOPs" = GMACs);
FlopCounterMode counts two per multiply-add. `count_flops` returns GMACs. Besides torch's own
formulas (matmuls, convolutions, the CUDA attention kernels) and any formula registered with
`torch.utils.flop_counter.register_flop_formula` (the scan kernels register theirs), it adds:

- the CPU fused attention kernel, which both fvcore and FlopCounterMode count as zero
  (deit_small at 1248 would lose 72% of its FLOPs);
- the norms and pooling fvcore counts by default (layer/group norm 5 per element with affine,
  eval batch norm 2, adaptive average pooling 1), so our totals and fvcore's agree;
- the backward of a grouped convolution, whose weight gradient torch counts as if ungrouped.

Backward ops of ours (kernels/): `kernels::selective_scan_bwd` registers its own formula;
`kernels::cross_scan` and `kernels::cross_merge` are each other's backward and move data only
(0 MACs, registered in kernels/ops/cross_scan/ops.py).
"""

import math

import torch
import torch.nn as nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count, sdpa_flop_count

aten = torch.ops.aten

# FlopCounterMode's unit is FLOPs = 2 x MACs: every formula below returns 2 x fvcore's count.
FLOPS_PER_MAC = 2


def _cpu_flash_attention_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kw):
    """q (batch, heads, Lq, d), k/v (batch, heads, Lk, d): q·kᵀ and attn·v, as the CUDA kernels."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _norm_flop(per_element_macs: int):
    def formula(input_shape, *args, out_shape=None, **kwargs) -> int:
        return FLOPS_PER_MAC * per_element_macs * math.prod(input_shape)

    return formula


def _batch_norm_eval_flop(input_shape, weight_shape=None, *args, out_shape=None, **kwargs) -> int:
    return FLOPS_PER_MAC * (2 if weight_shape is not None else 1) * math.prod(input_shape)


def _layer_norm_flop(input_shape, normalized_shape, weight_shape=None, *args, **kwargs) -> int:
    return FLOPS_PER_MAC * (5 if weight_shape is not None else 4) * math.prod(input_shape)


def _group_norm_flop(input_shape, weight_shape=None, *args, **kwargs) -> int:
    return FLOPS_PER_MAC * (5 if weight_shape is not None else 4) * math.prod(input_shape)


def grouped_conv_backward_flop(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding,
                               _dilation, transposed, _output_padding, groups, output_mask,
                               out_shape, **kwargs) -> int:  # fmt: skip
    """Input and weight gradients of a convolution: each costs what the forward costs.

    torch's formula for aten.convolution_backward counts the weight gradient of a grouped
    convolution as if it were ungrouped, C times too much for a depthwise one
    (torch/utils/flop_counter.py, conv_backward_flop, torch 2.x). The bias gradient is a sum: 0.
    """
    forward = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed)
    return forward * (bool(output_mask[0]) + bool(output_mask[1]))


# fvcore's defaults beyond matmul/conv, and the CPU attention kernel it and torch both miss.
EXTRA_FORMULAS = {
    aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_attention_flop,
    aten.native_layer_norm: _layer_norm_flop,
    aten.native_group_norm: _group_norm_flop,
    aten._native_batch_norm_legit_no_training: _batch_norm_eval_flop,
    aten.native_batch_norm: _batch_norm_eval_flop,
    aten._adaptive_avg_pool2d: _norm_flop(1),
    aten.convolution_backward: grouped_conv_backward_flop,
}


def model_device(model: nn.Module) -> torch.device:
    """Where the model's parameters live; a model built on "meta" is measured as on the CPU."""
    device = next(model.parameters()).device
    return torch.device("cpu") if device.type == "meta" else device


def fake_state(
    model: nn.Module, mode: FakeTensorMode, device: torch.device
) -> dict[str, torch.Tensor]:
    """The model's parameters and buffers as fake tensors on `device`, same shapes and dtypes.

    A model built on the meta device (no memory, no init time) works too: its tensors become fake
    tensors on `device`, so the kernels chosen are `device`'s (e.g. the CPU fused attention).
    """
    state = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    fakes = {}
    with mode:
        for name, t in state.items():
            if t.is_meta:
                fakes[name] = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=device)
            else:
                fakes[name] = mode.from_tensor(t)
    return fakes


def count_flops(
    model: nn.Module, img_size: int, batch: int = 1, in_chans: int = 3, by_operator: bool = False
) -> float | dict[str, float]:
    """GMACs of one inference forward of `batch` images (batch, in_chans, img_size, img_size).

    Nothing is computed: the forward runs on fake tensors (the model may live on "meta"). The
    count is for the whole batch; divide by `batch` for per-image figures. `by_operator=True`
    returns {op name: GMACs} instead.
    """
    if batch < 1 or img_size < 1:
        raise ValueError(f"batch and img_size must be positive, got batch={batch}, {img_size=}")
    device = model_device(model)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        state = fake_state(model, mode, device)
        x = torch.empty(batch, in_chans, img_size, img_size, device=device)
        counter = FlopCounterMode(display=False, custom_mapping=EXTRA_FORMULAS)
        with counter, torch.no_grad():
            functional_call(model, state, (x,))
    if by_operator:
        per_op = counter.get_flop_counts()["Global"]
        return {str(op): n / FLOPS_PER_MAC / 1e9 for op, n in per_op.items()}
    return counter.get_total_flops() / FLOPS_PER_MAC / 1e9
