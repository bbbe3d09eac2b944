"""Linear layers whose float32 weights are kept in oneDNN's packed layout, for CPU decoding.

A T3 decoding step multiplies two rows (the guidance pair) by every backbone weight, so its
speed is the speed of reading 2 GB of weights. oneDNN's inner product over a weight reordered
once, at load, reads them about twice as fast as MKL's float32 routines do for two rows
(figures in bench/README.md). The arithmetic stays float32: only the order of the additions
differs (relative differences ~1e-6).

The packed weight replaces the dense one (no second copy in memory). `state_dict` and
`load_state_dict` still speak the checkpoint's `weight`/`bias` keys; `unpack_linears`
gives a model back its `nn.Linear` layers (before changing its dtype, say).

Sibling layers that read the same input (a Llama block's q/k/v, its gate/up) can be packed
as one weight (`PackedGroup`): a decoding step then makes one oneDNN call for them instead
of one each, which saves the call's fixed cost (waking the second thread, ~20% of a 2-row
T3 step on a 2-core machine) and gives the same numbers bit for bit (each output column is
the same dot product). The layers stay reachable by their names (`PackedMember`).
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

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
    def packed_bytes(self) -> int:
        """Bytes of the packed weight and the bias, which are plain attributes, not parameters
        (memory accounting reads this)."""
        return self.out_features * (self.in_features + (self.bias is not None)) * 4

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


class PackedGroup(PackedLinear):
    """Linear layers reading the same input, packed as one weight (their rows stacked in order).

    `split(x)` gives each layer's output (views of one product). The group has no
    checkpoint keys of its own: its members (`PackedMember`, under the layers' names) hold them.
    """

    def __init__(self, layers: Sequence[nn.Module]):
        biases = [layer.bias for layer in layers]
        if len({b is None for b in biases}) > 1:
            raise ValueError("a packed group needs a bias on every layer or on none")
        weight = torch.cat([layer.weight.detach() for layer in layers])
        super().__init__(weight, None if biases[0] is None else torch.cat([b.detach() for b in biases]))
        self.sizes = [layer.weight.shape[0] for layer in layers]

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self(x).split(self.sizes, dim=-1)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        pass  # the members save the checkpoint's keys

    def _load_from_state_dict(self, *args):
        pass  # the members refuse loading (see PackedMember)


class PackedMember(PackedLinear):
    """Rows start:stop of a `PackedGroup`'s weight: one grouped layer, under its own name and
    checkpoint keys. Called alone it runs the whole group and keeps its columns (the decoding
    step calls the group once instead: models/t3.py `_projections`)."""

    def __init__(self, group: PackedGroup, start: int, stop: int):
        nn.Module.__init__(self)
        self._group = (group,)  # a tuple: the group is registered once, beside its members
        self.start, self.stop = start, stop
        self.out_features, self.in_features = stop - start, group.in_features
        self.bias = None if group.bias is None else group.bias[start:stop]

    @property
    def group(self) -> PackedGroup:
        return self._group[0]

    @property
    def packed_bytes(self) -> int:
        return 0  # the group holds the weight

    @property
    def weight(self) -> torch.Tensor:
        return self.group.weight[self.start : self.stop]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.group(x)[..., self.start : self.stop]

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys, error_msgs):
        error_msgs.append(f"{prefix}weight: a layer packed in a group takes no new weights; load them "
                          "into the plain model, then pack it")


def _replace(model: nn.Module, name: str, layer: nn.Module) -> None:
    owner_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(owner_name) if owner_name else model, attr, layer)


def pack_linears(model: nn.Module, under: Iterable[str], groups: Mapping[str, Sequence[str]] | None = None) -> int:
    """Pack every float32 CPU `nn.Linear` of `model` named in or below `under`; returns how many.

    `groups` maps a group name to sibling layer names ({"qkv_proj": ("q_proj", "k_proj",
    "v_proj")}): wherever all of them are chosen under one owner, they are packed as one
    `PackedGroup` registered under the group name, each layer a `PackedMember`. One layer
    (or group) at a time, so memory holds at most one of them twice.
    """
    prefixes = tuple(under)
    chosen = [name for name, m in model.named_modules()
              if isinstance(m, nn.Linear) and m.weight.dtype == torch.float32 and m.weight.device.type == "cpu"
              and any(name == p or name.startswith(p + ".") for p in prefixes)]
    choosable, grouped = set(chosen), set()
    for owner_name, owner in list(model.named_modules()):
        path = f"{owner_name}." if owner_name else ""
        for group_name, names in (groups or {}).items():
            if not all(path + n in choosable for n in names):
                continue
            group = PackedGroup([getattr(owner, n) for n in names])
            setattr(owner, group_name, group)
            start = 0
            for n, size in zip(names, group.sizes):
                setattr(owner, n, PackedMember(group, start, start + size))
                start += size
            grouped.update(path + n for n in names)
    for name in chosen:
        if name not in grouped:
            _replace(model, name, PackedLinear.from_linear(model.get_submodule(name)))
    return len(chosen)


def unpack_linears(model: nn.Module) -> int:
    """Turn every `PackedLinear` of `model` back into an `nn.Linear` (a group's members each
    into their own, the group removed); returns how many layers."""
    modules = list(model.named_modules())
    chosen = [name for name, m in modules if isinstance(m, PackedLinear) and not isinstance(m, PackedGroup)]
    for name in chosen:
        _replace(model, name, model.get_submodule(name).to_linear())
    for name in [name for name, m in modules if isinstance(m, PackedGroup)]:
        owner_name, _, attr = name.rpartition(".")
        delattr(model.get_submodule(owner_name) if owner_name else model, attr)
    return len(chosen)
