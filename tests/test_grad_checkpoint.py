"""Gradient checkpointing of the cell stack changes memory, not results: the same loss, the same
gradients, the same BatchNorm running statistics, with drop path and the auxiliary head on."""

from __future__ import annotations

import copy

import torch

from nasnet_backbones import NASNetOutputs, build_nasnet, genotypes


def one_step(model, x, y):
    torch.manual_seed(3)  # the same drop-path masks
    out = model(x)
    assert isinstance(out, NASNetOutputs)
    loss = torch.nn.functional.cross_entropy(out.logits, y) + 0.4 * torch.nn.functional.cross_entropy(out.aux_logits, y)
    loss.backward()
    return loss.detach()


def test_checkpointed_step_equals_plain_step():
    torch.manual_seed(0)
    plain = build_nasnet(genotypes.NASNET_A, num_cells=3, num_filters=8, num_classes=5, img_size=96, aux_head=True,
                         drop_path_prob=0.3).train()
    ckpt = copy.deepcopy(plain)
    ckpt.set_grad_checkpointing(True)
    x, y = torch.randn(2, 3, 97, 96, requires_grad=True), torch.tensor([1, 3])
    x2 = x.detach().clone().requires_grad_(True)
    torch.testing.assert_close(one_step(ckpt, x2, y), one_step(plain, x, y), rtol=0, atol=0)
    torch.testing.assert_close(x2.grad, x.grad, rtol=1e-6, atol=1e-7)
    grads = dict(plain.named_parameters())
    for name, p in ckpt.named_parameters():
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, grads[name].grad, rtol=1e-5, atol=1e-7, msg=name)
    buffers = dict(plain.named_buffers())
    for name, b in ckpt.named_buffers():  # running statistics moved once, not twice
        torch.testing.assert_close(b, buffers[name], rtol=0, atol=0, msg=name)


def test_checkpointing_is_a_training_switch_only():
    torch.manual_seed(0)
    model = build_nasnet(genotypes.NASNET_A, num_cells=3, num_filters=8, num_classes=5).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want = model(x)
        model.set_grad_checkpointing(True)
        torch.testing.assert_close(model(x), want, rtol=0, atol=0)
    assert model.grad_checkpointing
    model.set_grad_checkpointing(False)
    assert not model.grad_checkpointing
