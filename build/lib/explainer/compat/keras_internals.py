"""Every private Keras name the project uses (``keras.src``), in one place, each with the public API it stands in for.

Keras 3 promises nothing about ``keras.src``: a release may move or drop any of these. Importing them here, and
nowhere else, makes an upgrade that breaks one fail on importing :mod:`explainer` with its name, and
``tests/test_compat.py`` checks each is still the kind of object (and, for the graph replay, the behaviour) the
code relies on. :data:`USED` lists the attributes taken from the modules re-exported whole.
"""

from __future__ import annotations

# explainer.server.budget sizes a model from its config without allocating weights: keras.StatelessScope defers
# variables into the per-thread list global_state keeps ("uninitialized_variables"); no public API hands it out.
from keras.src.backend.common import global_state

# explainer.server.budget reads a legacy HDF5 model without its weights, as keras.models.load_model would:
# json_utils.decode is the JSON decoder of the file's model_config (its hooks rebuild TensorShape and TypeSpec
# entries: json.loads leaves them dicts); saving_options.keras_option_scope(use_legacy_config=True) and
# saving_utils.model_from_config build the model from that legacy config (public keras.models.model_from_json runs the
# Keras 3 deserializer, without the legacy option scope).
from keras.src.legacy.saving import json_utils, saving_options, saving_utils

# explainer.graph.Replay: tells a functional model from a subclassed one and runs its graph op by op. Public
# keras.Model is the base of both (keras.Model(inputs, outputs) returns a Functional), and no public API runs a
# graph with each operation swapped (Functional._run_through_graph(x, operation_fn=...)).
# operation_fn(op, training=False): how Functional calls one operation, passing the call-context arguments (training)
# only to those that declare them; calling op(x, training=False) directly fails on layers whose call takes none.
from keras.src.models.functional import Functional, operation_fn

# explainer.models.hub: SafeModeScope(True) forces safe deserialization around keras_hub's from_preset, which takes
# no safe_mode argument; public keras.config.enable_unsafe_deserialization() only switches safe mode off, globally.
# explainer.server.budget: also ObjectSharingScope (shared layers in a config, no public scope) and
# deserialize_keras_object(config, safe_mode=True) as Keras's own load_model builds a model (public too, as
# keras.saving.deserialize_keras_object: taken from the module whose scopes wrap it).
from keras.src.saving import serialization_lib
from keras.src.saving.serialization_lib import SafeModeScope

#: The attributes of the re-exported modules the project calls (what tests/test_compat.py checks).
USED: dict[str, tuple[str, ...]] = {
    "serialization_lib": ("SafeModeScope", "ObjectSharingScope", "deserialize_keras_object"),
    "json_utils": ("decode",),
    "saving_options": ("keras_option_scope",),
    "saving_utils": ("model_from_config",),
    "global_state": ("get_global_attribute", "set_global_attribute"),
}

__all__ = ["USED", "Functional", "SafeModeScope", "global_state", "json_utils", "operation_fn", "saving_options",
           "saving_utils", "serialization_lib"]
