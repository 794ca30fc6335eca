"""RiddleSense rationales from the paper's two teachers, generated anew.

FLAN-T5-xl (seq2seq, plain prompt) and LLaMA-2-7B-chat (causal, its chat
template) with teacher-forced chain of thought, as the TinyLLM paper: two
in-context examples from the riddle training split (showing the published FLAN-T5
rationales), then the question, the options and the gold answer. Needs the
model weights (HF hub or local copies) and a GPU. Settings: tinyllm_jax/teachers/paper.py.

    python -m tinyllm_jax.teachers --config=configs/teachers/riddle.py --dry_run=2
    python -m tinyllm_jax.teachers --config=configs/teachers/riddle.py
    python -m tinyllm_jax.teachers --config=configs/teachers/riddle.py \
        --teachers=llama2_7b_chat --splits=train

Argument: `--config=configs/teachers/riddle.py:data_dir=DIR,device=cuda:0,flan=PATH,llama=PATH`
(model paths default to the hub ids). Output:
runs/rationales/riddle/{flan_t5_xl,llama2_7b_chat}/{train,valid,test}.jsonl;
rerunning resumes. Train a student on them with
`--config.data.teachers=flan_t5_xl+llama2_7b_chat --config.data.rationale_store=runs/rationales`.
"""

from tinyllm_jax.teachers.paper import paper_config


def get_config(arg: str | None = None):
    return paper_config("riddle", arg)
