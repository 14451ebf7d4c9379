"""Write study/data/block_costs.csv: parameters and MACs of one block of each model, per stage.

    python -m study.data.block_costs

The report reads the CSV (claim 9: "VMamba's block has no MLP and no position embedding, which makes
it shallower than a ViT block"); it never builds a model itself. Each model is built by
`study.models.create` at 224 px on the meta device and run once on fake tensors (nothing is
computed); FlopCounterMode counts each block's MACs in fvcore's convention (`study.measure.flops`),
a forward hook records how many tokens the block sees. Blocks of one stage are identical, so one
line per stage: the first block's figures and how many blocks the stage has.

Columns: `width` (d, the block's channels), `tokens` (at 224 px), `params_per_block_m`,
`gmacs_per_block` (at 224 px), `params_over_d2` (parameters / d², a width-free size: a ViT block is
12 d² plus norms and biases), `macs_per_token_over_d2` (MACs / (tokens · d²) at 224 px),
`mlp` (the block holds an MLP branch), `pos_embed` (the model adds a position embedding).
"""

import csv
from pathlib import Path

import torch
import torch.nn as nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

import study.models as zoo
from study.measure.flops import EXTRA_FORMULAS, FLOPS_PER_MAC, fake_state

OUT = Path(__file__).resolve().parent / "block_costs.csv"
MODELS: tuple[str, ...] = (
    "deit_tiny_patch16_224",
    "deit_small_patch16_224",
    "vim_tiny",
    "vim_small",
    "vmamba_tiny",
    "vmamba_tiny_v0",
)
IMG_SIZE = 224
BLOCK_CLASSES: tuple[str, ...] = ("Block", "VSSBlock", "SwinTransformerBlock")


def _width(block: nn.Module) -> int:
    """The block's channels: the size its first norm normalises over."""
    for module in block.modules():
        shape = getattr(module, "normalized_shape", None)
        if shape:
            return int(shape[0] if isinstance(shape, (tuple, list)) else shape)
        if isinstance(module, nn.BatchNorm2d):
            return int(module.num_features)
    raise ValueError(f"no norm layer in {type(block).__name__} to read its width from")


def _has_mlp(block: nn.Module) -> bool:
    mlp = getattr(block, "mlp", None)
    return isinstance(mlp, nn.Module) and not isinstance(mlp, nn.Identity)


def block_rows(name: str) -> list[dict[str, object]]:
    """One dict per stage of `name` (consecutive identical blocks), as in block_costs.csv."""
    with torch.device("meta"):
        model = zoo.create(name, img_size=IMG_SIZE)
    blocks = [(n, m) for n, m in model.named_modules() if type(m).__name__ in BLOCK_CLASSES]
    if not blocks:
        raise ValueError(f"{name}: no module of a class in {BLOCK_CLASSES}")
    tokens: dict[str, int] = {}

    def hook(fqn: str, width: int):
        def record(module: nn.Module, args: tuple) -> None:
            x = args[0]
            tokens[fqn] = x.numel() // (x.shape[0] * width)

        return record

    handles = [m.register_forward_pre_hook(hook(n, _width(m))) for n, m in blocks]
    device = torch.device("cpu")
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        state = fake_state(model, mode, device)
        x = torch.empty(1, 3, IMG_SIZE, IMG_SIZE, device=device)
        counter = FlopCounterMode(display=False, custom_mapping=EXTRA_FORMULAS)
        with counter, torch.no_grad():
            functional_call(model, state, (x,))
    for h in handles:
        h.remove()
    counts = counter.get_flop_counts()
    root = type(model).__name__

    lines: list[dict[str, object]] = []
    for fqn, block in blocks:
        width = _width(block)
        params = sum(p.numel() for p in block.parameters())
        macs = sum(counts.get(f"{root}.{fqn}", {}).values()) / FLOPS_PER_MAC
        key = (width, tokens[fqn], params, _has_mlp(block))
        if lines and lines[-1]["_key"] == key:
            lines[-1]["blocks"] += 1
            continue
        lines.append(
            {
                "_key": key,
                "model": name,
                "family": zoo.family_of(name),
                "stage": len(lines),
                "blocks": 1,
                "width": width,
                "tokens": tokens[fqn],
                "params_per_block_m": round(params / 1e6, 4),
                "gmacs_per_block": round(macs / 1e9, 4),
                "params_over_d2": round(params / width**2, 3),
                "macs_per_token_over_d2": round(macs / (tokens[fqn] * width**2), 3),
                "mlp": _has_mlp(block),
                "pos_embed": isinstance(getattr(model, "pos_embed", None), torch.Tensor),
            }
        )
    for line in lines:
        del line["_key"]
    return lines


def main() -> None:
    rows = [line for name in MODELS for line in block_rows(name)]
    with OUT.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*rows[0], "source"])
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "source": "computed by study/data/block_costs.py"})
    print(f"wrote {OUT} ({len(rows)} lines)")


if __name__ == "__main__":
    main()
