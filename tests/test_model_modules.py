"""Each CRIS building block against its defining formula, written out independently here.

Whole-model parity with CRIS.pytorch lives in ``test_model_parity.py``; these tests pin down the
pieces (positional encodings, coordinate map, dynamic convolution, dense attention pool, text
encoder) so a regression points at the module that broke. Models are ``cris_tiny`` or smaller.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cris_edge.model import CRIS, build_cris, load_cris, save_checkpoint
from cris_edge.model.backbone import AttentionPool, build_clip_backbone, encode_text
from cris_edge.model.cris import text_inputs
from cris_edge.model.decoder import TransformerDecoder, sine_positions_1d, sine_positions_2d
from cris_edge.model.layers import coordinate_map
from cris_edge.model.projector import Projector, dynamic_conv, matmul_dynamic_conv, tap_selector

# TorchScript is deprecated in torch 2.13 but is what OpenAI's CLIP archives (and tracing) use.
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")

SOT, EOT_TINY = 49406, 49407  # CLIP's start / end-of-text ids (cris_tiny keeps the full vocabulary)


def _randomize_bn_stats(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial running statistics and affine parameters, so eval-mode
    tests exercise them (fresh BNs are the identity up to eps)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                module.running_var.copy_(0.5 + torch.rand(n, generator=gen))
                module.weight.copy_(0.5 + 0.5 * torch.rand(n, generator=gen))
                module.bias.copy_(torch.randn(n, generator=gen) * 0.05)


def _tokens(lengths, word_len, eot=EOT_TINY, vocab=49406, seed=0) -> torch.Tensor:
    """``[B, word_len]`` token ids: SOT, ``n`` random words, EOT, zero padding."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.zeros(len(lengths), word_len, dtype=torch.long)
    for b, n in enumerate(lengths):
        tokens[b, 0] = min(SOT, eot - 1)
        tokens[b, 1:n + 1] = torch.randint(1, min(vocab, eot - 1), (n,), generator=gen)
        tokens[b, n + 1] = eot
    return tokens


@pytest.fixture(scope="module")
def tiny() -> CRIS:
    torch.manual_seed(0)
    model = build_cris("cris_tiny")
    _randomize_bn_stats(model)
    return model.eval()


# ----------------------------------------------------------------------------------------------
# Sine positional encodings
# ----------------------------------------------------------------------------------------------

def _pe_value(position: int, channel: int, dim: int) -> float:
    """Transformer encoding: channel 2i = sin(p / 10000^(2i/d)), 2i+1 = cos(same angle)."""
    i = channel // 2
    angle = position / 10000 ** (2 * i / dim)
    return math.sin(angle) if channel % 2 == 0 else math.cos(angle)


@pytest.mark.parametrize("dim,length", [(8, 6), (64, 17), (2, 3)])
def test_sine_positions_1d_formula(dim, length):
    pe = sine_positions_1d(dim, length)
    assert pe.shape == (length, 1, dim) and pe.dtype == torch.float32
    expected = torch.tensor([[_pe_value(p, c, dim) for c in range(dim)] for p in range(length)],
                            dtype=torch.float64)
    assert torch.allclose(pe[:, 0].double(), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("dim,height,width", [(16, 3, 5), (8, 4, 2), (64, 4, 4)])
def test_sine_positions_2d_formula(dim, height, width):
    pe = sine_positions_2d(dim, height, width)
    assert pe.shape == (height * width, 1, dim) and pe.dtype == torch.float32
    half = dim // 2
    for row in range(height):
        for col in range(width):
            index = row * width + col  # row-major, like x.flatten(2) of [B, C, H, W]
            expected = [_pe_value(col, c, half) for c in range(half)]  # first half: the column
            expected += [_pe_value(row, c, half) for c in range(half)]  # last half: the row
            assert torch.allclose(pe[index, 0].double(), torch.tensor(expected, dtype=torch.float64),
                                  atol=1e-5, rtol=0), (row, col)


def test_sine_positions_2d_is_not_transposed():
    # On a non-square grid, a row/column mix-up cannot hide: position (0, 1) must differ from
    # (1, 0) exactly in the column half vs the row half.
    pe = sine_positions_2d(8, 2, 3)[:, 0]
    assert torch.equal(pe[1, :4], sine_positions_1d(4, 3)[1, 0])  # (row 0, col 1): column half
    assert torch.equal(pe[1, 4:], sine_positions_1d(4, 2)[0, 0])  # row half at row 0
    assert torch.equal(pe[3, 4:], sine_positions_1d(4, 2)[1, 0])  # (row 1, col 0): row half


@pytest.mark.parametrize("dim", [1, 7, 33])
def test_sine_positions_1d_odd_dim_raises(dim):
    with pytest.raises(ValueError, match="even"):
        sine_positions_1d(dim, 4)


@pytest.mark.parametrize("dim", [2, 6, 7, 30])
def test_sine_positions_2d_indivisible_dim_raises(dim):
    with pytest.raises(ValueError, match="divisible by 4"):
        sine_positions_2d(dim, 2, 2)


# ----------------------------------------------------------------------------------------------
# Coordinate map (CoordConv)
# ----------------------------------------------------------------------------------------------

def test_coordinate_map_values():
    like = torch.zeros(1, dtype=torch.float64)
    grid = coordinate_map(2, 3, 5, like)
    assert grid.shape == (2, 2, 3, 5) and grid.dtype == torch.float64
    for b in range(2):
        for i in range(3):
            for j in range(5):
                assert grid[b, 0, i, j].item() == pytest.approx(-1 + 2 * j / 4, abs=1e-12)  # x: column
                assert grid[b, 1, i, j].item() == pytest.approx(-1 + 2 * i / 2, abs=1e-12)  # y: row
    # corners exactly at +-1
    assert grid[0, :, 0, 0].tolist() == [-1.0, -1.0]
    assert grid[0, :, 0, -1].tolist() == [1.0, -1.0]
    assert grid[0, :, -1, 0].tolist() == [-1.0, 1.0]
    assert grid[0, :, -1, -1].tolist() == [1.0, 1.0]


def test_coordinate_map_follows_like_tensor():
    grid = coordinate_map(1, 4, 4, torch.zeros(1, dtype=torch.float16))
    assert grid.dtype == torch.float16
    assert torch.equal(grid[0, 0], grid[0, 1].T)  # square grid: x and y are transposes


# ----------------------------------------------------------------------------------------------
# Dynamic (per-sample) convolution
# ----------------------------------------------------------------------------------------------

def _naive_dynamic_conv(x, weight, bias):
    k = weight.shape[-1]
    return torch.cat([F.conv2d(x[b:b + 1], weight[b:b + 1], bias[b:b + 1], padding=k // 2)
                      for b in range(x.shape[0])])


def _conv_inputs(batch, channels=6, height=5, width=7, k=3, seed=0):
    gen = torch.Generator().manual_seed(seed + batch)
    return (torch.randn(batch, channels, height, width, generator=gen),
            torch.randn(batch, channels, k, k, generator=gen),
            torch.randn(batch, generator=gen))


@pytest.mark.parametrize("batch", [1, 2, 3, 4])
def test_dynamic_conv_matches_per_sample_loop(batch):
    x, weight, bias = _conv_inputs(batch)
    expected = _naive_dynamic_conv(x, weight, bias)
    selector = tap_selector(3)
    eager = dynamic_conv(x, weight, bias, selector)
    assert eager.shape == (batch, 1, 5, 7)
    assert torch.allclose(eager, expected, atol=1e-5, rtol=1e-5)
    matmul = matmul_dynamic_conv(x, weight, bias, selector)
    assert matmul.shape == (batch, 1, 5, 7)
    assert torch.allclose(matmul, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_matmul_dynamic_conv_other_kernel_sizes(k):
    x, weight, bias = _conv_inputs(3, k=k)
    out = matmul_dynamic_conv(x, weight, bias, tap_selector(k))
    assert torch.allclose(out, _naive_dynamic_conv(x, weight, bias), atol=1e-5, rtol=1e-5)


def test_matmul_dynamic_conv_gradients_match_the_grouped_conv():
    """Training runs the matmul form: its gradients must be the grouped convolution's."""
    grads = []
    for matmul in (False, True):
        x, weight, bias = (t.double().requires_grad_() for t in _conv_inputs(3))
        out = dynamic_conv(x, weight, bias, tap_selector(3).double(), matmul=matmul)
        (out * torch.linspace(-1, 1, out.numel(), dtype=torch.float64).reshape(out.shape)).sum().backward()
        grads.append((x.grad, weight.grad, bias.grad))
    for grouped, matmul in zip(*grads):
        assert torch.allclose(grouped, matmul, atol=1e-12, rtol=1e-10)


def test_projector_similarity_is_the_official_conv_in_eval_mode_and_the_matmul_in_training():
    projector = Projector(word_dim=16, in_dim=6).double()
    x, weight, bias = (t.double() for t in _conv_inputs(3))
    selector = tap_selector(3).double()
    projector.eval()
    assert torch.equal(projector.similarity(x, weight, bias), dynamic_conv(x, weight, bias, selector))
    projector.train()
    assert torch.equal(projector.similarity(x, weight, bias), matmul_dynamic_conv(x, weight, bias, selector))


def test_tap_selector_layout():
    sel = tap_selector(3)
    assert sel.shape == (1, 9, 3, 3)
    for t in range(9):
        assert sel[0, t].sum() == 1 and sel[0, t, t // 3, t % 3] == 1


def test_traced_dynamic_conv_is_batch_independent():
    selector = tap_selector(3)

    def fn(x, weight, bias):
        return dynamic_conv(x, weight, bias, selector)

    traced = torch.jit.trace(fn, _conv_inputs(2), check_trace=False)
    x, weight, bias = _conv_inputs(3)
    eager = dynamic_conv(x, weight, bias, selector)
    assert torch.allclose(traced(x, weight, bias), eager, atol=1e-5, rtol=1e-5)
    assert torch.allclose(traced(*_conv_inputs(1)), _naive_dynamic_conv(*_conv_inputs(1)), atol=1e-5)


def test_traced_grouped_conv_would_freeze_the_batch():
    # The reason dynamic_conv switches form while tracing: the grouped conv's `groups` is a
    # Python int, recorded as a constant (2 here), so the trace fails at another batch size.
    def grouped(x, weight, bias):
        b, c, h, w = x.shape
        return F.conv2d(x.reshape(1, b * c, h, w), weight, bias, padding=1, groups=b).reshape(b, 1, h, w)

    traced = torch.jit.trace(grouped, _conv_inputs(2), check_trace=False)
    with pytest.raises(RuntimeError):
        traced(*_conv_inputs(3))


def test_traced_projector_is_batch_independent(tiny):
    gen = torch.Generator().manual_seed(3)
    fq2, state2 = torch.randn(2, 64, 4, 4, generator=gen), torch.randn(2, 128, generator=gen)
    fq3, state3 = torch.randn(3, 64, 4, 4, generator=gen), torch.randn(3, 128, generator=gen)
    with torch.no_grad():
        traced = torch.jit.trace(tiny.proj, (fq2, state2), check_trace=False)
        out = traced(fq3, state3)
        eager = tiny.proj(fq3, state3)
    assert out.shape == (3, 1, 16, 16)
    assert torch.allclose(out, eager, atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------------------------------------
# Dense attention pool
# ----------------------------------------------------------------------------------------------

def _naive_attention_pool(pool: AttentionPool, x: torch.Tensor) -> torch.Tensor:
    """CRIS's AttentionPool2d, element by element: per-head softmax(QK^T / sqrt(d)) V over all
    H*W positions, with the class-token row of the positional embedding dropped and the rest
    resized bicubically; then c_proj, + connect(x) (1x1 conv, eval BN), ReLU."""
    b, c, h, w = x.shape
    side, heads = pool.spacial_dim, pool.num_heads
    d = c // heads
    pos = pool.positional_embedding[1:].detach().double()  # [side*side, C], row-major grid
    grid = pos.T.reshape(1, c, side, side)
    grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
    pos_hw = grid.reshape(c, h * w).T  # [HW, C]
    bn = pool.connect[1]
    conv_w = pool.connect[0].weight.detach().double()[:, :, 0, 0]  # [out, C]
    out = torch.empty(b, pool.c_proj.out_features, h, w, dtype=torch.float64)
    for n in range(b):
        tokens = x[n].double().reshape(c, h * w).T + pos_hw  # [HW, C]
        q = tokens @ pool.q_proj.weight.double().T + pool.q_proj.bias.double()
        k = tokens @ pool.k_proj.weight.double().T + pool.k_proj.bias.double()
        v = tokens @ pool.v_proj.weight.double().T + pool.v_proj.bias.double()
        per_head = []
        for head in range(heads):
            sl = slice(head * d, (head + 1) * d)
            attn = torch.softmax(q[:, sl] @ k[:, sl].T / math.sqrt(d), dim=-1)
            per_head.append(attn @ v[:, sl])
        attended = torch.cat(per_head, dim=1) @ pool.c_proj.weight.double().T + pool.c_proj.bias.double()
        conv = x[n].double().reshape(c, h * w).T @ conv_w.T  # [HW, out]
        residual = (conv - bn.running_mean.double()) / torch.sqrt(bn.running_var.double() + bn.eps)
        residual = residual * bn.weight.double() + bn.bias.double()
        out[n] = torch.relu(attended + residual).T.reshape(-1, h, w)
    return out


@pytest.fixture(scope="module")
def pool() -> AttentionPool:
    torch.manual_seed(1)
    module = AttentionPool(spacial_dim=4, embed_dim=32, num_heads=4, output_dim=24)
    _randomize_bn_stats(module, seed=1)
    return module.eval()


@pytest.mark.parametrize("height,width", [(4, 4), (3, 5), (6, 6)])
def test_attention_pool_matches_naive(pool, height, width):
    x = torch.randn(2, 32, height, width, generator=torch.Generator().manual_seed(height * 10 + width))
    with torch.no_grad():
        out = pool(x)
        expected = _naive_attention_pool(pool, x)
    assert out.shape == (2, 24, height, width)
    assert torch.allclose(out.double(), expected, atol=1e-5, rtol=1e-5)


def test_attention_pool_native_grid_resize_is_identity(pool):
    with torch.no_grad():
        resized = pool.resized_positions(4, 4)
    assert resized.shape == (32, 16)
    assert torch.allclose(resized, pool.positional_embedding[1:].T, atol=1e-6, rtol=0)


def test_attention_pool_native_grid_in_cris_tiny(tiny):
    pool = tiny.backbone.visual.attnpool
    side = tiny.config.clip_model["vision_cfg"]["image_size"] // 32
    assert pool.spacial_dim == side == 7
    with torch.no_grad():
        assert torch.allclose(pool.resized_positions(side, side), pool.positional_embedding[1:].T,
                              atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------------------------
# Text encoder
# ----------------------------------------------------------------------------------------------

# A small CLIP with 2 text heads (cris_tiny has 1), so the per-head split is exercised.
_SMALL_CLIP = {
    "embed_dim": 32, "quick_gelu": True,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "patch_size": None},
    "text_cfg": {"context_length": 24, "vocab_size": 500, "width": 64, "heads": 2, "layers": 2},
}
_SMALL_EOT = 499


@pytest.fixture(scope="module")
def small_clip():
    torch.manual_seed(2)
    clip = build_clip_backbone(_SMALL_CLIP).eval()
    with torch.no_grad():  # non-trivial LayerNorm affines
        for name, p in clip.named_parameters():
            if name.startswith(("transformer.", "ln_final")) and p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.1)
    return clip


def _layer_norm(x, ln):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + ln.eps) * ln.weight.double() + ln.bias.double()


def _naive_text_encoder(clip, tokens):
    """CLIP's text transformer written out: causal pre-LN blocks with QuickGELU MLPs."""
    heads = _SMALL_CLIP["text_cfg"]["heads"]
    length = tokens.shape[1]
    x = clip.token_embedding.weight.double()[tokens] + clip.positional_embedding.double()[:length]
    causal = torch.triu(torch.full((length, length), float("-inf"), dtype=torch.float64), diagonal=1)
    for block in clip.transformer.resblocks:
        y = _layer_norm(x, block.ln_1)
        qkv = y @ block.attn.in_proj_weight.double().T + block.attn.in_proj_bias.double()
        q, k, v = qkv.chunk(3, dim=-1)
        d = q.shape[-1] // heads
        outs = []
        for h in range(heads):
            sl = slice(h * d, (h + 1) * d)
            scores = q[..., sl] @ k[..., sl].transpose(-1, -2) / math.sqrt(d) + causal
            outs.append(torch.softmax(scores, dim=-1) @ v[..., sl])
        attn = torch.cat(outs, dim=-1) @ block.attn.out_proj.weight.double().T + block.attn.out_proj.bias.double()
        x = x + attn
        y = _layer_norm(x, block.ln_2)
        hidden = y @ block.mlp.c_fc.weight.double().T + block.mlp.c_fc.bias.double()
        hidden = hidden * torch.sigmoid(1.702 * hidden)  # QuickGELU
        x = x + hidden @ block.mlp.c_proj.weight.double().T + block.mlp.c_proj.bias.double()
    return _layer_norm(x, clip.ln_final)


def test_encode_text_matches_naive_transformer(small_clip):
    tokens = _tokens([3, 7, 0], 12, eot=_SMALL_EOT, vocab=_SMALL_EOT)
    eot = tokens.argmax(-1)
    with torch.no_grad():
        word, state = encode_text(small_clip, tokens, eot)
        expected_word = _naive_text_encoder(small_clip, tokens)
    assert word.shape == (3, 12, 64) and state.shape == (3, 32)
    assert torch.allclose(word.double(), expected_word, atol=1e-5, rtol=1e-5)
    expected_state = expected_word[torch.arange(3), eot] @ small_clip.text_projection.double()
    assert torch.allclose(state.double(), expected_state, atol=1e-5, rtol=1e-5)


def test_encode_text_state_is_eot_feature_projected(small_clip):
    tokens = _tokens([2, 5, 9], 14, eot=_SMALL_EOT, vocab=_SMALL_EOT, seed=4)
    eot = tokens.argmax(-1)
    assert eot.tolist() == [3, 6, 10]
    with torch.no_grad():
        word, state = encode_text(small_clip, tokens, eot)
        for b in range(3):
            assert torch.allclose(state[b], word[b, eot[b]] @ small_clip.text_projection, atol=1e-6)
        # and not some other position's
        _, wrong = encode_text(small_clip, tokens, eot - 1)
    assert not torch.allclose(state, wrong, atol=1e-3)


def test_encode_text_is_causal(small_clip):
    tokens = _tokens([4, 2], 16, eot=_SMALL_EOT, vocab=_SMALL_EOT, seed=5)
    eot = tokens.argmax(-1)
    changed = tokens.clone()
    for b in range(2):  # garbage after EOT (where padding would be)
        e = int(eot[b])
        changed[b, e + 1:] = torch.randint(1, _SMALL_EOT, (16 - e - 1,), generator=torch.Generator().manual_seed(b))
    with torch.no_grad():
        word, state = encode_text(small_clip, tokens, eot)
        word2, state2 = encode_text(small_clip, changed, eot)
    assert torch.allclose(state, state2, atol=1e-6, rtol=0)
    for b in range(2):
        e = int(eot[b])
        assert torch.allclose(word[b, :e + 1], word2[b, :e + 1], atol=1e-6, rtol=0)
        assert not torch.allclose(word[b, e + 1:], word2[b, e + 1:], atol=1e-3)  # the test can see changes


def test_encode_text_padding_length_does_not_matter(tiny):
    short = _tokens([5, 1], 17, seed=6)
    long = torch.zeros(2, 22, dtype=torch.long)
    long[:, :17] = short
    with torch.no_grad():
        word17, state17 = tiny.encode_text(short)
        word22, state22 = tiny.encode_text(long)
    assert word17.shape == (2, 17, 64) and word22.shape == (2, 22, 64)
    assert state17.shape == (2, 128)
    assert torch.allclose(state17, state22, atol=1e-5, rtol=1e-5)
    assert torch.allclose(word17, word22[:, :17], atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# Padding mask in the decoder
# ----------------------------------------------------------------------------------------------

def test_decoder_ignores_padded_words():
    torch.manual_seed(3)
    decoder = TransformerDecoder(num_layers=2, d_model=16, nhead=2, dim_ffn=32, dropout=0.0).eval()
    gen = torch.Generator().manual_seed(3)
    vis, txt = torch.randn(2, 16, 3, 4, generator=gen), torch.randn(2, 6, 16, generator=gen)
    pad_mask = torch.zeros(2, 6, dtype=torch.bool)
    pad_mask[0, 4:] = True
    pad_mask[1, 2:] = True
    changed = txt.clone()
    changed[pad_mask] = torch.randn(int(pad_mask.sum()), 16, generator=gen) * 10
    with torch.no_grad():
        out = decoder(vis, txt, pad_mask)
        out2 = decoder(vis, changed, pad_mask)
        out_unmasked = decoder(vis, changed, torch.zeros_like(pad_mask))
    assert out.shape == (2, 16, 12)
    assert torch.allclose(out, out2, atol=1e-5)
    assert not torch.allclose(out, out_unmasked, atol=1e-3)


# ----------------------------------------------------------------------------------------------
# The whole model: inputs, shapes, composition, training, modes
# ----------------------------------------------------------------------------------------------

def test_text_inputs():
    tokens = torch.tensor([[49406, 320, 1125, 49407, 0, 0], [49406, 49407, 0, 0, 0, 0]])
    pad_mask, eot = text_inputs(tokens)
    assert pad_mask.dtype == torch.bool
    assert pad_mask.tolist() == [[False] * 4 + [True] * 2, [False] * 2 + [True] * 4]
    assert eot.tolist() == [3, 1] and eot.dtype == torch.int64


@pytest.mark.parametrize("size", [256, 320])
def test_cris_tiny_shapes(tiny, size):
    image = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size))
    tokens = _tokens([3, 6], 17, seed=size)
    with torch.no_grad():
        c3, c4, c5 = tiny.encode_image(image)
        word, state = tiny.encode_text(tokens)
        logits = tiny(image, tokens)
    assert c3.shape == (2, 128, size // 8, size // 8)
    assert c4.shape == (2, 256, size // 16, size // 16)
    assert c5.shape == (2, 128, size // 32, size // 32)
    assert word.shape == (2, 17, 64) and state.shape == (2, 128)
    assert logits.shape == (2, 1, size // 4, size // 4) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


def test_head_equals_forward_composition(tiny):
    image = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(7))
    tokens = _tokens([4, 9], 17, seed=7)
    with torch.no_grad():
        logits = tiny(image, tokens)
        pad_mask, eot = text_inputs(tokens)
        c3, c4, c5 = tiny.encode_image(image)
        word, state = tiny.encode_text(tokens, eot)
        staged = tiny.head(c3, c4, c5, word, pad_mask, state)
        fq = tiny.fuse(c3, c4, c5, word, pad_mask, state)
        by_parts = tiny.proj(fq, state)
    assert fq.shape == (2, 64, 16, 16)
    assert torch.equal(logits, staged)
    assert torch.equal(staged, by_parts)
    # a batch of one gives the same logits as its row in the batch
    with torch.no_grad():
        single = tiny(image[1:], tokens[1:])
    assert torch.allclose(single, logits[1:], atol=1e-4, rtol=1e-4)


def test_training_mode_loss_and_gradients():
    torch.manual_seed(4)
    model = build_cris("cris_tiny")
    assert model.training
    # open_clip zero-initialises each bottleneck's last BN scale (its residual branch then gets
    # no gradient); give every BN a non-zero scale so all weights are on the gradient path.
    _randomize_bn_stats(model, seed=4)
    gen = torch.Generator().manual_seed(4)
    image = torch.randn(2, 3, 256, 256, generator=gen)
    tokens = _tokens([3, 5], 17, seed=4)
    mask = (torch.rand(2, 1, 256, 256, generator=gen) > 0.5).float()
    logits, loss = model(image, tokens, mask)
    assert logits.shape == (2, 1, 64, 64) and loss.ndim == 0
    # nearest 256 -> 64 takes source pixel 4*i: written out without F.interpolate
    target = mask[:, :, ::4, ::4]
    assert torch.allclose(loss, F.binary_cross_entropy_with_logits(logits, target), atol=1e-6, rtol=1e-6)
    # an element-wise BCE, to pin the formula itself
    p = torch.sigmoid(logits.double())
    manual = -(target * torch.log(p) + (1 - target) * torch.log1p(-p)).mean()
    assert torch.allclose(loss.double(), manual, atol=1e-5)
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == ["backbone.logit_scale"]  # CLIP's contrastive scale is unused by CRIS
    for name in ("backbone.visual.conv1.weight", "backbone.visual.attnpool.connect.0.weight",
                 "backbone.transformer.resblocks.0.attn.in_proj_weight", "backbone.token_embedding.weight",
                 "neck.txt_proj.0.weight", "decoder.layers.0.multihead_attn.in_proj_weight", "proj.txt.weight",
                 "proj.vis.1.0.weight"):
        assert dict(model.named_parameters())[name].grad.abs().sum() > 0, name


def test_training_mode_mask_at_logit_size_and_eval_mode_returns_logits():
    torch.manual_seed(5)
    model = build_cris("cris_tiny")
    gen = torch.Generator().manual_seed(5)
    image = torch.randn(2, 3, 256, 256, generator=gen)
    tokens = _tokens([2, 2], 17, seed=5)
    mask = (torch.rand(2, 1, 64, 64, generator=gen) > 0.5).float()
    logits, loss = model(image, tokens, mask)
    assert torch.allclose(loss, F.binary_cross_entropy_with_logits(logits, mask), atol=1e-6)
    assert isinstance(model(image, tokens), torch.Tensor)  # training without a mask: logits only
    model.eval()
    with torch.no_grad():
        out = model(image, tokens, mask)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 1, 64, 64)


def test_build_is_train_mode_and_load_is_eval_mode(tmp_path):
    model = build_cris("cris_tiny")
    assert model.training and all(m.training for m in model.modules())
    path = save_checkpoint(tmp_path / "tiny.pth", model, model.config.to_dict())
    loaded = load_cris(path)
    assert not loaded.training and not any(m.training for m in loaded.modules())
    assert all(p.dtype == torch.float32 for p in loaded.parameters())


# ----------------------------------------------------------------------------------------------
# State-dict keys: the official layout
# ----------------------------------------------------------------------------------------------

_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _official_cris_keys(vision_layers, text_layers, decoder_layers) -> set:
    """The state-dict keys CRIS.pytorch's model has, written out from its source structure:
    OpenAI's ModifiedResNet + AttentionPool2d (+ CRIS's ``connect``), OpenAI's text
    transformer, and CRIS's FPN / TransformerDecoder / Projector."""
    keys = {"backbone.positional_embedding", "backbone.text_projection", "backbone.logit_scale",
            "backbone.token_embedding.weight", "backbone.ln_final.weight", "backbone.ln_final.bias"}

    def conv_bn(prefix, conv, bn):
        keys.add(f"{prefix}{conv}.weight")
        keys.update(f"{prefix}{bn}.{leaf}" for leaf in _BN)

    v = "backbone.visual."
    for i in (1, 2, 3):
        conv_bn(v, f"conv{i}", f"bn{i}")
    for stage, blocks in enumerate(vision_layers, start=1):
        for block in range(blocks):
            prefix = f"{v}layer{stage}.{block}."
            for i in (1, 2, 3):
                conv_bn(prefix, f"conv{i}", f"bn{i}")
            if block == 0:  # every stage's first block changes width (x4 expansion): downsample
                conv_bn(prefix, "downsample.0", "downsample.1")
    keys.add(f"{v}attnpool.positional_embedding")
    for proj in ("k_proj", "q_proj", "v_proj", "c_proj"):
        keys.update({f"{v}attnpool.{proj}.weight", f"{v}attnpool.{proj}.bias"})
    conv_bn(f"{v}attnpool.", "connect.0", "connect.1")
    for block in range(text_layers):
        prefix = f"backbone.transformer.resblocks.{block}."
        keys.update(prefix + k for k in (
            "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight", "attn.out_proj.bias",
            "ln_1.weight", "ln_1.bias", "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight",
            "mlp.c_proj.bias", "ln_2.weight", "ln_2.bias"))

    n = "neck."
    keys.add(f"{n}txt_proj.0.weight")  # Linear without bias
    keys.update(f"{n}txt_proj.1.{leaf}" for leaf in _BN)
    for name in ("f1_v_proj", "f2_v_proj", "f2_cat", "f3_v_proj", "f3_cat", "f4_proj5", "f4_proj4",
                 "f4_proj3", "aggr", "coordconv.1"):
        conv_bn(f"{n}{name}.", "0", "1")
    conv_bn(f"{n}coordconv.0.conv1.", "0", "1")
    keys.update(f"{n}norm_layer.0.{leaf}" for leaf in _BN)

    for layer in range(decoder_layers):
        prefix = f"decoder.layers.{layer}."
        for attn in ("self_attn", "multihead_attn"):
            keys.update(prefix + f"{attn}.{k}" for k in
                        ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"))
        for name in ("self_attn_norm", "cross_attn_norm", "norm1", "norm2", "norm3", "ffn.0", "ffn.3", "ffn.4"):
            keys.update({f"{prefix}{name}.weight", f"{prefix}{name}.bias"})
    keys.update({"decoder.norm.weight", "decoder.norm.bias"})

    conv_bn("proj.vis.1.", "0", "1")
    conv_bn("proj.vis.3.", "0", "1")
    keys.update({"proj.vis.4.weight", "proj.vis.4.bias", "proj.txt.weight", "proj.txt.bias"})
    return keys


def test_state_dict_keys_are_the_official_ones(tiny):
    own = set(tiny.state_dict())
    expected = _official_cris_keys(vision_layers=(1, 1, 1, 1), text_layers=2, decoder_layers=1)
    assert own - expected == set(), "keys the official model does not have"
    assert expected - own == set(), "official keys we do not have"
    for key in ("backbone.visual.attnpool.connect.0.weight", "neck.coordconv.0.conv1.0.weight",
                "decoder.layers.0.multihead_attn.in_proj_weight", "proj.vis.1.0.weight", "proj.txt.weight",
                "backbone.transformer.resblocks.0.attn.in_proj_weight", "backbone.logit_scale",
                "backbone.visual.layer4.0.downsample.0.weight"):
        assert key in own, key


def test_no_non_persistent_buffers_in_state_dict(tiny):
    keys = set(tiny.state_dict())
    assert not any(k.endswith(("attn_mask", "selector")) for k in keys)
    buffers = dict(tiny.named_buffers())
    assert "proj.selector" in buffers and "backbone.attn_mask" in buffers  # they exist, unsaved


def test_official_shapes_of_key_weights(tiny):
    state = tiny.state_dict()
    cfg = tiny.config
    k = 3
    assert state["proj.txt.weight"].shape == (cfg.vis_dim // 2 * k * k + 1, cfg.word_dim)
    assert state["backbone.visual.attnpool.positional_embedding"].shape == (7 * 7 + 1, 16 * 32)
    assert state["backbone.visual.attnpool.connect.0.weight"].shape == (128, 16 * 32, 1, 1)
    assert state["backbone.text_projection"].shape == (64, 128)
    assert state["neck.coordconv.0.conv1.0.weight"].shape == (cfg.vis_dim, cfg.vis_dim + 2, 3, 3)
    assert state["decoder.layers.0.multihead_attn.in_proj_weight"].shape == (3 * cfg.vis_dim, cfg.vis_dim)
    assert state["decoder.layers.0.ffn.0.weight"].shape == (cfg.dim_ffn, cfg.vis_dim)
