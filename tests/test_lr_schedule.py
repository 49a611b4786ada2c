"""The cosine schedule decays the learning rate over the epochs or the time budget."""

import keras
import numpy as np
import pytest

from components.trainer_module import _CosineDecay, _TimeBudget
from tfx_pipeline import config


def _rates(minutes: float, epochs: int = 4) -> list[float]:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x = np.zeros((8, 4), np.float32)
    schedule = _CosineDecay(0.1, _TimeBudget(minutes), epochs)
    history = model.fit(x, x[:, :1], epochs=epochs, verbose=0, callbacks=[schedule])
    return history.history["learning_rate"]


def test_without_budget_the_rate_follows_half_a_cosine_over_the_epochs():
    expected = [0.05 * (1 + np.cos(np.pi * e / 4)) for e in range(4)]
    np.testing.assert_allclose(_rates(0.0), expected, rtol=1e-5)


def test_a_spent_budget_takes_the_rate_to_zero():
    assert _rates(1e-9) == pytest.approx([0.0] * 4, abs=1e-9)


def test_an_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="lr_schedule must be one of plateau, cosine"):
        config.load(lr_schedule="linear")
