"""The training time budget ends a run after the epoch that crosses it."""

import keras
import numpy as np

from components.trainer_module import _TimeBudget


def _fit(minutes: float) -> int:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.zeros((8, 4), np.float32)
    history = model.fit(x, x[:, :1], epochs=5, verbose=0, callbacks=[_TimeBudget(minutes)])
    return len(history.history["loss"])


def test_a_spent_budget_stops_after_one_epoch():
    assert _fit(1e-9) == 1


def test_no_budget_runs_every_epoch():
    assert _fit(0.0) == 5
