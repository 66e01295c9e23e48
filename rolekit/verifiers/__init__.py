"""Built-in verifiers beyond the one-line ones in ``rolekit.builtins``: ``math`` (math-verify)
and ``python`` (model-written code run in ``rolekit.sandbox``)."""
