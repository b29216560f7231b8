"""Reading a run's ``state.pt`` for resuming, without unpickling code and with a message that
names the file and the way out when it is damaged or not a training state at all."""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from ..errors import ModelError

REQUIRED_KEYS = ("model", "opt", "ema", "iter", "rng")


def load_resume_state(path, device) -> dict:
    """The dict saved by the training loop; ModelError for a truncated, corrupt or foreign file.
    Loads with ``weights_only=True`` only: a file that needs more is refused, never unpickled."""
    path = Path(path)
    way_out = "move it away (or delete it) to start this run afresh, or set out_dir to another folder"
    try:
        st = torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError, AttributeError,
            OSError) as e:
        text = str(e)
        if "unsupported global" in text.lower():
            why = "it holds Python objects other than tensors (not a state written by edge-deblur train)"
        else:
            # torch's message advises unpickling; keep only the cause
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
            cause = next((ln for ln in lines if "unsupported" in ln.lower() or "error" in ln.lower()
                          and "weights_only" not in ln), lines[0] if lines else type(e).__name__)
            if "weights_only" in cause:
                cause = type(e).__name__
            why = f"it is truncated or corrupt ({cause[:160]})"
        raise ModelError(f"cannot resume from {str(path)!r}: {why}; {way_out}") from None
    if not isinstance(st, dict) or any(k not in st for k in REQUIRED_KEYS):
        keys = sorted(st)[:8] if isinstance(st, dict) else type(st).__name__
        raise ModelError(
            f"cannot resume from {str(path)!r}: not a training state written by edge-deblur train "
            f"(holds {keys}, needs {', '.join(REQUIRED_KEYS)}); {way_out}"
        )
    return st
