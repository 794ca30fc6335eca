"""Bad input never escapes as a bare traceback: each case is a DataError that
names the file, the line or row, the field, and what was expected."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tinyllm_jax.data.errors import DataError
from tinyllm_jax.data.provenance import question_hash
from tinyllm_jax.data.store import append_records, read_store, store_path
from tinyllm_jax.data.tinyllm import read_split
from tinyllm_jax.data.tinyllm_files import CHUNK_SIZE, teacher_chunk_paths

GOOD = [
    {"id": "a1", "question": "Which is hot?", "choices": ["fire", "ice"], "answer": "fire"},
    {"id": "a2", "question": "Which is wet?", "choices": ["sand", "rain"], "answer": "rain"},
    {"id": "a3", "question": "Which flies?", "choices": ["bird", "rock"], "answer": "bird"},
]


def string_for(q: dict, rationale: str = "Because it is.", llama: str = "Some thought.") -> str:
    letter = "ab"[q["choices"].index(q["answer"])]
    return (f"{rationale} Thus, the answer is ({letter}) {q['answer']}\n\nQ: {q['question']}"
            f"\nAnswer Choices:\n(a) {q['choices'][0]}\n(b) {q['choices'][1]}"
            f" llama rationale: {llama}")


def layout(root: Path, questions_text: str | None = None, strings: list | None = None,
           chunks: list[list] | None = None) -> Path:
    """A one-split dataset "bad" under root; by default every part is valid."""
    d = root / "bad"
    (d / "llm").mkdir(parents=True)
    if questions_text is None:
        questions_text = "".join(json.dumps(q) + "\n" for q in GOOD)
    (d / "bad_train.json").write_text(questions_text)
    if chunks is None:
        chunks = [strings if strings is not None else [string_for(q) for q in GOOD]]
    for k, chunk in enumerate(chunks):
        (d / "llm" / f"train_CoT_{k}.json").write_text(json.dumps(chunk))
    return root


def read(root: Path, teachers=("flan", "llama"), **kw):
    return read_split(root, "bad", "train", teachers, **kw)


def test_valid_baseline_reads(tmp_path):
    examples, _ = read(layout(tmp_path))
    assert [e.answer for e in examples] == ["fire", "rain", "bird"]


def test_malformed_json_line_names_file_and_line(tmp_path):
    lines = [json.dumps(q) for q in GOOD]
    lines[1] = lines[1][:-5]
    with pytest.raises(DataError) as err:
        read(layout(tmp_path, "\n".join(lines) + "\n"))
    e = err.value
    assert e.path.endswith("bad_train.json") and e.line == 2
    assert "bad_train.json, line 2: malformed JSON line" in str(e)


def test_malformed_json_array_names_line(tmp_path):
    text = json.dumps(GOOD, indent=1).replace('"rain"\n', '"rain",\n', 1)
    with pytest.raises(DataError, match=r"bad_train\.json, line \d+: malformed JSON array"):
        read(layout(tmp_path, text))


@pytest.mark.parametrize("field", ["answer", "choices", "id", "question"])
def test_record_missing_a_field(tmp_path, field):
    records = [dict(q) for q in GOOD]
    del records[2][field]
    text = "".join(json.dumps(q) + "\n" for q in records)
    with pytest.raises(DataError) as err:
        read(layout(tmp_path, text))
    assert (err.value.line, err.value.row, err.value.field) == (3, 2, field)
    assert f"bad_train.json, line 3, row 2, field '{field}': record has no '{field}'" in str(err.value)


def test_answer_not_among_choices(tmp_path):
    records = [dict(q) for q in GOOD]
    records[0]["answer"] = "water"
    with pytest.raises(DataError, match=r"row 0, field 'answer': answer 'water' is not among"):
        read(layout(tmp_path, json.dumps(records)))


def test_answer_matching_two_choices_is_ambiguous(tmp_path):
    records = [dict(q) for q in GOOD]
    records[0]["choices"] = ["fire", "fire"]
    with pytest.raises(DataError, match=r"row 0, field 'answer'.*more than one choice"):
        read(layout(tmp_path / "a", json.dumps(records)), teachers=())
    # Choices equal only up to blanks: the exact match decides, and it is counted.
    records[0]["choices"] = ["fire", "fire "]
    examples, report = read(layout(tmp_path / "b", json.dumps(records)), teachers=())
    assert examples[0].answer_index == 0 and report.counts["duplicate_choices"] == 1


def test_choices_not_a_list(tmp_path):
    records = [dict(q) for q in GOOD]
    records[1]["choices"] = "fire, ice"
    with pytest.raises(DataError, match=r"row 1, field 'choices'.*list of at least two"):
        read(layout(tmp_path, json.dumps(records)))


def test_duplicate_ids(tmp_path):
    records = [dict(q) for q in GOOD]
    records[2]["id"] = "a1"
    text = "".join(json.dumps(q) + "\n" for q in records)
    with pytest.raises(DataError, match=r"line 3, row 2, field 'id': duplicate id 'a1' \(first at row 0\)"):
        read(layout(tmp_path, text))


def test_rationale_file_shorter_than_question_file(tmp_path):
    root = layout(tmp_path, strings=[string_for(q) for q in GOOD[:2]])
    with pytest.raises(DataError, match=r"train_CoT_0\.json: teacher files hold 2 rows but .* 3 questions"):
        read(root)


def test_rationale_file_longer_than_question_file(tmp_path):
    root = layout(tmp_path, strings=[string_for(q) for q in [*GOOD, GOOD[0]]])
    with pytest.raises(DataError, match=r"teacher files hold 4 rows but .* 3 questions"):
        read(root)


def test_misaligned_rationale_names_file_chunk_and_row(tmp_path):
    root = layout(tmp_path, strings=[string_for(GOOD[0]), string_for(GOOD[2]), string_for(GOOD[1])])
    with pytest.raises(DataError) as err:
        read(root)
    e = err.value
    assert e.path.endswith("train_CoT_0.json") and e.row == 1 and e.field == "question"
    assert "chunk 0, string 1 of the chunk" in str(e) and "id 'a2'" in str(e)


def test_non_last_chunk_with_wrong_size(tmp_path):
    root = layout(tmp_path, chunks=[[string_for(GOOD[0])], [string_for(q) for q in GOOD[1:]]])
    with pytest.raises(DataError, match=r"train_CoT_0\.json: chunk 0 holds 1 strings \(expected 500"):
        read(root)


def test_missing_chunk_in_the_middle(tmp_path):
    root = layout(tmp_path)
    (root / "bad" / "llm" / "train_CoT_2.json").write_text("[]")
    with pytest.raises(DataError, match=r"teacher chunks \[1\] missing"):
        read(root)


def test_teacher_string_without_choices_block(tmp_path):
    strings = [string_for(q) for q in GOOD]
    strings[1] = strings[1].replace("\nAnswer Choices:\n", "\n")
    with pytest.raises(DataError, match=r"train_CoT_0\.json, row 1: chunk 0, string 1 .*no 'Answer Choices:'"):
        read(layout(tmp_path, strings=strings))


def test_teacher_file_not_an_array_of_strings(tmp_path):
    with pytest.raises(DataError, match=r"row 1: chunk 0, string 1 is a int"):
        read(layout(tmp_path, strings=[string_for(GOOD[0]), 7, string_for(GOOD[2])]))


def test_unknown_teacher_lists_available(tmp_path):
    root = layout(tmp_path)
    store = tmp_path / "store"
    store_path(store, "bad", "qwen", "train").parent.mkdir(parents=True)
    store_path(store, "bad", "qwen", "train").write_text('{"id": "a1", "rationale": "r"}\n')
    with pytest.raises(DataError) as err:
        read(root, teachers=("flan", "gpt"), store_dir=store)
    assert err.value.field == "teachers"
    assert "unknown teacher 'gpt'" in str(err.value)
    assert "['flan', 'llama', 'qwen']" in str(err.value)


def test_empty_rationale_becomes_none_and_is_counted(tmp_path):
    strings = [string_for(GOOD[0], rationale="", llama="  "), string_for(GOOD[1]),
               string_for(GOOD[2])]
    examples, report = read(layout(tmp_path, strings=strings))
    assert examples[0].rationales == {"flan": None, "llama": None}
    assert report.counts["flan/empty_rationale"] == 1
    assert report.counts["llama/empty_rationale"] == 1


def write_store(tmp_path: Path, lines: list[str]) -> Path:
    path = store_path(tmp_path / "store", "bad", "qwen", "train")
    path.parent.mkdir(parents=True)
    path.write_text("".join(line + "\n" for line in lines))
    return tmp_path / "store"


def test_store_line_with_unknown_id(tmp_path):
    store = write_store(tmp_path, ['{"id": "a1", "rationale": "r"}', '{"id": "zz", "rationale": "r"}'])
    with pytest.raises(DataError, match=r"train\.jsonl, line 2, field 'id': id 'zz' is not in .*bad_train\.json"):
        read(layout(tmp_path), teachers=("qwen",), store_dir=store)


def test_store_line_with_duplicate_id(tmp_path):
    store = write_store(tmp_path, ['{"id": "a1", "rationale": "r"}', '{"id": "a1", "rationale": "s"}'])
    with pytest.raises(DataError, match=r"line 2, field 'id': duplicate id 'a1' \(first on line 1\)"):
        read(layout(tmp_path), teachers=("qwen",), store_dir=store)


def test_store_malformed_middle_line(tmp_path):
    store = write_store(tmp_path, ['{"id": "a1", "rationale": "r"}', '{"id": "a2", ', '{"id": "a3"}'])
    with pytest.raises(DataError, match=r"train\.jsonl, line 2: malformed JSON"):
        read(layout(tmp_path), teachers=("qwen",), store_dir=store)


def test_store_record_without_rationale_field(tmp_path):
    store = write_store(tmp_path, ['{"id": "a1", "teacher_answer": "fire"}'])
    with pytest.raises(DataError, match=r"line 1, field 'rationale'.*expected a string or null"):
        read(layout(tmp_path), teachers=("qwen",), store_dir=store)


def test_store_record_with_bad_id_type(tmp_path):
    path = write_store(tmp_path, ['{"id": null, "rationale": "r"}']) / "bad" / "qwen" / "train.jsonl"
    with pytest.raises(DataError, match=r"line 1, field 'id': bad id None"):
        read_store(path)


@pytest.mark.parametrize("kw,field", [
    ({"label_source": "majority"}, "label_source"),
    ({"teachers": "flan"}, "teachers"),
    ({"teachers": ("flan", "flan")}, "teachers"),
])
def test_bad_options(tmp_path, kw, field):
    args = {"teachers": ("flan",), **kw}
    teachers = args.pop("teachers")
    with pytest.raises(DataError) as err:
        read(layout(tmp_path), teachers=teachers, **args)
    assert err.value.field == field


def test_unknown_split_and_dataset(tmp_path):
    root = layout(tmp_path)
    with pytest.raises(DataError, match=r"field 'split': unknown split 'dev'"):
        read_split(root, "bad", "dev", ("flan",))
    with pytest.raises(DataError, match=r"no dataset directory 'obqa' \(expected one of \['bad'\]\)"):
        read_split(root, "obqa", "train", ("flan",))


def test_missing_question_file_without_teacher_files(tmp_path):
    (tmp_path / "bad" / "llm").mkdir(parents=True)
    with pytest.raises(DataError, match=r"bad_valid\.json: question file not found"):
        read_split(tmp_path, "bad", "valid", ())


def test_builtin_teacher_without_teacher_files(tmp_path):
    root = layout(tmp_path)
    (root / "bad" / "llm" / "train_CoT_0.json").unlink()
    with pytest.raises(DataError, match=r"llm: no teacher files for split 'train' \(expected train_CoT_0"):
        read(root)
    assert len(read(root, teachers=())[0]) == 3  # a label-only run needs none


# ---------------------------------------------------------------- provenance: files that do not belong together


@pytest.mark.parametrize("stale", ["train_CoT_0000.json", "train_CoT_00.json"])
def test_two_files_for_one_chunk_number_are_named_both(tmp_path, stale):
    root = layout(tmp_path)
    llm = root / "bad" / "llm"
    shutil.copy(llm / "train_CoT_0.json", llm / stale)
    with pytest.raises(DataError, match=rf"train_CoT_0\.json and {stale.replace('.', '[.]')} both "
                                        r"hold teacher chunk 0 of split 'train'"):
        read(root)


def test_chunk_one_and_zero_one_are_named_both(tmp_path):
    llm = tmp_path / "mini" / "llm"
    llm.mkdir(parents=True)
    for name in ("train_CoT_0.json", "train_CoT_1.json", "train_CoT_01.json", "valid_CoT_01.json"):
        (llm / name).write_text("[]")
    with pytest.raises(DataError, match=r"train_CoT_01\.json and train_CoT_1\.json both hold "
                                        r"teacher chunk 1") as err:
        teacher_chunk_paths(tmp_path, "mini", "train")
    assert err.value.path == str(llm)
    with pytest.raises(DataError, match=r"teacher chunks \[0\] missing for split 'valid'"):
        teacher_chunk_paths(tmp_path, "mini", "valid")


def _recovered_chunk(tag: str) -> list[str]:
    return [string_for({"question": f"{tag} question {i}?", "choices": ["yes", "no"],
                        "answer": "yes"}) for i in range(CHUNK_SIZE)]


def test_copied_chunk_is_refused_even_without_a_question_file(tmp_path):
    # No question file: the rows are recovered from the Q: blocks and nothing
    # else would notice that chunk 1 repeats chunk 0.
    d = tmp_path / "bad" / "llm"
    d.mkdir(parents=True)
    chunk = _recovered_chunk("first")
    for k, strings in enumerate([chunk, _recovered_chunk("second"), chunk]):
        (d / f"train_CoT_{k}.json").write_text(json.dumps(strings))
    with pytest.raises(DataError, match=r"train_CoT_2\.json: chunk 2 is an exact copy of chunk 0 "
                                        r"\(train_CoT_0\.json\)"):
        read(tmp_path, teachers=("flan",))


def test_chunk_copied_from_another_split_is_refused_without_a_question_file(tmp_path):
    d = tmp_path / "bad" / "llm"
    d.mkdir(parents=True)
    (d / "valid_CoT_0.json").write_text(json.dumps(_recovered_chunk("valid")[:7]))
    shutil.copy(d / "valid_CoT_0.json", d / "train_CoT_0.json")
    with pytest.raises(DataError, match=r"train_CoT_0\.json: train_CoT_0\.json is byte for byte "
                                        r"valid_CoT_0\.json of split 'valid'"):
        read(tmp_path, teachers=("flan",))
    (d / "train_CoT_0.json").write_text(json.dumps(_recovered_chunk("train")[:7]))
    examples, report = read(tmp_path, teachers=("flan",))
    assert len(examples) == 7 and report.counts["recovered_from_teacher_files"] == 7


def test_near_miss_chunk_names_are_counted_and_named(tmp_path):
    root = layout(tmp_path)
    llm = root / "bad" / "llm"
    for name in ("train_cot_1.json", "train_CoT_1.jsonl", "train_CoT_٠.json", "valid_cot_1.json"):
        (llm / name).write_text("[]")
    examples, report = read(root)
    assert len(examples) == 3  # the non-ASCII digit is not read as chunk 0
    assert report.counts["teacher_files/unrecognised_names"] == 3
    note = next(n for n in report.notes if "not read as teacher chunks" in n)
    assert "train_cot_1.json" in note and "train_CoT_1.jsonl" in note
    assert "valid_cot_1.json" not in note


@pytest.mark.parametrize("target", ["question file", "teacher chunk", "store file"])
@pytest.mark.parametrize("kind,what", [("/dev/zero", "a character device"), ("fifo", "a named pipe"),
                                       ("dir", "a directory")])
def test_device_pipe_or_directory_instead_of_a_file_is_refused_at_once(tmp_path, target, kind, what):
    root = layout(tmp_path)
    store = write_store(tmp_path, ['{"id": "a1", "rationale": "r"}'])
    path = {"question file": root / "bad" / "bad_train.json",
            "teacher chunk": root / "bad" / "llm" / "train_CoT_0.json",
            "store file": store_path(store, "bad", "qwen", "train")}[target]
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)  # reading it would block forever
    elif kind == "dir":
        path.mkdir()
    else:
        path.symlink_to(kind)  # reading it would never end
    teachers = ("qwen",) if target == "store file" else ("flan",)
    with pytest.raises(DataError, match=rf"{path.name}: is {what}, not a regular file"):
        read(root, teachers=teachers, store_dir=store)


def test_dangling_question_file_link_is_an_error_not_a_recovery(tmp_path):
    root = layout(tmp_path)
    qfile = root / "bad" / "bad_train.json"
    qfile.unlink()
    qfile.symlink_to(tmp_path / "moved_away.json")
    with pytest.raises(DataError, match=r"bad_train\.json: question file not found"):
        read(root)


def test_builtin_teacher_store_path_that_is_a_directory_is_an_error(tmp_path):
    # Before: not a file, so the published rationales were used without a word.
    root = layout(tmp_path)
    store_path(tmp_path / "store", "bad", "flan", "train").mkdir(parents=True)
    with pytest.raises(DataError, match=r"flan/train\.jsonl: is a directory, not a regular file"):
        read(root, teachers=("flan",), store_dir=tmp_path / "store")


# ---------------------------------------------------------------- provenance: question hashes


def hashed_store(tmp_path: Path, questions: list[dict], *, with_hash: bool = True) -> Path:
    records = []
    for q in questions:
        record = {"id": q["id"], "rationale": f"about {q['id']}", "teacher_answer": q["answer"]}
        if with_hash:
            record["question_hash"] = question_hash(q["question"], q["choices"], q["answer"])
        records.append(record)
    store = tmp_path / "store"
    append_records(store_path(store, "bad", "qwen", "train"), records)
    return store


def edited(index: int, **changes) -> list[dict]:
    records = [dict(q) for q in GOOD]
    records[index].update(changes)
    return records


def test_store_generated_for_these_questions_joins(tmp_path):
    store = hashed_store(tmp_path, GOOD)
    examples, report = read(layout(tmp_path), teachers=("qwen",), store_dir=store)
    assert [e.rationales["qwen"] for e in examples] == ["about a1", "about a2", "about a3"]
    assert not any(k.startswith("qwen/question") for k in report.counts)


def test_whitespace_only_edit_keeps_the_store_valid(tmp_path):
    store = hashed_store(tmp_path, GOOD)
    questions = edited(1, question="Which  is wet? ", choices=["sand ", "rain"], answer="rain")
    text = "".join(json.dumps(q) + "\n" for q in questions)
    examples, _ = read(layout(tmp_path, text), teachers=("qwen",), store_dir=store)
    assert examples[1].rationales["qwen"] == "about a2"


@pytest.mark.parametrize("change,what", [
    ({"question": "Which is dry?"}, "the question differs"),
    ({"choices": ["rain", "sand"]}, "the choices differ"),
    ({"choices": ["sand", "rain", "snow"], "answer": "snow"}, "the choices and the answer differ"),
])
def test_store_generated_for_other_questions_is_refused(tmp_path, change, what):
    store = hashed_store(tmp_path, GOOD)
    text = "".join(json.dumps(q) + "\n" for q in edited(1, **change))
    with pytest.raises(DataError) as err:
        read(layout(tmp_path, text), teachers=("qwen",), store_dir=store)
    message = str(err.value)
    assert err.value.path.endswith("qwen/train.jsonl") and err.value.line == 2
    assert err.value.field == "question_hash"
    assert "1 of 3 records were generated for other questions than" in message
    assert f"id 'a2': {what}" in message and "store_mismatch='drop'" in message


def test_store_mismatch_drop_drops_and_counts_only_those_records(tmp_path):
    store = hashed_store(tmp_path, GOOD)
    text = "".join(json.dumps(q) + "\n" for q in edited(2, question="Which swims?"))
    examples, report = read(layout(tmp_path, text), teachers=("qwen",), store_dir=store,
                            store_mismatch="drop")
    assert [e.rationales["qwen"] for e in examples] == ["about a1", "about a2", None]
    assert report.counts["qwen/question_mismatch_dropped"] == 1
    assert report.counts["qwen/missing_rationale"] == 1
    assert any("dropped (store_mismatch='drop')" in n for n in report.notes)
    with pytest.raises(DataError, match=r"field 'store_mismatch': unknown store_mismatch 'keep'"):
        read(layout(tmp_path / "x", text), teachers=("qwen",), store_dir=store,
             store_mismatch="keep")


def test_store_without_question_hashes_is_read_and_counted(tmp_path):
    store = hashed_store(tmp_path, GOOD, with_hash=False)
    examples, report = read(layout(tmp_path), teachers=("qwen",), store_dir=store)
    assert examples[0].rationales["qwen"] == "about a1"
    assert report.counts["qwen/question_hash_absent"] == 3
    assert any("carry no question_hash" in n and "joined by id unchecked" in n
               for n in report.notes)


def test_malformed_question_hash_names_the_line(tmp_path):
    store = write_store(tmp_path, ['{"id": "a1", "rationale": "r", "question_hash": "abc"}'])
    with pytest.raises(DataError, match=r"line 1, field 'question_hash': bad question_hash 'abc'"):
        read(layout(tmp_path), teachers=("qwen",), store_dir=store)


def test_synthetic_store_of_another_seed_is_refused(tmp_path):
    from tinyllm_jax.data.pipeline import load_examples
    from tinyllm_jax.data.synthetic import SyntheticConfig, generate_split
    from tinyllm_jax.spec import data_spec

    seed0, _ = generate_split("train", SyntheticConfig(train_size=6, seed=0), ())
    store = tmp_path / "store"
    append_records(store_path(store, "synthetic", "qwen", "train"), [
        {"id": e.id, "rationale": "r", "teacher_answer": None,
         "question_hash": question_hash(e.question, e.choices, e.answer)} for e in seed0])
    section = {"name": "synthetic", "teachers": ("qwen",), "rationale_store": str(store),
               "tokenizer": "byte", "synthetic": {"train_size": 6, "seed": 0}}
    examples, _ = load_examples(data_spec(section), "train")
    assert all(e.rationales["qwen"] == "r" for e in examples)
    section["synthetic"] = {"train_size": 6, "seed": 1}
    with pytest.raises(DataError, match=r"synthetic/qwen/train\.jsonl, line 1, field "
                                        r"'question_hash': \d of 6 records were generated for "
                                        r"other questions than synthetic/train"):
        load_examples(data_spec(section), "train")


def test_store_mismatch_is_a_validated_config_field():
    from tinyllm_jax.spec import ConfigError, data_spec

    assert data_spec({"store_mismatch": "drop"}).store_mismatch == "drop"
    with pytest.raises(ConfigError, match=r"config\.data\.store_mismatch"):
        data_spec({"store_mismatch": "ignore"})
