"""Your own multiple-choice data: one JSONL / CSV / Parquet file per split, or
an HF `datasets` dataset (README, "Use your own data").

    python -m tinyllm_jax.main --config=configs/own_data.py:path=mydata,test=test.jsonl,teachers=gpt \
        --workdir=workdirs/mine

Args (after a colon): name, format (jsonl|csv|parquet|hf), path (hf: a
save_to_disk directory or hub id; files: their directory), train, valid, test
(files; hf: split names), teachers (a+b; each teacher's rationales are read
from the column of the same name), size, tokenizer, steps. No valid file: no
evaluation during training; no test file: no final evaluation. Columns
default to question, choices (a list), answer (text, letter or index); change
them with --config.data.table.question=... etc.
"""

from tinyllm_jax.configs import base_config, parse_arg, split_teachers


def get_config(arg: str | None = None):
    a = parse_arg(arg, name="mydata", format="jsonl", path="", train="train.jsonl", valid="",
                  test="", teachers="none", size="small", tokenizer="t5", steps=1000)
    teachers = split_teachers(a["teachers"])
    c = base_config(dataset=a["name"], teachers=teachers, size=a["size"],
                    tokenizer=a["tokenizer"])
    t = c.data.table
    t.format, t.path = a["format"], a["path"]
    t.train, t.valid, t.test = a["train"], a["valid"], a["test"]
    t.rationales = teachers  # one column per teacher, named like the teacher
    c.train.steps = a["steps"]
    c.train.eval_every = max(1, a["steps"] // 5)
    c.train.checkpoint_every = max(1, a["steps"] // 5)
    c.train.log_every = max(1, min(50, a["steps"] // 10))
    if not a["valid"] and a["format"] != "hf":
        c.train.eval_every = 0
        c.train.eval_splits = ()
        c.train.keep_best = False
    if not a["test"] and a["format"] != "hf":
        c.train.final_eval_split = ""
    return c
