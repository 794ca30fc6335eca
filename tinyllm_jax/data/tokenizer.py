"""`config.data.tokenizer` names, resolved: the data package's own, then the generic ones.

`tinyllm_jax.tokenizers.load_tokenizer` resolves "byte", "t5", a directory, a
tokenizer.json path and an HF hub id, and depends on nothing in the data
package. The name "synthetic" needs the synthetic corpus to build its
vocabulary, so it is resolved here, above both; every caller that may be given
"synthetic" (a config's data.tokenizer, a workdir's saved metadata) uses
`load_named_tokenizer`.
"""

from __future__ import annotations

import os

from tinyllm_jax.data.synthetic_tokenizer import build_synthetic_tokenizer
from tinyllm_jax.tokenizers import Tokenizer, load_tokenizer

SYNTHETIC = "synthetic"


def load_named_tokenizer(spec: str | os.PathLike[str]) -> Tokenizer:
    """The synthetic vocabulary for "synthetic", else `tokenizers.load_tokenizer(spec)`."""
    if isinstance(spec, (str, os.PathLike)) and str(spec).strip().lower() == SYNTHETIC:
        return build_synthetic_tokenizer()
    return load_tokenizer(spec)
