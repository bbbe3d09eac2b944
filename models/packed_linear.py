"""Linear layers whose float32 weights are kept in oneDNN's packed layout, for CPU decoding.

A T3 decoding step multiplies two rows (the guidance pair) by every backbone weight, so its
speed is the speed of reading 2 GB of weights. oneDNN's inner product over a weight reordered
once, at load, reads them about twice as fast as MKL's float32 routines do for two rows
(figures in bench/README.md). The arithmetic stays float32: only the order of the additions
differs (relative differences ~1e-6).

The packed weight replaces the dense one (no second copy in memory). `state_dict` and
`load_state_dict` still speak the checkpoint's `weight`/`bias` keys; `unpack_linears`
gives a model back its `nn.Linear` layers (before changing its dtype, say).
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

PACKED_ROWS = 2  # rows per call the layout is chosen for: the decoding step's guidance pair


def packing_available() -> bool:
    """Whether this torch build has the oneDNN kernels (x86 and most ARM wheels do)."""
    ops = torch.ops.mkldnn
    return (torch.backends.mkldnn.is_available()
            and hasattr(ops, "_reorder_linear_weight") and hasattr(ops, "_linear_pointwise"))


class PackedLinear(nn.Module):
    """`nn.Linear` for float32 inference on CPU with the weight in oneDNN's layout (no autograd)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self._pack(weight, bias)

    @classmethod
    def from_linear(cls, layer: nn.Linear) -> "PackedLinear":
        return cls(layer.weight, layer.bias)

    def _pack(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        if weight.dtype != torch.float32 or weight.device.type != "cpu":
            raise ValueError(f"packs float32 CPU weights; got {weight.dtype} on {weight.device}")
        if tuple(weight.shape) != (self.out_features, self.in_features):
            raise ValueError(f"weight shape {tuple(weight.shape)}, layer is "
                             f"{(self.out_features, self.in_features)}")
        # Plain attributes, not parameters: `Module.to` would not know an opaque tensor.
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), PACKED_ROWS)
        self.bias = None if bias is None else bias.detach().float().clone()

    @property
    def weight(self) -> torch.Tensor:
        """A dense copy of the weight (out, in)."""
        return self.packed.to_dense()

    def to_linear(self) -> nn.Linear:
        layer = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        with torch.no_grad():
            layer.weight.copy_(self.weight)
            if self.bias is not None:
                layer.bias.copy_(self.bias)
        return layer.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad and torch.is_grad_enabled():
            raise RuntimeError("PackedLinear is for inference; unpack_linears() gives trainable layers")
        if x.dtype != torch.float32:
            raise TypeError(f"PackedLinear takes float32 input, got {x.dtype}")
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    def _apply(self, fn, recurse=True):
        # `Module.to`, `.half()`, `.cuda()` ... reach tensors through this hook, but the packed
        # weight is opaque to them: say so, rather than leave a float32 CPU layer in a
        # model that was moved or cast. (Staying float32 on the CPU is fine.)
        probe = fn(torch.zeros(1))
        if probe.device.type != "cpu" or probe.dtype != torch.float32:
            raise ValueError(f"a PackedLinear keeps a oneDNN-packed float32 weight on the CPU and cannot become "
                             f"{probe.dtype} on {probe.device}; call unpack_linears(model) first")
        return super()._apply(fn, recurse)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"

    # The checkpoint's keys, dense, so that a packed model saves and loads like the original.
    def _save_to_state_dict(self, destination, prefix, keep_vars):
        destination[prefix + "weight"] = self.weight
        if self.bias is not None:
            destination[prefix + "bias"] = self.bias

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys, error_msgs):
        names = ["weight"] + (["bias"] if self.bias is not None else [])
        absent = [prefix + n for n in names if prefix + n not in state_dict]
        missing_keys.extend(absent)
        if strict:
            unexpected_keys.extend(k for k in state_dict if k.startswith(prefix) and "." not in k[len(prefix):]
                                   and k[len(prefix):] not in names)
        if absent:
            return
        try:
            with torch.no_grad():
                self._pack(state_dict[prefix + "weight"].float(),
                           state_dict[prefix + "bias"] if self.bias is not None else None)
        except ValueError as exc:
            error_msgs.append(f"{prefix}weight: {exc}")


def _replace(model: nn.Module, name: str, layer: nn.Module) -> None:
    owner_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(owner_name) if owner_name else model, attr, layer)


def pack_linears(model: nn.Module, under: Iterable[str]) -> int:
    """Pack every float32 CPU `nn.Linear` of `model` named in or below `under`; returns how many.

    One layer at a time, so memory holds at most one layer twice.
    """
    prefixes = tuple(under)
    chosen = [name for name, m in model.named_modules()
              if isinstance(m, nn.Linear) and m.weight.dtype == torch.float32 and m.weight.device.type == "cpu"
              and any(name == p or name.startswith(p + ".") for p in prefixes)]
    for name in chosen:
        _replace(model, name, PackedLinear.from_linear(model.get_submodule(name)))
    return len(chosen)


def unpack_linears(model: nn.Module) -> int:
    """Turn every `PackedLinear` of `model` back into an `nn.Linear`; returns how many."""
    chosen = [name for name, m in model.named_modules() if isinstance(m, PackedLinear)]
    for name in chosen:
        _replace(model, name, model.get_submodule(name).to_linear())
    return len(chosen)
