"""oneDNN-packed float32 linear layers: the same products as nn.Linear, the checkpoint's keys in
state_dict, and a packed T3 decoding the same tokens as a plain one; layers packed as one group
(q/k/v, gate/up) give the numbers of the layers packed one by one, bit for bit."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from models.fast_modes import Int8Linear, LoadOptions, build_t3
from models.loading import T3_PACKED_GROUPS
from models.registry import MODELS
from models.residency import size_bytes
from models.packed_linear import (PackedGroup, PackedLinear, PackedMember, pack_linears, packing_available,
                                  unpack_linears)

from test_fast_modes import GREEDY, cond, decode  # noqa: F401 (cond is a fixture)
from test_t3 import tiny_t3

pytestmark = pytest.mark.skipif(not packing_available(), reason="this torch build has no oneDNN kernels")


def layer(bias: bool, out_features: int = 700, in_features: int = 300) -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(in_features, out_features, bias=bias).eval()


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(2, 1, 300), (1, 1, 300), (2, 37, 300), (5, 300)])
def test_packed_layer_computes_what_the_layer_computes(bias, shape):
    plain = layer(bias)
    packed = PackedLinear.from_linear(plain)
    x = torch.randn(*shape)
    with torch.no_grad():
        out, expected = packed(x), plain(x)
    assert out.shape == expected.shape and out.dtype == torch.float32
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    # a strided view (the decoding step's last position of a longer sequence)
    seq = torch.randn(2, 6, 300)
    with torch.no_grad():
        torch.testing.assert_close(packed(seq[:, -1:]), plain(seq[:, -1:]), atol=1e-5, rtol=1e-5)


def test_packed_state_dict_speaks_the_checkpoint_keys_and_loads_strictly():
    plain = layer(bias=True)
    packed = PackedLinear.from_linear(plain)
    state = packed.state_dict()
    assert set(state) == {"weight", "bias"}
    assert torch.equal(state["weight"], plain.weight) and torch.equal(state["bias"], plain.bias)

    other = layer(bias=True)
    with torch.no_grad():
        other.weight.mul_(-2)
    packed.load_state_dict(other.state_dict(), strict=True)
    x = torch.randn(2, 300)
    with torch.no_grad():
        torch.testing.assert_close(packed(x), other(x), atol=1e-5, rtol=1e-5)

    with pytest.raises(RuntimeError, match=r"Missing key\(s\).*bias"):
        packed.load_state_dict({"weight": other.weight}, strict=True)
    with pytest.raises(RuntimeError, match=r"Unexpected key\(s\).*scale"):
        packed.load_state_dict({**other.state_dict(), "scale": torch.ones(1)}, strict=True)
    with pytest.raises(RuntimeError, match="weight shape"):
        packed.load_state_dict({"weight": torch.zeros(5, 300), "bias": other.bias}, strict=True)


def test_packed_layer_refuses_autograd_and_other_dtypes():
    packed = PackedLinear.from_linear(layer(bias=False))
    with torch.enable_grad():
        with pytest.raises(RuntimeError, match="inference"):
            packed(torch.randn(2, 300, requires_grad=True))
    with pytest.raises(TypeError, match="float32"):
        packed(torch.randn(2, 300, dtype=torch.float64))
    with pytest.raises(ValueError, match="float32"):
        PackedLinear(torch.zeros(4, 3, dtype=torch.bfloat16))


def test_moving_or_casting_a_packed_model_is_refused_until_unpacked():
    model = nn.Sequential(nn.Linear(8, 4), nn.Linear(4, 3))
    pack_linears(model, under=("1",))
    model.to("cpu").float()  # no change: allowed
    for change in (lambda m: m.to(torch.bfloat16), lambda m: m.half(), lambda m: m.double()):
        with pytest.raises(ValueError, match="unpack_linears"):
            change(model)
    unpack_linears(model)
    assert model.to(torch.bfloat16)[1].weight.dtype == torch.bfloat16


@pytest.mark.parametrize("groups", [None, T3_PACKED_GROUPS])
def test_packed_t3_decodes_the_same_tokens_and_unpacks_to_the_same_weights(cond, groups):
    plain = tiny_t3()
    tokens, logits = decode(plain, cond)
    model = tiny_t3()
    state = model.state_dict()
    n_linear = sum(isinstance(m, nn.Linear) for m in model.tfmr.layers.modules()) + 1
    assert pack_linears(model, under=("tfmr.layers", "speech_head"), groups=groups) == n_linear
    assert isinstance(model.speech_head, PackedLinear)
    assert isinstance(model.cond_enc.spkr_enc, nn.Linear)  # outside `under`: left alone
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in state.items()}

    packed_tokens, packed_logits = decode(model, cond)
    assert packed_tokens == tokens and len(set(tokens)) > 1
    torch.testing.assert_close(packed_logits, logits, atol=1e-4, rtol=1e-4)
    with torch.no_grad():  # the uncached oracle (Hugging Face layers) runs through packed layers too
        embeds = model.build_inputs(cond, model.frame_text(torch.arange(1, 6)), with_cfg_row=True)
        torch.testing.assert_close(model(embeds), plain(embeds), atol=1e-4, rtol=1e-4)
    if groups:  # one call per group, the same numbers as the layers packed one by one
        one_by_one = tiny_t3()
        pack_linears(one_by_one, under=("tfmr.layers", "speech_head"))
        assert torch.equal(packed_logits, decode(one_by_one, cond)[1])

    assert unpack_linears(model) == n_linear
    assert not any(isinstance(m, PackedLinear) for m in model.modules())
    assert dict(model.named_modules()).keys() == dict(plain.named_modules()).keys()  # the groups are gone
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_a_packed_group_keeps_each_layers_weight_and_takes_no_new_weights():
    layers = [layer(True, out_features=n) for n in (5, 7, 3)]
    owner = nn.Module()
    owner.a, owner.b, owner.c = layers
    dense = {k: v.clone() for k, v in owner.state_dict().items()}
    pack_linears(owner, under=("a", "b", "c"), groups={"abc": ("a", "b", "c")})
    assert isinstance(owner.abc, PackedGroup) and all(isinstance(m, PackedMember) for m in (owner.a, owner.b, owner.c))
    x = torch.randn(2, 1, 300)
    for name, plain, part in zip("abc", layers, owner.abc.split(x)):
        assert torch.equal(getattr(owner, name).weight, plain.weight)
        torch.testing.assert_close(getattr(owner, name)(x), plain(x), atol=1e-5, rtol=1e-5)
        assert torch.equal(getattr(owner, name)(x), part)
    assert owner.state_dict().keys() == dense.keys()
    with pytest.raises(RuntimeError, match="load them into the plain model"):
        owner.load_state_dict(dense)
    with pytest.raises(ValueError, match="a bias on every layer or on none"):
        PackedGroup([layer(True), layer(False)])


@pytest.mark.parametrize("mode", ["int8", "bf16"])
def test_fast_modes_start_from_a_packed_t3(mode, cond):
    model = tiny_t3()
    pack_linears(model, under=("tfmr.layers", "speech_head"))
    build_t3(model, LoadOptions.from_modes(mode))
    assert not any(isinstance(m, PackedLinear) for m in model.modules())
    if mode == "int8":
        assert isinstance(model.speech_head, Int8Linear)
    else:
        assert model.speech_head.weight.dtype == torch.bfloat16
    tokens, _ = decode(model, cond)
    assert len(tokens) == GREEDY.max_new_tokens


def test_loaded_t3_on_cpu_is_packed(pipeline):
    t3 = pipeline.model().t3
    assert not any(isinstance(m, nn.Linear) for m in t3.tfmr.layers.modules())
    for block in t3.tfmr.layers:
        attn, mlp = block.self_attn, block.mlp
        assert [type(m) for m in (attn.qkv_proj, mlp.gate_up_proj)] == [PackedGroup] * 2
        assert all(type(m) is PackedMember for m in (attn.q_proj, attn.k_proj, attn.v_proj, mlp.gate_proj, mlp.up_proj))
        assert type(attn.o_proj) is PackedLinear and type(mlp.down_proj) is PackedLinear
    assert type(t3.speech_head) is PackedLinear and isinstance(t3.cond_enc.spkr_enc, nn.Linear)
    # Memory accounting (the pool's budget) counts the packed weights: about the float32 file's bytes.
    file_bytes = (pipeline.pool.sources.path(MODELS["english"].t3.files)).stat().st_size
    assert 0.97 < size_bytes(t3) / file_bytes < 1.03, (size_bytes(t3), file_bytes)


def test_packed_and_int8_weights_count_in_memory_accounting():
    owner = nn.Module()
    owner.a, owner.b, owner.c = layer(True, 5), layer(True, 7), layer(False, 11)
    dense = size_bytes(owner)
    pack_linears(owner, under=("a", "b", "c"), groups={"ab": ("a", "b")})
    assert size_bytes(owner) == dense  # the group holds a and b once; biases stay tensors
    float32 = layer(False, 64)
    assert 0.25 < size_bytes(Int8Linear(float32.weight)) / size_bytes(float32) < 0.3  # a quarter, and scales
