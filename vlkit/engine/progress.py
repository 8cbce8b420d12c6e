"""The rank-0 progress bar: optimizer steps towards the run's total, loss, samples/s, MFU and ETA."""
from __future__ import annotations

from tqdm.auto import tqdm


class ProgressBar:
    """A tqdm bar over optimizer steps; disabled (every call a no-op) when ``enabled`` is False."""

    def __init__(self, total_steps: int, done_steps: int, enabled: bool):
        self._bar = tqdm(total=total_steps, initial=done_steps, unit="step", dynamic_ncols=True,
                         disable=not enabled)

    def advance(self, loss: float | None = None, samples_per_s: float | None = None,
                mfu: float | None = None) -> None:
        """One more optimizer step; refresh the shown loss, throughput and MFU when given."""
        postfix = {}
        if loss is not None:
            postfix["loss"] = f"{loss:.4f}"
        if samples_per_s is not None:
            postfix["samples/s"] = f"{samples_per_s:.1f}"
        if mfu is not None:
            postfix["mfu"] = f"{100 * mfu:.1f}%"
        if postfix:
            self._bar.set_postfix(postfix, refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()
