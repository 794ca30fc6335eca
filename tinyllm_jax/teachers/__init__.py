"""Teacher rationale generation (TinyLLM's teacher side).

    python -m tinyllm_jax.teachers --config=configs/teachers/<x>.py [--dry_run=N]
    python -m tinyllm_jax.teachers.importer --root=... --datasets=... --out=...
    python -m tinyllm_jax.teachers.tiny --out=runs/tiny_teachers

config.py    the config layout and its validation (TeacherSpec, RunSpec)
prompts.py   k in-context examples + question/options/(gold answer) prompts
backends.py  HF transformers (causal/seq2seq) and optional vLLM generation
parsing.py   generated text -> rationale + stated answer, or an error reason
generate.py  the resumable, batched loop for one teacher and split
resume.py    which stored records a resumed run keeps (prompt and question checks)
store_lock.py  the lock a writer holds on one store file (holder named, stale taken over)
os_errors.py the commands' one-line message for an OS error
runner.py    config -> data -> teachers x splits
importer.py  the published TinyLLM rationales -> this store
tiny.py      tiny random teacher models for the demo and the tests

Store lines (`<out>/<dataset>/<teacher>/<split>.jsonl`, data/store.py):
{"id", "question_hash", "rationale", "teacher_answer", "prompt_hash", "model",
 "generation", "error", "notes", "demo_ids", "raw"}; `rationale` is null
exactly when `error` names why; `question_hash` (data/provenance.py) says
which question the line was generated for. `read_split(..., store_dir=out)`
reads them.
"""

from tinyllm_jax.teachers.config import TeacherError, base_config, teacher

__all__ = ["TeacherError", "base_config", "teacher"]
