"""The fused prefill (kernels/prefill.py) against the torch path: each new kernel against its torch twin on fresh
random inputs (right-padded rows of unequal lengths, lengths shorter than the conv's K-1, strided column views),
then the whole prefill (logits at every position, stored conv and SSM states) against `MambaModel.prefill` on
kernels="torch". Under TRITON_INTERPRET=1 on a machine without CUDA, compiled on a GPU.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton", reason="the fused kernels need Triton (a test dependency)")
from engine_support import MAMBA1, MAMBA2, build_from_hf, hf_model  # noqa: E402

from mambapipe.engine import ops  # noqa: E402
from mambapipe.engine.api import load_engine  # noqa: E402
from mambapipe.engine.kernels import prefill, scan, ssd  # noqa: E402
from mambapipe.engine.model import MambaModel  # noqa: E402
from mambapipe.engine.state import InferenceState  # noqa: E402
from mambapipe.models import ModelSpec  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
HALF = torch.float16  # on the CPU the interpreter (numpy) has fp16 but no bf16
LENGTHS = [37, 2, 1, 20]  # a full row, two shorter than K-1 = 3, one ending inside a token block


def _rand(*shape, dtype=torch.float32, scale=1.0):
    return (torch.randn(*shape, device=DEVICE) * scale).to(dtype)


def _rel(actual, expected):
    assert torch.isfinite(actual).all()
    return float((actual.float() - expected.float()).norm() / expected.float().norm())


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (HALF, 2e-3)])
def test_conv_prefill_matches_causal_conv1d(dtype, tol, with_bias):
    lengths = torch.tensor(LENGTHS, device=DEVICE)
    packed = _rand(len(LENGTHS), 37, 300, dtype=dtype)  # x is a column slice of a wider projection, as in the model
    x, w = packed[..., 10:280], _rand(270, 4, dtype=dtype, scale=0.5)  # 270: channel blocks with a partial last one
    b = _rand(270, dtype=dtype) if with_bias else None
    y, state = prefill.causal_conv1d_prefill(x, w, b, lengths)
    y_ref, state_ref = ops.causal_conv1d(x.transpose(1, 2), w, b, lengths)  # (B, C, L), (B, C, K-1)
    assert y.dtype == dtype and state.dtype == dtype
    assert _rel(y, y_ref.transpose(1, 2)) < tol
    torch.testing.assert_close(state, state_ref, rtol=0, atol=0)  # copied inputs, zeros before the prompt
    states = torch.full((len(LENGTHS) + 2, 270, 3), 7.0, device=DEVICE, dtype=dtype)  # an inference state's layer
    slots = torch.arange(len(LENGTHS), device=DEVICE).flip(0) + 1  # the rows in reverse, from slot 1
    y_into, stored = prefill.causal_conv1d_prefill(x, w, b, lengths, into=(states, slots))
    assert stored is None and torch.equal(y_into, y)
    assert torch.equal(states[slots], state) and (states[0] == 7.0).all() and (states[-1] == 7.0).all()


# fp16: the kernel's softplus takes the approximate log (kernels/fastmath.py) and its sums round apart from cuBLAS's
@pytest.mark.parametrize("dtype,rtol,atol", [(torch.float32, 1e-5, 1e-6), (HALF, 1e-3, 2e-3)])
@pytest.mark.parametrize("d_inner,rank", [(300, 20), (130, 48)])  # partial blocks of channels and of R
# the interpreter's numpy warns for exp(x) past softplus's threshold, which tl.where then drops
@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")
def test_dt_proj_softplus_matches_torch(dtype, rtol, atol, d_inner, rank):
    lengths = torch.tensor(LENGTHS, device=DEVICE)
    x_dbl = _rand(len(LENGTHS), 37, rank + 24, dtype=dtype)  # Mamba1's x_proj output: dt_low, then B and C (N = 12)
    dt_low, bc = x_dbl[..., :rank], x_dbl[..., rank:]  # column views, as in the model
    dt_proj = _rand(d_inner, rank, dtype=dtype, scale=rank ** -0.5)
    bias = torch.linspace(-25.0, 25.0, d_inner, device=DEVICE)  # both sides of softplus's threshold (20), far tail
    out, no_bc = prefill.dt_proj_softplus(dt_low, dt_proj, bias, lengths)
    out_with_bc, bc32 = prefill.dt_proj_softplus(dt_low, dt_proj, bias, lengths, bc)
    valid = torch.arange(37, device=DEVICE) < lengths[:, None]  # (B, L)
    ref = F.softplus(F.linear(dt_low, dt_proj).float() + bias) * valid[..., None]  # the model's torch path
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=rtol, atol=atol)
    half, _ = prefill.dt_proj_softplus(dt_low, dt_proj, bias, lengths, half=True)
    assert half.dtype == HALF and torch.equal(half, out.to(HALF))  # the same values, rounded once at the store
    huge, _ = prefill.dt_proj_softplus(dt_low, dt_proj, bias + 1e5, lengths, half=True)  # past fp16's range
    assert (huge[valid] == torch.finfo(HALF).max).all()
    assert (out[~valid] == 0).all()
    assert no_bc is None and torch.equal(out_with_bc, out)
    assert bc32.dtype == torch.float32 and torch.equal(bc32, bc.float())


@pytest.fixture(scope="module")
def model(request, tmp_path_factory):
    arch, dtype = request.param
    spec = ModelSpec(**(MAMBA1 if arch == "mamba1" else MAMBA2))
    engine = build_from_hf(hf_model(spec), spec, tmp_path_factory.mktemp(arch), dtype, max_batch_size=3)
    return load_engine(engine, DEVICE).model


# fp32 engines: the same math, so tight; fp16: each path rounds at its own places (GPU_NOTES.md documents 1e-2
# for fp16 logits; measured here 1.6e-3 for the Mamba2 model, 3.7e-3 for the Mamba1 one).
TOLERANCE = {"float32": 1e-5, "float16": 1e-2}


# The last-token gather does not depend on the mixer, so only the cheaper Mamba2 runs it (the interpreted
# Mamba1 scan takes ~10 s a prefill), as does fp16; Mamba2 also runs the regrouped torch SSD (--torch-ssd).
@pytest.mark.parametrize("model,all_logits,triton_ssd", [
    (("mamba1", "float32"), True, True), (("mamba2", "float32"), True, True), (("mamba2", "float32"), False, True),
    (("mamba2", "float32"), True, False), (("mamba2", "float16"), True, True)], indirect=["model"],
    ids=["mamba1", "mamba2", "mamba2-last-token", "mamba2-torch-ssd", "mamba2-fp16"])
def test_fused_prefill_matches_torch_prefill(model, all_logits, triton_ssd, monkeypatch):
    monkeypatch.setattr(ssd, "TRITON_SSD", triton_ssd)
    _assert_prefills_agree(model, all_logits)


@pytest.mark.parametrize("model", [("mamba1", "float16")], indirect=True)
def test_fused_prefill_with_half_step_sizes(model, monkeypatch):
    """A half Mamba1 model whose scan gets fp16 step sizes (forced here; on the GPU where its grid is big) stays
    within fp16 rounding of the torch prefill, and the step sizes reach the scan in fp16."""
    monkeypatch.setattr(scan, "wants_half_step_sizes", lambda *args: True)
    step_dtypes = []
    scan_kernel = scan.selective_scan

    def recording_scan(u, delta, *rest, **options):
        step_dtypes.append(delta.dtype)
        return scan_kernel(u, delta, *rest, **options)

    monkeypatch.setattr(scan, "selective_scan", recording_scan)
    _assert_prefills_agree(model, all_logits=True)
    assert step_dtypes == [torch.float16] * len(model.layers)


def _assert_prefills_agree(model, all_logits: bool) -> None:
    tol = TOLERANCE[str(model.dtype).removeprefix("torch.")]
    reference = MambaModel(model.spec, model.glob, model.layers, model.comm, kernel_choice="torch")  # even on CUDA
    torch.manual_seed(0)
    tokens = torch.randint(1, 90, (3, 11), device=DEVICE)  # 11 tokens: more than one Mamba2 chunk (8)
    lengths = torch.tensor([11, 2, 9], device=DEVICE)  # one row shorter than K-1; one ends inside chunk 2
    slots = torch.tensor([2, 0, 1], device=DEVICE)  # out of order: states land in the right slots
    states = [InferenceState.allocate(model.spec, 1, 3, model.dtype, DEVICE) for _ in range(2)]
    ref = reference.prefill(tokens, lengths, states[0], slots, all_logits=all_logits)
    with torch.inference_mode():
        out = prefill.fused_prefill(model, tokens, lengths, states[1], slots, all_logits=all_logits)
    assert out.shape == ref.shape
    # Every position, padding included: the fused path computes the same garbage there as the torch path.
    assert _rel(out, ref) < tol
    assert _rel(states[1].conv, states[0].conv) < tol
    assert _rel(states[1].ssm, states[0].ssm) < tol
