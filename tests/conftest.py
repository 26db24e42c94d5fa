"""Test configuration: 8 forced CPU devices, strict NumPy rank promotion, shared helpers.

``XLA_FLAGS`` must be set before JAX is imported, so it is set here at the top
of the first file pytest imports.
"""

import os

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def rng():
    """A NumPy generator with a fixed seed, fresh for each test."""
    return np.random.default_rng(0)


# The longest tests of the default run, moved to ``-m slow`` to keep the default run near 12 minutes
# on 2 cores (chosen from ``pytest --durations``). Each has a cheaper sibling that stays in the
# default run and covers the same code path: another parameter of the same test (e.g. 8 devices of
# ``test_sharded_equals_single_device``), the first README snippet, one Hypothesis property per op.
LONG_TESTS = frozenset(
    (
        "tests/test_batch_split.py::test_split_step_with_padded_rows_and_steps_per_call",
        "tests/test_fit.py::test_interrupted_and_resumed_run_is_bit_identical",
        "tests/test_fit.py::test_steps_per_call_in_fit_matches_single_steps",
        "tests/test_fit_workflow.py::test_any_batch_size_on_eight_devices_equals_one_device",
        "tests/test_fit_workflow.py::test_frozen_layers_keep_their_batch_norm_statistics",
        "tests/test_fit_workflow.py::test_reduce_lr_on_plateau_scales_the_injected_learning_rate",
        "tests/test_fit_workflow.py::test_training_on_from_a_state_equals_an_uninterrupted_run",
        "tests/test_interop_module.py::test_from_torch_module_training_step_matches_torch",
        "tests/test_interop_strict.py::test_non_strict_returns_what_it_did_not_load_and_keeps_given_variables",
        "tests/test_models.py::test_data_parallel_axis_name_equals_single_device_on_the_global_batch[resnet_tiny-kwargs2-shape2]",
        "tests/test_models.py::test_every_model_under_jit_train_and_eval[alexnet_tiny]",
        "tests/test_models.py::test_every_model_under_jit_train_and_eval[mobilenet_v2_tiny]",
        "tests/test_nn.py::test_bf16_compute_with_f32_params",
        "tests/test_nnx_docs.py::test_every_python_block_of_the_doc_runs",
        "tests/test_nnx_layers.py::test_as_linen_like_carries_the_spectral_state_under_jit",
        "tests/test_nnx_layers.py::test_twin_equals_linen_given_the_linen_variables[SpectralNormConv-0]",
        "tests/test_nnx_layers.py::test_twin_equals_linen_given_the_linen_variables[SpectralNormConv-1]",
        "tests/test_nnx_train.py::test_adapter_apply_matches_linen_with_batch_mask_and_part_keys",
        "tests/test_nnx_train.py::test_batchnorm_dropout_model_equals_linen_on_8_devices[sharded]",
        "tests/test_nnx_train.py::test_fit_trains_an_nnx_model_and_the_result_converts_back",
        "tests/test_nnx_train.py::test_twenty_lwls_steps_with_dropout_equal_linen",
        "tests/test_nnx_zoo.py::test_converted_zoo_model_equals_linen_in_train_and_eval[resnet_tiny]",
        "tests/test_nnx_zoo.py::test_converted_zoo_model_equals_linen_in_train_and_eval[wavenet_tiny]",
        "tests/test_nnx_zoo.py::test_nnx_zoo_model_is_a_real_nnx_module",
        "tests/test_pool.py::test_bfloat16_gradients_finite",
        "tests/test_pool.py::test_grad_under_jit_and_vmap[unpool]",
        "tests/test_pool.py::test_property_adaptive_vs_torch",
        "tests/test_pool.py::test_property_avg_pool_vs_torch",
        "tests/test_pool.py::test_property_indices_vs_torch",
        "tests/test_pool.py::test_property_pairs_vs_loops",
        "tests/test_pool_vjp.py::test_equals_xla_value_gradient_and_jvp_without_ties[geometry3]",
        "tests/test_pool_vjp.py::test_equals_xla_value_gradient_and_jvp_without_ties[geometry4]",
        "tests/test_readme.py::test_readme_snippet_runs[2]",
        "tests/test_readme.py::test_readme_snippet_runs[3]",
        "tests/test_readme.py::test_readme_snippet_runs[4]",
        "tests/test_resnet_blocks.py::test_a_block_starts_as_the_identity_with_zero_init_residual",
        "tests/test_spectral.py::test_jit_matches_eager",
        "tests/test_spectral.py::test_power_iteration_is_exact_adjoint_and_differentiable",
        "tests/test_spectral.py::test_spectral_norm_conv_has_operator_norm_one_unlike_reshaped_matrix",
        "tests/test_spectral.py::test_spectral_norm_state_updates_only_in_training",
        "tests/test_train_strategies.py::test_padded_final_batch_trains_exactly_like_its_real_rows",
        "tests/test_train_strategies.py::test_pmap_equals_single_device[2]",
        "tests/test_train_strategies.py::test_sharded_equals_single_device[2]",
        "tests/test_train_strategies.py::test_sharded_equals_single_device[4]",
        "tests/test_train_strategies.py::test_steps_per_call_equals_single_steps[pmap-data]",
        "tests/test_train_strategies.py::test_steps_per_call_equals_single_steps[sharded-None]",
        "tests/test_train_strategies.py::test_zoo_model_on_many_devices_equals_one_device[lwls_cnn-shard_map-4]",
        "tests/test_train_strategies.py::test_zoo_model_on_many_devices_equals_one_device[lwls_cnn-sharded-8]",
        "tests/test_train_strategies.py::test_zoo_model_on_many_devices_equals_one_device[resnet_tiny-pmap-2]",
    )
)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Mark :data:`LONG_TESTS` slow before ``-m 'not slow'`` deselects by mark."""
    for item in items:
        if item.nodeid in LONG_TESTS:
            item.add_marker(pytest.mark.slow)
