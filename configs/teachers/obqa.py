"""OpenBookQA rationales from the paper's two teachers, generated anew.

FLAN-T5-xl (seq2seq, plain prompt) and LLaMA-2-7B-chat (causal, its chat
template) with teacher-forced chain of thought: two in-context examples from
the OBQA training split, then the question, the options and the gold answer.
Needs the model weights (HF hub or local copies) and a GPU.

    python -m tinyllm_jax.teachers --config=configs/teachers/obqa.py --dry_run=2
    python -m tinyllm_jax.teachers --config=configs/teachers/obqa.py
    python -m tinyllm_jax.teachers --config=configs/teachers/obqa.py \
        --teachers=llama2_7b_chat --splits=train

Argument: `--config=configs/teachers/obqa.py:data_dir=DIR,device=cuda:0,flan=PATH,llama=PATH`
(model paths default to the hub ids). Output:
runs/rationales/obqa/{flan_t5_xl,llama2_7b_chat}/{train,valid,test}.jsonl;
rerunning resumes. Teacher names differ from the published "flan"/"llama"
(see tinyllm_jax/teachers/importer.py) so both can live in one store. Plain
chain of thought for comparison: `--config.prompt.teacher_forcing=False` with
another `--config.out_dir`.
"""

from tinyllm_jax.teachers.paper import paper_config


def get_config(arg: str | None = None):
    return paper_config("obqa", arg)
