"""Stop at the first NaN or infinite loss, naming where it happened and what came before."""

from __future__ import annotations

import keras

from tfkit.checkpoints import NonFiniteLossError
from tfkit.state import TrainState


class NanGuard(keras.callbacks.Callback):
    """Raises `NonFiniteLossError` after a call whose steps stopped at a non-finite loss.

    The compiled call stops at such a step itself (it runs fewer steps than
    it tried); this turns that into an error a user can act on.

    Example:
        >>> guard = NanGuard(TrainState(), steps_per_epoch=10)
    """

    def __init__(self, state: TrainState, *, steps_per_epoch: int) -> None:
        super().__init__()
        self.state, self.steps_per_epoch = state, steps_per_epoch

    def on_train_batch_end(self, batch, logs=None):
        call, step = self.state.call, self.state.step
        if call.ran >= call.tried:
            return
        epoch = step // self.steps_per_epoch
        raise NonFiniteLossError(
            f"the loss became NaN or infinite at step {step + 1} (epoch {epoch + 1}, step "
            f"{step - epoch * self.steps_per_epoch + 1} of {self.steps_per_epoch}); the last "
            f"finite loss was {self.state.last_loss}. Lower the learning rate, clip gradients "
            "(clip_norm=1.0), or check the data for extreme values; checkpoints hold only "
            "finite weights"
        )
