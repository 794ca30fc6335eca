"""Fused attention implementations chosen by `config.model.attention_impl`.

"xla" is the inline path of `models/t5.py` (scores, bias, mask, softmax,
dropout, values as separate XLA ops). The others compute the same thing with
a library kernel:

- "dot_product": `jax.nn.dot_product_attention`. On GPU it asks for cuDNN's
  fused kernel (bias and mask supported; bfloat16/float16 only) and falls
  back to JAX's XLA implementation with a warning where cuDNN refuses the
  call; on CPU and TPU it is JAX's XLA implementation.
- "pallas_flash": the Pallas TPU flash-attention kernel
  (`jax.experimental.pallas.ops.tpu.flash_attention`) with T5's additive
  relative-position bias and segment ids. It is selected per platform when
  the program is lowered, so an AOT compile for a TPU topology from a CPU host
  gets the kernel; programs lowered for another platform get `xla_attention`
  (the same math) and a one-line warning says so. `pallas_interpret()` runs
  the kernel in Pallas' TPU interpret mode on any backend (tests, debugging).

Both kernels skip dropout on the attention probabilities (they have no
dropout input); a warning names it when dropout is active. Dropout on the
residual branches is unaffected.

Masks reach the kernels as `SegmentMask` (segment ids plus flags), not as a
dense [batch, 1, q, k] array, because flash kernels take segment ids.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import struct
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas.ops.tpu import flash_attention as tpu_flash

from tinyllm_jax.models.t5_config import ATTENTION_IMPLEMENTATIONS

Array = jax.Array
log = logging.getLogger(__name__)

IMPLEMENTATIONS = ATTENTION_IMPLEMENTATIONS
# Same constant as models/t5.py: finite, so a fully masked row stays finite.
MASK_VALUE = -1e10
# The TPU kernel's key blocks are multiples of 128 lanes; lengths are padded to it.
_LANES = 128
# The TPU kernel takes head dims up to 128, or multiples of 128.
_MAX_SMALL_HEAD_DIM = 128

_interpret_depth = 0


@struct.dataclass
class SegmentMask:
    """Who attends whom in a packed batch, in the segment-id form kernels take.

    Query i may read key j iff their segment ids are equal, and, with
    `skip_pad_keys`, the key's segment id is > 0 (segment 0 is padding), and,
    with `causal`, j <= i. `dense()` is the boolean mask of the XLA path.
    """

    q_segment_ids: Array  # [batch, q] int32
    kv_segment_ids: Array  # [batch, k] int32
    causal: bool = struct.field(pytree_node=False, default=False)
    skip_pad_keys: bool = struct.field(pytree_node=False, default=True)

    def dense(self) -> Array:
        """[batch, 1, q, k] boolean (True = may attend)."""
        return self._pairs()[:, None]

    def _pairs(self) -> Array:
        q, kv = self.q_segment_ids, self.kv_segment_ids
        allowed = q[:, :, None] == kv[:, None, :]
        if self.skip_pad_keys:
            allowed = allowed & (kv[:, None, :] > 0)
        if self.causal:
            allowed = allowed & (jnp.arange(kv.shape[1])[None, :] <= jnp.arange(q.shape[1])[:, None])
        return allowed

    def every_query_has_keys(self) -> bool:
        # Causal self-attention without skipped keys: each query reads itself.
        return self.causal and not self.skip_pad_keys

    def query_has_keys(self) -> Array:
        """[batch, q] boolean: the query may read at least one key."""
        return jnp.any(self._pairs(), axis=-1)


def dense_mask(mask: SegmentMask | Array | None) -> Array | None:
    """The XLA path's boolean [batch, 1, q, k] mask from either form."""
    return mask.dense() if isinstance(mask, SegmentMask) else mask


def uses_kernel(impl: str, decode: bool) -> bool:
    """Whether `attend` computes this attention (else the inline XLA path does).

    Decoding reads one query against the KV cache: nothing to fuse, so it
    always takes the XLA path.
    """
    return impl != "xla" and not decode


@contextlib.contextmanager
def pallas_interpret() -> Iterator[None]:
    """Run "pallas_flash" in Pallas' TPU interpret mode on whatever backend is here."""
    global _interpret_depth
    _interpret_depth += 1
    try:
        with pltpu.force_tpu_interpret_mode():
            yield
    finally:
        _interpret_depth -= 1


@functools.cache
def warn_once(message: str) -> None:
    """One log line per distinct message per process (a model traces 2-3
    attentions per layer); `warn_once.cache_clear()` re-arms them."""
    log.warning(message)


def attend(
    impl: str, q: Array, k: Array, v: Array, bias: Array | None, mask: SegmentMask | Array | None,
    *, dropout_active: bool = False,
) -> Array:
    """Attention without 1/sqrt(d) scaling: q [b, q, h, d], k and v [b, k, h, d],
    bias [1 or b, h, q, k] (added to the scores), mask as `SegmentMask` or dense.
    Returns the context [b, q, h, d] in v's dtype."""
    if impl not in IMPLEMENTATIONS[1:]:
        raise ValueError(f"attention implementation {impl!r}: must be one of {IMPLEMENTATIONS[1:]}")
    if dropout_active:
        warn_once(f"attention_impl={impl!r}: the fused kernel applies no dropout to the attention "
                  "probabilities (residual and MLP dropout still apply); use 'xla' for that")
    if impl == "dot_product":
        ctx = _dot_product(q, k, v, bias, dense_mask(mask))
    else:
        ctx = _pallas_flash(q, k, v, bias, mask)
    return _rows_without_keys_as_xla(ctx, v, mask)


def xla_attention(q: Array, k: Array, v: Array, bias: Array | None, mask: Array | None) -> Array:
    """The XLA path's math without dropout (the fallback of the kernels)."""
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32)
    if bias is not None:
        scores = scores + bias
    if mask is not None:
        scores = jnp.where(mask, scores, MASK_VALUE)
    probs = jax.nn.softmax(scores, axis=-1)
    return jnp.einsum("bhqk,bkhd->bqhd", probs.astype(v.dtype), v)


def _rows_without_keys_as_xla(ctx: Array, v: Array, mask: SegmentMask | Array | None) -> Array:
    """A query that may read no key (a pad) gets the mean of all values, as in
    the XLA path (a uniform softmax over all-masked scores), and sends no
    gradient into the kernel: kernels differ on such rows (the TPU kernel's
    backward leaks them into dk and the bias), and this keeps every
    implementation identical to the XLA path in value and gradient."""
    if mask is None or (isinstance(mask, SegmentMask) and mask.every_query_has_keys()):
        return ctx
    if isinstance(mask, SegmentMask):
        has_keys = mask.query_has_keys()[:, :, None, None]
    else:
        has_keys = jnp.any(mask, axis=-1)[:, 0, :, None, None]
    uniform = jnp.mean(v.astype(jnp.float32), axis=1, keepdims=True).astype(ctx.dtype)
    return jnp.where(has_keys, ctx, uniform)


# --- jax.nn.dot_product_attention -------------------------------------------


def _dot_product(q: Array, k: Array, v: Array, bias: Array | None, mask: Array | None) -> Array:
    if jax.default_backend() == "gpu":
        try:
            # cuDNN takes the bias in the operands' dtype (it adds the mask into it).
            cudnn_bias = None if bias is None else bias.astype(q.dtype)
            return jax.nn.dot_product_attention(
                q, k, v, bias=cudnn_bias, mask=mask, scale=1.0, implementation="cudnn")
        except (NotImplementedError, ValueError, RuntimeError) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            warn_once(f"attention_impl='dot_product': cuDNN refused this attention ({reason}); "
                      "using jax.nn.dot_product_attention's XLA implementation")
    return jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask, scale=1.0,
                                        implementation="xla")


# --- Pallas TPU flash attention ---------------------------------------------


def flash_unsupported(head_dim: int, mask: SegmentMask | Array | None) -> str:
    """Why the TPU flash kernel cannot take this call ("" = it can)."""
    if head_dim > _MAX_SMALL_HEAD_DIM and head_dim % _LANES:
        return (f"head dim d_kv={head_dim}: the kernel takes d_kv <= {_MAX_SMALL_HEAD_DIM} "
                f"or a multiple of {_LANES}")
    if mask is not None and not isinstance(mask, SegmentMask):
        return "the mask is a dense array, not segment ids"
    return ""


def _pallas_flash(q: Array, k: Array, v: Array, bias: Array | None,
                  mask: SegmentMask | Array | None) -> Array:
    reason = flash_unsupported(q.shape[-1], mask)
    if reason:
        warn_once(f"attention_impl='pallas_flash' falls back to the XLA attention: {reason}")
        return xla_attention(q, k, v, bias, dense_mask(mask))
    if mask is None:
        b = q.shape[0]
        mask = SegmentMask(jnp.ones((b, q.shape[1]), jnp.int32), jnp.ones((b, k.shape[1]), jnp.int32),
                           skip_pad_keys=False)
    if _interpret_depth:
        return _sharded(_flash, q, k, v, bias, mask)
    if jax.default_backend() != "tpu":
        warn_once("attention_impl='pallas_flash': the Pallas kernel runs where the program is "
                  f"compiled for TPU; compiled for this {jax.default_backend()} backend it is the "
                  "XLA attention (same math)")

    def fallback(q: Array, k: Array, v: Array, bias: Array | None, mask: SegmentMask) -> Array:
        return xla_attention(q, k, v, bias, mask.dense())

    def per_platform(q: Array, k: Array, v: Array, bias: Array | None, mask: SegmentMask) -> Array:
        return jax.lax.platform_dependent(q, k, v, bias, mask, default=fallback, tpu=_flash)

    return _sharded(per_platform, q, k, v, bias, mask)


def _sharded(fn, q: Array, k: Array, v: Array, bias: Array | None, mask: SegmentMask) -> Array:
    """Run `fn` per device under the ambient mesh (`jax.set_mesh`), split by
    the logical rules' batch and heads axes: XLA cannot partition a Pallas
    call, so without this every device would gather the whole batch."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return fn(q, k, v, bias, mask)
    act = nn.logical_to_mesh_axes(("batch", None, "heads", None))
    seg = nn.logical_to_mesh_axes(("batch", None))
    bias_spec = None
    if bias is not None:
        bias_batch = act[0] if bias.shape[0] > 1 else None
        bias_spec = jax.sharding.PartitionSpec(bias_batch, act[2], None, None)
    mask_spec = SegmentMask(seg, seg, causal=mask.causal, skip_pad_keys=mask.skip_pad_keys)
    return jax.shard_map(
        fn, mesh=mesh, in_specs=(act, act, act, bias_spec, mask_spec), out_specs=act,
        check_vma=False,
    )(q, k, v, bias, mask)


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _block(length: int) -> int:
    # Lengths are multiples of 128 here; larger blocks cut grid steps on TPU.
    return next(b for b in (512, 256, _LANES) if length % b == 0)


def _flash(q: Array, k: Array, v: Array, bias: Array | None, mask: SegmentMask) -> Array:
    """The TPU kernel on [b, len, h, d] operands: pads both lengths to a
    multiple of 128 (padded keys get a segment id no query has), feeds the
    bias per row as the kernel requires, and crops the output."""
    b, lq, h, _ = q.shape
    lk = k.shape[1]
    pq, pk = _round_up(lq, _LANES), _round_up(lk, _LANES)

    def heads_major(x: Array, padded: int) -> Array:
        x = jnp.swapaxes(x, 1, 2)
        return jnp.pad(x, ((0, 0), (0, 0), (0, padded - x.shape[2]), (0, 0)))

    ab = None
    if bias is not None:
        ab = jnp.broadcast_to(bias.astype(jnp.float32), (b, h, lq, lk))
        ab = jnp.pad(ab, ((0, 0), (0, 0), (0, pq - lq), (0, pk - lk)))
    q_seg = jnp.pad(mask.q_segment_ids.astype(jnp.int32), ((0, 0), (0, pq - lq)))
    kv_seg = mask.kv_segment_ids.astype(jnp.int32)
    if mask.skip_pad_keys:
        kv_seg = jnp.where(kv_seg > 0, kv_seg, -1)
    # Segment ids are >= 0, so -1 keys are read by no query.
    kv_seg = jnp.pad(kv_seg, ((0, 0), (0, pk - lk)), constant_values=-1)
    bq, bk = _block(pq), _block(pk)
    blocks = tpu_flash.BlockSizes(
        block_q=bq, block_k_major=bk, block_k=bk, block_b=1,
        block_q_major_dkv=bq, block_k_major_dkv=bk, block_k_dkv=bk, block_q_dkv=bq,
        block_k_major_dq=bk, block_k_dq=bk, block_q_dq=bq,
    )
    out = tpu_flash.flash_attention(
        heads_major(q, pq), heads_major(k, pk), heads_major(v, pk), ab,
        tpu_flash.SegmentIds(q_seg, kv_seg), causal=mask.causal, sm_scale=1.0,
        block_sizes=blocks,
    )
    return jnp.swapaxes(out[:, :, :lq], 1, 2).astype(v.dtype)
