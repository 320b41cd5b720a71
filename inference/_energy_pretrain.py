"""Greedy layer-wise pretraining of layered energy models: one RBM per link trained by CD-k
bottom-up and composed — copied for a DBN (Hinton, Osindero & Teh 2006), with the doubled /
halved weights of Salakhutdinov & Hinton (2009, §3.1) for a DBM."""
from __future__ import annotations


import torch

from probgen import checkpoint
from probgen.energy import LayeredEnergy

from ._energy_cd import train_bipartite


def stage_up(x: torch.Tensor, stage: dict, T: float = 1.0) -> torch.Tensor:
    """A stacked RBM's hidden means given its input, σ((c + up·Wᵀx)/T) — what the next
    RBM of a greedy stack is trained on (up = 2 for a DBM's bottom RBM: doubled weights)."""
    return torch.sigmoid((stage["c"] + stage["up"] * (x @ stage["W"])) / T)


def pretraining_factors(n_links: int, kind: str) -> list[dict]:
    """For each stacked RBM (bottom first): ``up`` copies of its visible layer, ``down``
    copies of its hidden layer, and ``scale``, the factor its weights get when composed.

    DBN: plain RBMs, weights copied (scale 1). DBM (Salakhutdinov & Hinton
    2009): the bottom RBM has two copies of the visible layer (bottom-up weights
    effectively doubled), the top RBM two copies of the top layer, and the weights of the
    RBMs in between are halved when composed. A one-link DBM is a plain RBM."""
    out = []
    for l in range(1, n_links + 1):
        if kind == "dbn" or n_links == 1:
            out.append({"up": 1, "down": 1, "scale": 1.0})
        elif l == 1:
            out.append({"up": 2, "down": 1, "scale": 1.0})
        elif l == n_links:
            out.append({"up": 1, "down": 2, "scale": 1.0})
        else:
            out.append({"up": 1, "down": 1, "scale": 0.5})
    return out


def greedy_pretrain(model: LayeredEnergy, x: torch.Tensor, params: dict, kind: str, opts: dict,
                    steps: int, g: torch.Generator, progress: bool, seed: int | None = None,
                    trainer: dict | None = None) -> tuple[dict, list[dict]]:
    """Train one RBM per link by CD-k, bottom-up, each on the previous RBM's hidden
    probabilities, and compose them (Hinton, Osindero & Teh 2006; Salakhutdinov & Hinton
    2009 pretrain with CD as well; ``persistent`` applies to the joint training only).

    Biases: the visible bias from the bottom RBM; a DBN's layer l < L takes the bias of
    the RBM above it (its visible side, which generates layer l top-down) and the top
    layer its own; a DBM's inner layers average the two RBMs' biases (each RBM accounts
    for half of the layer's input). Returns (params, stages).

    Each stage is a run of the gradient trainer with the fit's trainer options (``trainer``)
    except its callback; the stages write no checkpoint (a resumed fit pretrains again, the
    same way from the same seed, and continues its joint training from the checkpoint)."""
    stage_trainer = None if trainer is None else dict(trainer, callback=None)
    links = sorted(model.coupling_names)
    factors = pretraining_factors(len(links), kind)
    params = dict(params)
    stages = []
    inp = x
    for (i, j), fac in zip(links, factors):
        w = model.coupling_names[(i, j)]
        visible = model.layers[i].units
        with checkpoint.activate(None):
            W, b, c, hist, _ = train_bipartite(
                inp, params[w], params[model.bias_names[i]], params[model.bias_names[j]], T=model.T,
                visible=visible, up=fac["up"], down=fac["down"], steps=steps, batch_size=opts["batch_size"],
                lr=opts["lr"], k=opts["k"], persistent=False, momentum=opts["momentum"],
                weight_decay=opts["weight_decay"], n_chains=opts["n_chains"], g=g, progress=progress,
                seed=seed, trainer=stage_trainer, desc=f"pretrain {w}")
        stages.append({"link": (i, j), "weight": w, **fac, "W": W, "b": b, "c": c, "history": hist})
        inp = stage_up(inp, stages[-1], model.T)
    for st in stages:
        params[st["weight"]] = st["scale"] * st["W"]
    L = len(stages)
    params[model.bias_names[0]] = stages[0]["b"]
    for l in range(1, L + 1):
        below, above = stages[l - 1], stages[l] if l < L else None
        if above is None:
            params[model.bias_names[l]] = below["c"]
        elif kind == "dbn":
            params[model.bias_names[l]] = above["b"]
        else:
            params[model.bias_names[l]] = 0.5 * (below["c"] + above["b"])
    return params, stages
