"""Trained weights for a zoo model: a checkpoint file (`ckpt=`) or timm's hub (`pretrained=true`).

Checkpoints are untrusted files: `.safetensors` are read with safetensors, anything else with
`torch.load(weights_only=True)`, which refuses arbitrary pickled objects. The state dict is
unwrapped ({"model": ...}, {"state_dict": ...}, a DDP "module." prefix), passed through the
family's timm-style `checkpoint_filter_fn(state_dict, model)` where its module defines one (official
Vim/VMamba names -> ours, position embeddings resized), then must match the model exactly.
"""

import argparse
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn as nn

_SHOWN_KEYS = 12  # keys listed per kind of mismatch in the error line


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file, unwrapped from {"model"|"state_dict"|"module": ...}."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"ckpt={path} does not exist or is not a file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path), device="cpu")
    else:
        try:
            # argparse.Namespace: the training args DeiT-style scripts save beside the weights.
            with torch.serialization.safe_globals([argparse.Namespace]):
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # pickle.UnpicklingError, RuntimeError, EOFError, ...
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            reason = next((x for x in lines if "Unsupported" in x), lines[0] if lines else "")
            reason = reason.split(". Please")[0][:200]
            raise ValueError(
                f"ckpt={path} is not a weights-only torch checkpoint ({reason}); re-save "
                "its state dict alone, e.g. torch.save(ckpt['model'], path), where you trust it"
            ) from None
    for wrapper in ("model", "state_dict", "module"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f"ckpt={path} holds no state dict of tensors")
    return {key.removeprefix("module."): value for key, value in state.items()}


def _listed(keys: list[str]) -> str:
    more = f", ... (+{len(keys) - _SHOWN_KEYS} more)" if len(keys) > _SHOWN_KEYS else ""
    return ", ".join(keys[:_SHOWN_KEYS]) + more


def match_state_dict(
    model: nn.Module, state: dict[str, torch.Tensor], name: str, source: str
) -> dict[str, torch.Tensor]:
    """`state` mapped by the family's checkpoint_filter_fn; ValueError listing any mismatch."""
    filter_fn = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    if filter_fn is not None:
        try:
            state = filter_fn(state, model)
        except Exception as err:  # a foreign state dict can break a filter in any way
            raise ValueError(
                f"{source} does not fit {name}: its key mapping failed ({err})"
            ) from None
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        parts = [
            f"{len(found)} {kind} ({_listed(found)})"
            for kind, found in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("wrong shape", shapes),
            )
            if found
        ]
        raise ValueError(f"{source} does not fit {name}: keys " + "; ".join(parts))
    return state


def load_checkpoint(model: nn.Module, path: str | Path, name: str) -> None:
    """Load checkpoint `path` into zoo model `name` (in place); ValueError on any mismatch."""
    state = match_state_dict(model, read_state_dict(path), name, f"ckpt={path}")
    model.load_state_dict(state)


def _check_hub_reachable(name: str, timeout_s: float = 5.0) -> None:
    """Fail at once where the hub cannot be reached (its client would retry for about a minute)."""
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
    except OSError as err:
        raise ConnectionError(
            f"pretrained=true: cannot reach the Hugging Face hub ({host}: {err}) for {name}'s "
            "weights; download them where there is network and pass ckpt=<file>"
        ) from None


def load_pretrained(model: nn.Module, name: str) -> None:
    """timm's published weights for a timm zoo model, from the Hugging Face hub (needs network)."""
    from timm.models import load_pretrained as timm_load_pretrained

    cfg = getattr(model, "pretrained_cfg", None) or {}
    if not (cfg.get("hf_hub_id") or cfg.get("url") or cfg.get("file")):
        raise ValueError(f"pretrained=true: timm publishes no weights for {name}; use ckpt=<file>")
    _check_hub_reachable(name)
    filter_fn = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    try:
        timm_load_pretrained(model, pretrained_cfg=cfg, filter_fn=filter_fn)
    except (OSError, RuntimeError, ValueError) as err:  # offline: LocalEntryNotFoundError, ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ConnectionError(
            f"pretrained=true: cannot fetch {name}'s weights from the Hugging Face hub "
            f"({type(err).__name__}: {first[:160]}); download them elsewhere and pass ckpt=<file>"
        ) from None
