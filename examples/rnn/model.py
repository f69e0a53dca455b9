"""The layer-normalized RNN in PyTorch, for training only (inference lives in examples.rnn.lnrnn and
needs no torch).  The same equations as :class:`examples.rnn.lnrnn.LNRNN`::

    a_t = W_hh·h_{t-1} + W_xh·x_t + b
    h_t = tanh(layer_norm(a_t; γ, β, ε))        biased variance, ε inside the root
    logit = w_out·h_T + b_out                    h_T at each sequence's own last step
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from examples.rnn.lnrnn import EPS, HIDDEN, INPUTS, LNRNN


class TorchLNRNN(nn.Module):
    def __init__(self, hidden: int = HIDDEN, eps: float = EPS):
        super().__init__()
        self.hidden, self.eps = hidden, eps
        self.w_xh = nn.Parameter(torch.randn(hidden, INPUTS) / INPUTS ** 0.5)
        self.w_hh = nn.Parameter(nn.init.orthogonal_(torch.empty(hidden, hidden)))
        self.b = nn.Parameter(0.5 * torch.randn(hidden))
        self.gamma = nn.Parameter(torch.ones(hidden))
        self.beta = nn.Parameter(torch.zeros(hidden))
        self.w_out = nn.Parameter(torch.randn(hidden) / hidden ** 0.5)
        self.b_out = nn.Parameter(torch.zeros(()))

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits (batch,) for ``inputs`` (batch, t_max, 2) zero-padded past ``lengths``."""
        batch, t_max, _ = inputs.shape
        h = inputs.new_zeros(batch, self.hidden)
        last = h
        for t in range(t_max):
            a = h @ self.w_hh.T + inputs[:, t] @ self.w_xh.T + self.b
            h = torch.tanh(F.layer_norm(a, (self.hidden,), self.gamma, self.beta, self.eps))
            last = torch.where((lengths == t + 1)[:, None], h, last)
        return last @ self.w_out + self.b_out

    def export(self, meta: dict | None = None) -> LNRNN:
        """float64 NumPy weights."""
        get = lambda p: p.detach().to(torch.float64).cpu().numpy().copy()  # noqa: E731
        return LNRNN(w_xh=get(self.w_xh), w_hh=get(self.w_hh), b=get(self.b), gamma=get(self.gamma),
                     beta=get(self.beta), w_out=get(self.w_out), b_out=float(self.b_out.item()),
                     eps=self.eps, meta=dict(meta or {}))
