"""How much to rely on each graph regulariser: fixed, or a bandit driven by gradient agreement (the paper's).

The bandit (Hedge, full information) keeps a log-weight per component ("Rx/<set>", "Rz/<set>")
and one for "none", the task loss alone, whose reward is fixed at 0. Each step, a component's
reward is the cosine between the task loss's gradient and the component's gradient with respect
to the batch embeddings it pulls on (queries for R_x, labels for R_z): to first order, how much a
step on the regulariser also lowers the task loss. Multipliers are (C + 1) softmax(w)_c, so they
start at 1 and a component whose links disagree with the task drifts below "none" towards 0.
"""
from __future__ import annotations

import math

import torch


class Reliance:
    """Per-component multipliers of the regularisers' lambdas."""

    def __init__(self, components: list[str], *, mode: str = "fixed", lr: float = 0.01):
        self.components = list(components)
        self.mode = mode
        self.lr = lr
        self.log_weights = {c: 0.0 for c in self.components}
        self._reward_sum = {c: 0.0 for c in self.components}
        self._reward_n = 0

    def multipliers(self) -> dict[str, float]:
        if self.mode == "bandit" and self.components:
            top = max(0.0, *self.log_weights.values())
            exp = {c: math.exp(w - top) for c, w in self.log_weights.items()}
            norm = sum(exp.values()) + math.exp(-top)  # + the "none" arm (log-weight 0)
            return {c: (len(self.components) + 1) * e / norm for c, e in exp.items()}
        return {c: 1.0 for c in self.components}

    def update(self, rewards: dict[str, float]) -> None:
        for c, r in rewards.items():
            if c in self.log_weights and math.isfinite(r):
                self.log_weights[c] += self.lr * r
                self._reward_sum[c] += r
        self._reward_n += 1

    def summary(self) -> dict[str, dict[str, float]]:
        """Current multipliers and mean rewards since the last summary (then reset)."""
        n = max(1, self._reward_n)
        out = {c: {"multiplier": m, "mean_reward": self._reward_sum[c] / n} for c, m in self.multipliers().items()}
        self._reward_sum = {c: 0.0 for c in self.components}
        self._reward_n = 0
        return out

    def state_dict(self) -> dict:
        return {"log_weights": dict(self.log_weights), "reward_sum": dict(self._reward_sum), "reward_n": self._reward_n}

    def load_state_dict(self, state: dict) -> None:
        self.log_weights = dict(state["log_weights"])
        self._reward_sum = dict(state["reward_sum"])
        self._reward_n = int(state["reward_n"])


def gradient_agreement(parts: dict[str, torch.Tensor], emb: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """cos(dL/dx, dR/dx) for each regulariser component R, x its rows' embeddings (queries or
    labels), as 0-d tensors on the embeddings' device (0 where a gradient is missing or zero)."""
    rewards = {}
    task = {}
    for key in ("query", "label"):
        g = torch.autograd.grad(parts["L"], emb[key], retain_graph=True, allow_unused=True)[0]
        task[key] = None if g is None else g.flatten()
    for comp, value in parts.items():
        if comp == "L" or not value.requires_grad:
            continue
        key = "query" if comp.startswith("Rx/") else "label"
        g = torch.autograd.grad(value, emb[key], retain_graph=True, allow_unused=True)[0]
        if g is None or task[key] is None:
            rewards[comp] = emb[key].new_zeros((), dtype=torch.float32)
            continue
        denom = task[key].norm() * g.flatten().norm()
        rewards[comp] = torch.where(denom > 0, task[key] @ g.flatten() / denom.clamp_min(1e-30), 0.0).float()
    return rewards
