"""A model's anatomy: its stages, their output shapes and the data flow between them.

``stage_graph(model, input_size)`` runs a real forward pass (after a small one that finds the
stages) and reports each stage (a top-level child module, in the order ``forward`` calls it) with
its output shape, the stages it reads and the concatenations, additions and upsamplings on the
way. Nothing is written per model: the edges
come from following tensors through the forward pass (a ``TorchFunctionMode`` tags every tensor
with the stages it was computed from), so U-Net's concatenation inside ``Up`` and my_FCN's in its
own ``forward`` are found alike. A child returning a dict of maps, as DeepLabV3+'s backbone does
(``{"low": stride 4, "out": deepest}``), becomes one stage per entry (``backbone.low``,
``backbone.out``), each produced by the child's submodule that made that map::

    from segkit.models import build_model
    from segkit.models.anatomy import skip_connections, stage_graph
    stages = stage_graph(build_model("my_fcn"), (128, 256))
    skip_connections(stages)  # [("down2", "up2"), ("inc", "fuse")]
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

INPUT = "input"  # the name the model's input goes by among a stage's sources
OUTPUT = "output"  # the extra last stage when the model's output is not a stage's own output

_CONCATENATIONS = frozenset({torch.cat, torch.concat, torch.concatenate, torch.stack})
_ADDITIONS = frozenset({torch.add, Tensor.add, Tensor.add_, Tensor.__add__, Tensor.__iadd__,
                        Tensor.__radd__})
#: An operation upsamples when its output has at least this many times its input's pixels (a
#: stride-2 transposed conv or bilinear x2 gives 4; padding by a pixel to a skip's size does not).
_UPSAMPLING_AREA_RATIO = 2
_DISCOVERY_SIDE = 64  # input side (pixels) of the forward pass that finds the stages


@dataclass(frozen=True)
class Join:
    """Where the data of several stages meet, or one stage's data is upsampled."""

    kind: str  # "concat", "add" or "upsample"
    sources: tuple[str, ...]  # the stages (or INPUT) whose data it takes, in forward order
    shape: tuple[int, int, int]  # its output (C, H, W)
    inside: bool  # True: in the stage's own forward; False: in the model's, just before the stage


@dataclass(frozen=True)
class Stage:
    """One stage of a model: what it outputs and where its data comes from."""

    name: str  # the child's name, or "child.key" for one entry of a child's dict output
    module: str  # dotted path of the submodule whose output this is ("" for OUTPUT: the model)
    shape: tuple[int, int, int]  # output (C, H, W) for the input size the graph was made for
    level: int  # resolution level: round(log2(input height / H)), 0 at full resolution
    sources: tuple[str, ...]  # the stages (or INPUT) its output is computed from, forward order
    joins: tuple[Join, ...]  # concatenations, additions, upsamplings since those sources

    @property
    def merges(self) -> tuple[Join, ...]:
        """The concatenations and additions that bring this stage's sources together."""
        return tuple(join for join in self.joins if join.kind != "upsample")

    @property
    def upsamples(self) -> bool:
        """Whether data is upsampled on the way from the sources to this stage's output."""
        return any(join.kind == "upsample" for join in self.joins)


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode inside the block, back in its previous mode after it.

    Analyses must not touch batch-norm running statistics, and ASPP's image-pooling branch
    cannot batch-normalise a single 1x1 map in training mode.
    """
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def resolution_level(input_height: int, height: int) -> int:
    """How many halvings separate a map of ``height`` rows from the input (odd sizes rounded)."""
    return round(math.log2(input_height / height))


# --- which modules are the stages ----------------------------------------------------------------

def _forward_calls(model: nn.Module, x: Tensor) -> list[tuple[str, object]]:
    """(path, output) of every child and grandchild of ``model`` in the order their calls end."""
    calls: list[tuple[str, object]] = []
    handles = [module.register_forward_hook(lambda _m, _a, out, path=path: calls.append((path, out)))
               for path, module in model.named_modules() if path.count(".") <= 1 and path]
    try:
        model(x)
    finally:
        for handle in handles:
            handle.remove()
    return calls


def _stage_modules(model: nn.Module, x: Tensor) -> dict[str, str]:
    """Stage name -> dotted module path, in forward order, found with one forward pass of ``x``.

    Stages are the direct children ``forward`` calls; a child returning a dict of maps gives one
    stage per key, produced by the grandchild that returns that map.
    """
    calls = _forward_calls(model, x)
    # by identity; the last grandchild returning a tensor made it (in-place ops return their input)
    made_by = {id(out): path for path, out in calls if "." in path}
    stages: dict[str, str] = {}
    children = [(path, out) for path, out in calls if "." not in path]
    for name, out in children:
        if [path for path, _ in children].count(name) > 1:
            raise ValueError(f"child {name!r} runs more than once per forward; a stage runs once")
        if isinstance(out, Tensor):
            stages[name] = name
        elif isinstance(out, Mapping) and all(id(v) in made_by for v in out.values()):
            stages.update({f"{name}.{key}": made_by[id(value)] for key, value in out.items()})
        else:
            raise TypeError(f"child {name!r} returns {type(out).__name__}; a stage must return a "
                            "tensor, or a dict of tensors each returned by one of its children")
    return stages


# --- following the data ---------------------------------------------------------------------------

@dataclass(frozen=True)
class _Flow:
    """What a tensor was computed from: stages (or INPUT), and the joins since those stages."""

    sources: frozenset[str]
    joins: tuple[Join, ...] = ()


def _tensors(tree: object) -> list[Tensor]:
    return [leaf for leaf in tree_flatten(tree)[0] if isinstance(leaf, Tensor)]


def _spatial_shape(tensor: Tensor) -> tuple[int, int, int]:
    """(C, H, W) of an (N, C, H, W) map."""
    if tensor.dim() != 4:
        raise ValueError(f"expected an (N, C, H, W) map, got shape {tuple(tensor.shape)}")
    return tuple(tensor.shape[1:])


class _FlowTracer(TorchFunctionMode):
    """Tags every tensor a forward pass computes with its ``_Flow``; records each stage as it ends.

    Every torch function call (convolutions, ``torch.cat``, ``F.interpolate``, ``+``, ...) passes
    through ``__torch_function__``, which gives its tensor results the union of its tensor
    operands' flows, plus a ``Join`` when it merges different stages' data or upsamples. A stage's
    output hook then reads its output's flow and restarts it as that stage alone.
    """

    def __init__(self, x: Tensor, modules: Mapping[str, str], model: nn.Module) -> None:
        super().__init__()
        self.flows: WeakIdKeyDictionary = WeakIdKeyDictionary()  # tensor -> _Flow, by identity
        self.flows[x] = _Flow(frozenset({INPUT}))
        self.input_height = x.shape[-2]
        self.areas = {INPUT: x.shape[-2] * x.shape[-1]}  # pixels of each source's map
        self.order = [INPUT]  # sources in forward order
        self.running = 0  # how many stages are in their forward right now
        self.stages: list[Stage] = []
        self.handles = []
        for name, path in modules.items():
            module = model.get_submodule(path)
            self.handles += [module.register_forward_pre_hook(self._enter),
                             module.register_forward_hook(
                                 lambda _m, _a, out, name=name, path=path: self._leave(name, path, out))]

    def remove_hooks(self) -> None:
        for handle in self.handles:
            handle.remove()

    def ordered(self, sources: frozenset[str]) -> tuple[str, ...]:
        return tuple(name for name in self.order if name in sources)

    def _enter(self, _module: nn.Module, _args: tuple) -> None:
        self.running += 1

    def _leave(self, name: str, path: str, out: Tensor) -> None:
        self.running -= 1
        self.stages.append(self.stage(name, path, out))
        self.flows[out] = _Flow(frozenset({name}))
        self.areas[name] = out.shape[-2] * out.shape[-1]
        self.order.append(name)

    def stage(self, name: str, path: str, out: Tensor) -> Stage:
        """The stage whose output is ``out``, read from the flow that reached it."""
        flow = self.flows.get(out, _Flow(frozenset()))
        shape = _spatial_shape(out)
        return Stage(name, path, shape, resolution_level(self.input_height, shape[1]),
                     self.ordered(flow.sources), flow.joins)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        operands = [t for t in _tensors((args, kwargs)) if t in self.flows]
        flows = [self.flows[t] for t in operands]
        outputs = _tensors(result)
        if not flows or not outputs:
            return result
        sources = frozenset().union(*(flow.sources for flow in flows))
        joins = tuple(dict.fromkeys(join for flow in flows for join in flow.joins))  # once each
        join = self._join(func, operands, sources, outputs[0])
        flow = _Flow(sources, (*joins, join) if join else joins)
        for tensor in outputs:
            self.flows[tensor] = flow
        return result

    def _join(self, func, operands: list[Tensor], sources: frozenset[str], out: Tensor
              ) -> Join | None:
        """The join ``func`` makes: merging different stages' data, or upsampling; else None."""
        merges_stages = len({self.flows[t].sources for t in operands}) > 1
        if func in _CONCATENATIONS and merges_stages:
            kind = "concat"
        elif func in _ADDITIONS and merges_stages:
            kind = "add"
        elif out.dim() == 4 and self._upsamples(operands, sources, out):
            kind = "upsample"
        else:
            return None
        return Join(kind, self.ordered(sources), _spatial_shape(out), inside=self.running > 0)

    def _upsamples(self, operands: list[Tensor], sources: frozenset[str], out: Tensor) -> bool:
        """Whether ``out`` has many more pixels than its operands and than every source map.

        The operands test leaves out the padding of an upsampled map to its skip's size; the
        sources test leaves out ASPP's image-pooling branch, which pools to 1x1 and only spreads
        that back to its input's size.
        """
        pixels = out.shape[-2] * out.shape[-1]
        return (all(pixels >= _UPSAMPLING_AREA_RATIO * t.shape[-2:].numel() for t in operands)
                and all(pixels >= _UPSAMPLING_AREA_RATIO * self.areas[s] for s in sources))


def stage_graph(model: nn.Module, input_size: tuple[int, int]) -> list[Stage]:
    """The model's stages in forward order, from a real forward pass of one (H, W) = ``input_size``
    image (in eval mode, without gradients; the model's mode is restored).

    Each stage has its output shape (C, H, W), the stages (or ``INPUT``) it reads and the joins
    on the way. When the model's output is not a stage's own output (DeepLabV3+ upsamples its
    head's stride-4 logits to the input), a last stage named ``OUTPUT`` stands for it.
    """
    x = torch.zeros(1, 3, *input_size, device=model_device(model))
    # which modules are the stages does not depend on the size: find them on a small input
    small = torch.zeros(1, 3, *(min(side, _DISCOVERY_SIDE) for side in input_size), device=x.device)
    with evaluating(model), torch.no_grad():
        modules = _stage_modules(model, small)
        tracer = _FlowTracer(x, modules, model)
        try:
            with tracer:
                out = model(x)
        finally:
            tracer.remove_hooks()
        flow = tracer.flows.get(out)
        if flow is None or len(flow.sources) != 1 or flow.joins:
            tracer.stages.append(tracer.stage(OUTPUT, "", out))
    return tracer.stages


def forward_stages(model: nn.Module, x: Tensor, stages: list[Stage]) -> dict[str, Tensor]:
    """Each stage's output (N, C, H, W) for ``model(x)`` (``OUTPUT``: the model's own output).

    Autograd records as the caller's grad mode says, so gradients can flow back from any stage.
    """
    outputs: dict[str, Tensor] = {}
    handles = [model.get_submodule(stage.module).register_forward_hook(
        lambda _m, _a, out, name=stage.name: outputs.__setitem__(name, out))
        for stage in stages if stage.name != OUTPUT]
    try:
        out = model(x)
    finally:
        for handle in handles:
            handle.remove()
    if any(stage.name == OUTPUT for stage in stages):
        outputs[OUTPUT] = out
    return outputs


# --- reading the graph ---------------------------------------------------------------------------

def edges(stages: list[Stage]) -> list[tuple[str, str]]:
    """(source, stage) for every stage's every source, in forward order."""
    return [(source, stage.name) for stage in stages for source in stage.sources]


def skip_connections(stages: list[Stage]) -> list[tuple[str, str]]:
    """The edges that jump over stages: from a source other than the stage just before."""
    previous = [INPUT, *(stage.name for stage in stages)]
    return [(source, name) for source, name in edges(stages)
            if source != previous[previous.index(name) - 1]]


# --- what a dilated kernel and ASPP read ----------------------------------------------------------

def dilated_taps(size: int, kernel: int, dilation: int) -> np.ndarray:
    """(size, size) bool: the pixels a ``kernel`` × ``kernel`` convolution with ``dilation`` reads
    for the output at the centre, found by convolving an impulse (so the figure shows what torch
    computes, not a formula)."""
    impulse = torch.zeros(1, 1, size, size)
    impulse[..., size // 2, size // 2] = 1
    ones = torch.ones(1, 1, kernel, kernel)
    reach = torch.nn.functional.conv2d(impulse, ones, padding=dilation * (kernel // 2), dilation=dilation)
    return (reach[0, 0] != 0).numpy()


def aspp_rates(model: torch.nn.Module) -> list[int]:
    """The dilation rates of the 3 × 3 branches of a model's ASPP (``model.aspp``), in order."""
    return [m.dilation[0] for m in model.aspp.modules()
            if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
