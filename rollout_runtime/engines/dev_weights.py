"""Loading new weights into the dev engine's live model (``POST /update_weights_from_disk``).

All or nothing: every tensor of the checkpoint is checked against the model (name and shape) before
any is copied, so a bad checkpoint leaves the old weights serving, as SGLang's loader rolls back.
Messages follow SGLang's ``ModelRunner`` weight updater (``Failed to get weights iterator: ...`` /
``Failed to update weights: ... Rolling back to original weights.``) and name the offending tensor.
Tensors the checkpoint does not carry keep their values (a tied ``lm_head`` is often not saved).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

SUPPORTED_FORMATS = ("auto", "safetensors")


def checkpoint_files(path: str) -> list[Path]:
    """The safetensors files of a checkpoint directory (or the one file ``path`` names)."""
    if os.path.isdir(path):
        return sorted(Path(path).glob("*.safetensors"))
    return [Path(path)] if path.endswith(".safetensors") and os.path.isfile(path) else []


def load_weights_into(model: Any, path: str, load_format: str) -> tuple[bool, str]:
    """Copy the tensors at ``path`` into ``model`` (a torch module): (success, message)."""
    if load_format not in SUPPORTED_FORMATS:
        return False, (f"Failed to get weights iterator: load format {load_format!r} is not supported by the dev "
                       f"engine (use {' or '.join(SUPPORTED_FORMATS)}).")
    files = checkpoint_files(path)
    if not files:
        return False, f"Failed to get weights iterator: Cannot find any model weights with `{path}`."
    import torch
    from safetensors.torch import load_file

    params = model.state_dict()
    staged = []
    try:
        for f in files:
            for name, tensor in load_file(str(f)).items():
                target = params.get(name)
                if target is None:
                    raise ValueError(f"tensor `{name}` in {f.name} is not a parameter of this model "
                                     f"({type(model).__name__})")
                if target.shape != tensor.shape:
                    raise ValueError(f"Attempted to load weight ({tensor.size()}) into parameter ({target.size()}) "
                                     f"for tensor `{name}`")
                staged.append((target, tensor))
    except Exception as e:  # noqa: BLE001 - reported to the client, as SGLang does
        return False, f"Failed to update weights: {e}.\nRolling back to original weights."
    with torch.no_grad():
        for target, tensor in staged:
            target.copy_(tensor.to(target.dtype))
    return True, "Succeeded to update model weights."
