"""BioASQ (yes/no questions) rationales from the paper's two teachers, generated anew.

FLAN-T5-xl (seq2seq, plain prompt) and LLaMA-2-7B-chat (causal, its chat
template) with teacher-forced chain of thought, as the TinyLLM paper: two
in-context examples from the bioasq training split (showing the published FLAN-T5
rationales), then the question, the options and the gold answer. Needs the
model weights (HF hub or local copies) and a GPU. Settings: tinyllm_jax/teachers/paper.py.

BioASQ is not in ../shared. The authors publish it in the TinyLLM layout in
their repository, github.com/YikunHan42/TinyLLM, under datasets/bioasq/:

    bioasq/bioasq_train.json    976 questions   JSON arrays of {id, question,
    bioasq/bioasq_valid.json    109 questions    choices: ["yes", "no"], answer}
    bioasq/bioasq_test.json     123 questions
    bioasq/llm/train_CoT_0.json (500), train_CoT_1.json (476),
    bioasq/llm/valid_CoT_0.json (109), test_CoT_0.json (123)   teacher strings

(counts read from that repository's snapshot). Clone it and pass
`data_dir=<clone>/datasets`. The questions come from BioASQ's own releases
(participants-area.bioasq.org/datasets, registration needed); the authors kept
yes/no questions, and each question text starts with its evidence snippets, so
inputs are long: LLaMA-2 prompts drop in-context examples until they fit its
context, as for PubMedQA.

    python -m tinyllm_jax.teachers --config=configs/teachers/bioasq.py --dry_run=2
    python -m tinyllm_jax.teachers --config=configs/teachers/bioasq.py
    python -m tinyllm_jax.teachers --config=configs/teachers/bioasq.py \
        --teachers=llama2_7b_chat --splits=train

Argument: `--config=configs/teachers/bioasq.py:data_dir=DIR,device=cuda:0,flan=PATH,llama=PATH`
(model paths default to the hub ids). Output:
runs/rationales/bioasq/{flan_t5_xl,llama2_7b_chat}/{train,valid,test}.jsonl;
rerunning resumes. Train a student on them with
`--config.data.teachers=flan_t5_xl+llama2_7b_chat --config.data.rationale_store=runs/rationales`.
"""

from tinyllm_jax.teachers.paper import paper_config


def get_config(arg: str | None = None):
    return paper_config("bioasq", arg, limit_llama_prompt=True)
