"""The fast eager path of both frameworks' NASNet backbones: a BatchNorm-folded shadow copy.

At inference a frozen (or eval-mode) BatchNorm is an affine map that folds into the convolution
before it (:func:`nasnet_backbones.optimize_for_inference`). A backbone cannot fold its own
BatchNorms away: it trains, saves checkpoints and loads them with the BatchNorms in place. So it
keeps them, and :class:`InferenceShadow` holds a folded copy that the backbone's eval-mode
forward runs instead, built lazily on the first such call and rebuilt when the real tensors
change: a weights load, an in-place update (an optimizer step, ``copy_``), ``.to()`` to another
device or dtype, a ``train()`` / ``eval()`` switch. Changes are seen through a fingerprint of the
real tensors (their identity, storage and version counter), checked on every call.

The copy is not a registered submodule: it is in no ``state_dict()``, ``parameters()`` or
checkpoint, ``copy.deepcopy`` and pickling drop it (the copy builds its own), and ``.to()`` does
not move it (the fingerprint then differs and it is rebuilt on the new device).

The plain path (the real modules) runs whenever the shadow would not compute exactly the same
function, or would hide something from the caller:

- in training mode, or when any submodule is in training mode (BatchNorm then uses batch
  statistics, drop-path is random);
- with gradients enabled and parameters that require them (the shadow's are detached);
- while tracing, scripting, compiling or exporting (torch.jit, torch.fx, torch.compile,
  torch.export, ONNX): the graph should hold the real modules, and the exporters fold themselves.

This module needs only torch and nasnet_backbones, so that both the detectron2 backbones (:mod:`detection.backbone`)
and the torchvision one (:mod:`detection.torchvision.backbone`) use it.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from nasnet_backbones.inference import optimize_for_inference
from nasnet_backbones.prepacked import capturing

__all__ = ["CHANNELS_LAST", "FastInference", "InferenceShadow", "drop_after_load"]

logger = logging.getLogger(__name__)


def _fx_symbolic_tracing() -> bool:
    """A torch.fx symbolic trace that passes real tensors through (a Proxy input is caught by
    :func:`~nasnet_backbones.prepacked.capturing`; ``is_fx_tracing()`` itself warns on every call)."""
    from torch.fx import _symbolic_trace

    symbolic = getattr(_symbolic_trace, "is_fx_symbolic_tracing", None)
    return bool(symbolic and symbolic())


def _scan(module: nn.Module) -> tuple[bool, bool, tuple | None]:
    """One walk over ``module``: (any submodule in training mode, any parameter requiring
    gradients, fingerprint). The fingerprint holds each tensor's identity, storage and version
    counter, so a load, an in-place update or a move changes it; None when a tensor has no
    version counter (made under ``torch.inference_mode``), whose in-place updates would go unseen.
    About a millisecond for NASNet-A mobile, against hundreds for the detector's forward."""
    training = grad = False
    items: list = []
    try:
        for m in module.modules():
            training = training or m.training
            for t in m._parameters.values():
                if t is not None:
                    grad = grad or t.requires_grad
                    items.append((id(t), t.data_ptr(), t._version))
            for t in m._buffers.values():
                if t is not None:
                    items.append((id(t), t.data_ptr(), t._version))
    except RuntimeError:  # "Inference tensors do not track version counter"
        return training, grad, None
    return training, grad, tuple(items)


class InferenceShadow:
    """The folded copy of a backbone's network (``channels_last``: with weights and input in
    channels_last memory), chosen by :meth:`select` where it is exact, and rebuilt when the
    backbone's tensors change.

    Keep it in a plain attribute (it is no ``nn.Module``, so assigning it registers nothing).
    ``copy.deepcopy`` and pickling give an empty shadow with the same settings."""

    def __init__(self, *, channels_last: bool = False) -> None:
        self.channels_last = channels_last
        self.module: nn.Module | None = None
        self._fingerprint: tuple | None = None
        self.builds = 0  # how many times a copy was built (tests and logs read it)

    def __deepcopy__(self, memo: dict) -> "InferenceShadow":
        return InferenceShadow(channels_last=self.channels_last)

    def __reduce__(self):
        return _empty_shadow, (self.channels_last,)

    def clear(self) -> None:
        """Drop the copy (the next :meth:`select` that may use it rebuilds it)."""
        self.module, self._fingerprint = None, None

    def select(self, owner: nn.Module, body: nn.Module, x: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
        """What ``owner`` (the backbone; ``body`` is its network) should run on ``x``: ``body``
        itself where the plain path is required (module doc), else the folded copy of ``body``
        as its tensors are now (built or rebuilt if needed); and ``x`` in that module's memory format."""
        if capturing(x) or _fx_symbolic_tracing():  # traced, compiled, exported: the real modules
            return body, x
        training, grad, current = _scan(owner)
        if training or current is None or (torch.is_grad_enabled() and (grad or x.requires_grad)):
            return body, x
        if self.module is None or current != self._fingerprint:
            self.clear()
            # Normal tensors even when called under inference_mode: the copy outlives the call.
            with torch.inference_mode(False), torch.no_grad():
                self.module = optimize_for_inference(body, channels_last=self.channels_last)
            self._fingerprint = current
            self.builds += 1
            logger.debug("built the folded inference copy of %s (build %d)", type(body).__name__, self.builds)
        return self.module, x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def _empty_shadow(channels_last: bool) -> InferenceShadow:
    return InferenceShadow(channels_last=channels_last)


# Whether the folded copy runs in channels_last memory. No: with the shipped NASNet-A mobile FPN
# Faster R-CNN at 512 px, one thread, the folded backbone took 151 ms in NCHW and 162 ms in
# channels_last (166 ms with its outputs made contiguous for the FPN); unfolded 335 ms.
CHANNELS_LAST = False


class FastInference:
    """The fast eager path of a backbone module (a mixin before ``nn.Module``): its forward asks
    :meth:`_inference_body` which network to run, the real one or the folded copy of
    :class:`InferenceShadow`. ``train()`` / ``eval()`` switches, ``.to()`` and weight loads drop
    the copy (the fingerprint would see all of them; dropping frees the memory at once)."""

    def _init_fast_path(self, enabled: bool) -> None:
        # A plain attribute (InferenceShadow is no nn.Module): no submodule, nothing in state_dict().
        self._shadow = InferenceShadow(channels_last=CHANNELS_LAST) if enabled else None

    @property
    def optimize_for_inference(self) -> bool:
        """Whether eval-mode forward passes may run the folded copy."""
        return self._shadow is not None

    def drop_inference_copy(self) -> None:
        """Forget the folded copy (the next forward that may use it rebuilds it)."""
        if self._shadow is not None:
            self._shadow.clear()

    def _inference_body(self, body: nn.Module, x: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
        """``body`` or its folded copy where that is exact, and ``x`` in the chosen one's memory format."""
        return (body, x) if self._shadow is None else self._shadow.select(self, body, x)

    def train(self, mode: bool = True):
        if mode or mode != self.training:  # training changes the weights; free the copy meanwhile
            self.drop_inference_copy()
        return super().train(mode)

    def _apply(self, *args, **kwargs):
        self.drop_inference_copy()  # .to() / .half() / .cuda(): the copy would stay on the old device
        return super()._apply(*args, **kwargs)


def drop_after_load(module: FastInference, incompatible) -> None:
    """A ``load_state_dict`` post-hook: new weights, so drop the folded copy now."""
    module.drop_inference_copy()
