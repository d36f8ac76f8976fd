"""autotune: hyperparameter and architecture search for MoE / sparse-attention transformers.

The public entry points are the ``autotune`` command (``autotune.cli``), ``autotune.spec.load_spec``
and ``autotune.samplers.build_sampler``.
"""

__version__ = "0.1.0"
