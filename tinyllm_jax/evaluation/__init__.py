"""Evaluation of a student, end to end; one job per module.

    batching     eval order, padded eval batches, the one bucketing rule
    decoding     jitted greedy decoding with a KV cache
    ranking      rank classification of the answer choices
    scoring      answer matching and the accuracy report
    predictions  the per-example predictions file
    split        one split scored the way training and --mode=eval do it

Nothing is imported here, so `import tinyllm_jax.evaluation.batching` (data
code, no model) does not pull in the model and the decoder.
"""
