"""The private Keras names behind :mod:`explainer.compat.keras_internals` are still there and still behave: a Keras
upgrade that moves or changes one fails here, naming it, not somewhere deep in a model load."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from explainer.compat import keras_internals as ki


@pytest.mark.parametrize(("module", "attribute"), [(m, a) for m, names in ki.USED.items() for a in names])
def test_each_attribute_the_project_calls_is_there(module, attribute):
    found = getattr(getattr(ki, module), attribute, None)
    assert callable(found), f"keras.src: {module}.{attribute} is gone or no longer callable (see keras_internals)"


def test_functional_is_the_class_of_a_functional_model_and_not_of_a_subclassed_one():
    assert isinstance(ki.Functional, type) and issubclass(ki.Functional, keras.Model), "Functional is not a Model class"
    inputs = keras.Input((3,))
    functional = keras.Model(inputs, keras.layers.Dense(2)(inputs))

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    assert isinstance(functional, ki.Functional), "keras.Model(inputs, outputs) is no longer a Functional"
    assert not isinstance(Subclassed(), ki.Functional)
    assert callable(getattr(functional, "_run_through_graph", None)), "Functional._run_through_graph is gone"


def test_operation_fn_passes_training_only_to_layers_that_take_it():
    dropout, dense = keras.layers.Dropout(0.99, seed=0), keras.layers.Dense(2, kernel_initializer="ones")
    x = np.ones((1, 4), np.float32)
    np.testing.assert_allclose(ki.operation_fn(dropout, training=False)(x), x)  # inference: dropout is identity
    assert not np.allclose(ki.operation_fn(dropout, training=True)(x), x), "operation_fn no longer passes training"
    np.testing.assert_allclose(ki.operation_fn(dense, training=False)(x), np.full((1, 2), 4.0))


def test_the_graph_can_be_replayed_with_an_operation_swapped():
    inputs = keras.Input((2,))
    double = keras.layers.Rescaling(2.0)
    model = keras.Model(inputs, keras.layers.Rescaling(3.0)(double(inputs)))

    def op_fn(op):
        return (lambda x, **kwargs: x) if op is double else ki.operation_fn(op, training=False)

    out = model._run_through_graph(model._standardize_inputs(np.ones((1, 2), np.float32)), operation_fn=op_fn)
    out = out[0] if isinstance(out, (list, tuple)) else out
    np.testing.assert_allclose(out, np.full((1, 2), 3.0))  # the doubling skipped, the tripling kept


def test_the_scopes_and_the_state_still_work():
    with ki.SafeModeScope(True):
        assert ki.serialization_lib.in_safe_mode() is True
    with ki.serialization_lib.ObjectSharingScope():
        pass
    key = "explainer_compat_probe"
    ki.global_state.set_global_attribute(key, [1])
    assert ki.global_state.get_global_attribute(key) == [1]
    ki.global_state.set_global_attribute(key, None)
    assert ki.json_utils.decode('{"a": [1, 2]}') == {"a": [1, 2]}
    with ki.saving_options.keras_option_scope(use_legacy_config=True):
        pass
