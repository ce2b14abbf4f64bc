"""The "separate" regulariser step: the task and the regularisers normalised by Adam moments of their own.

With one AdamW on the summed gradient, heavier regularisers shrink the task's share of every step
(Adam divides each coordinate by the summed gradient's scale). Here the task gets exactly the step
it would get alone and the regularisers add a step of their own, scaled by their largest weight:
a graph that only takes the task's share of the step is then told apart from one that pulls the
encoder the wrong way.
"""

from __future__ import annotations

import torch

from ramen import distributed


def make_reg_optimizer(optimizer: torch.optim.AdamW) -> torch.optim.AdamW:
    """AdamW over `optimizer`'s parameter groups with moments of its own and no weight decay (the
    task's step applies it); its learning rates are set at every step by `separate_step`."""
    groups = [{"params": g["params"], "lr": g["lr"], "weight_decay": 0.0} for g in optimizer.param_groups]
    defaults = optimizer.defaults
    return torch.optim.AdamW(groups, lr=defaults["lr"], betas=defaults["betas"], eps=defaults["eps"],
                             fused=defaults.get("fused") or None)  # None: torch chooses, as for the task's


def separate_step(task: torch.Tensor, reg: torch.Tensor, scale: float, optimizer: torch.optim.Optimizer,
                  reg_optimizer: torch.optim.Optimizer, d: distributed.Dist, grad_clip: float | None) -> None:
    """One step of `optimizer` on the gradient of `task` and one of `reg_optimizer` on that of `reg`,
    at `scale` times the task's learning rates; both gradients are taken before either step."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    task_grads = torch.autograd.grad(task, params, retain_graph=True, allow_unused=True)
    if d.enabled:  # what DDP does for `reg` below: the mean over ranks
        for g in task_grads:
            if g is not None:
                torch.distributed.all_reduce(g)
                g.div_(d.world)
    optimizer.zero_grad(set_to_none=True)
    reg.backward()
    reg_grads = [p.grad for p in params]
    for reg_group, group in zip(reg_optimizer.param_groups, optimizer.param_groups):
        reg_group["lr"] = group["lr"] * scale
    # the task's step first, so that its weight decay acts on the weights before either step
    for opt, grads in ((optimizer, task_grads), (reg_optimizer, reg_grads)):
        for p, g in zip(params, grads):
            p.grad = g
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
