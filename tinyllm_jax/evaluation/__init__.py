"""Evaluation of a student, end to end; one job per module.

    batching     eval order, padded eval batches, the one bucketing rule
    decoding     jitted greedy decoding with a KV cache; decode_rows picks the decoder
    decoder_step the model calls every decoder makes (encode, one cached step)
    beam_search  jitted beam search, HF generate's step for step
    sampling     jitted sampling: temperature, top-k, top-p, seeded per row
    decode_options  the decoding options (HF's names), checked
    ranking      rank classification of the answer choices
    scoring      answer matching and the accuracy report
    predictions  the per-example predictions file
    split        one split scored the way training and --mode=eval do it

Nothing is imported here, so `import tinyllm_jax.evaluation.batching` (data
code, no model) does not pull in the model and the decoder.
"""
