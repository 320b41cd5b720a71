"""The grammar declaration: `PCFG`, a probabilistic context-free grammar (the
*grammar* declaration kind) — its rules and probabilities, the data it reads, and the
exact quantities the engines use (inside probabilities, expected rule counts, posteriors,
Viterbi parses, samples from its generative story).

Its parameters (``fit.params``) are ``probs``: a 1-D tensor aligned with
``grammar.rules`` (``probs[i]`` is the probability of ``grammar.rules[i]``; they sum to
one per left-hand side). The text format is `probgen.models.pcfg.text`, trees
`probgen.models.pcfg.tree`, the chart normal form `probgen.models.pcfg.normal_form`.

Reference: Manning & Schütze (1999), ch. 11; Lari & Young (1990).
"""
from __future__ import annotations

import itertools
import math
from importlib import resources
from typing import Any, Sequence

import numpy as np
import torch

from probgen.declarations import Declaration
from probgen.models.pcfg.normal_form import NormalForm
from probgen.models.pcfg.text import NAME, Rule, format_rules, parse_rules, quote
from probgen.models.pcfg.tree import Tree
from probgen.ops import inside as chart_ops
from probgen.ops.inside import NEG

__all__ = ["PCFG", "EXAMPLE_GRAMMAR", "DEFAULT_GRAMMAR"]


def _ints(t: torch.Tensor):
    """A flat read-only view of an int64 tensor whose items are Python ints (no copy)."""
    return memoryview(t.contiguous().numpy()).cast("B").cast("q") if t.numel() else []


class PCFG(Declaration):
    """A probabilistic context-free grammar.

    Build with `from_string`. Attributes: ``rules`` (list of `Rule`),
    ``probs`` (``(R,)`` float64, aligned with ``rules``), ``start``, ``nonterminals``,
    ``words`` (the terminal vocabulary), ``unknown`` (``"error"`` or a terminal that
    unknown words are mapped to, e.g. ``"<unk>"``).

    Data are a list of sentences (token lists, or strings split on whitespace) or a
    treebank (a list of `Tree` or bracketed strings).

    Parsing is CKY (Viterbi, ``query="map"``), sentence probabilities the inside algorithm,
    learning inside–outside EM (Baker 1979; Lari & Young 1990; Manning & Schütze 1999, ch. 11)
    or counting from a treebank.

    Examples:
        >>> import probgen as pg
        >>> from probgen.models import PCFG
        >>> grammar = PCFG.from_string('''
        ...     S -> NP VP [1.0]
        ...     NP -> 'she' [0.6] | 'he' [0.4]
        ...     VP -> 'runs' [0.5] | 'sleeps' [0.5]
        ... ''')
        >>> grammar.start, len(grammar.rules)
        ('S', 5)
        >>> fit = pg.fit(grammar, [["she", "runs"], ["he", "sleeps"]], engine="exact", progress=False)
        >>> fit.log_prob([["she", "runs"]]).exp().round(decimals=4).tolist()  # 0.6 × 0.5
        [0.3]
        >>> print(pg.infer(fit, [["she", "runs"]], query="map")[0])
        (S (NP she) (VP runs))
    """

    short_name = "pcfg"
    default_engine = "exact"
    default_dataset = "sentences"
    _repr_fields = ("start", "n_rules")

    def __init__(self, rules: Sequence[Rule], probs: Any, start: str | None = None,
                 unknown: str = "error", lines: Sequence[int] | None = None, normalize: bool = False):
        self.rules = list(rules)
        self.lines = list(lines) if lines is not None else list(range(1, len(self.rules) + 1))
        probs = torch.as_tensor(probs, dtype=torch.float64).clone()
        if probs.shape != (len(self.rules),):
            raise ValueError(f"probs must have shape ({len(self.rules)},), one per rule; got {tuple(probs.shape)}")
        self.start = start if start is not None else self.rules[0].lhs
        self._index()
        if normalize:
            sums = torch.zeros(len(self.nonterminals), dtype=torch.float64).index_add(0, self.rule_lhs, probs)
            if (sums[self.rule_lhs] <= 0).any():
                bad = self.nonterminals[int(self.rule_lhs[(sums[self.rule_lhs] <= 0).nonzero()[0, 0]])]
                raise ValueError(f"cannot normalise: the rules of {bad!r} have total weight 0")
            probs = probs / sums[self.rule_lhs]
        self.probs = probs
        self._validate()
        if unknown != "error" and unknown not in self.word_index:
            raise ValueError(f"unknown={unknown!r}: unknown words are mapped to a terminal of the grammar, "
                             f"and {unknown!r} is not one (add a rule like  N -> {quote(unknown)} [p])")
        self.unknown = unknown
        self._compile()

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_string(cls, text: str, normalize: bool = False, start: str | None = None,
                    unknown: str = "error") -> "PCFG":
        """Read NLTK-style rules (see the module docstring). With ``normalize=True`` the
        weights of each left-hand side are rescaled to sum to one (missing ``[p]`` = 1)."""
        if not isinstance(text, str):
            raise ValueError(f"from_string expects the grammar's text, got {type(text).__name__}")
        rules, probs, lines = parse_rules(text, normalize)
        return cls(rules, probs, start=start, unknown=unknown, lines=lines, normalize=normalize)

    def __str__(self) -> str:
        return format_rules(self.rules, self.probs.tolist())

    def __eq__(self, other: Any) -> bool:
        return (isinstance(other, PCFG) and self.rules == other.rules and self.start == other.start
                and torch.equal(self.probs, other.probs))

    __hash__ = None  # mutable-ish (probs tensor)

    @property
    def n_rules(self) -> int:
        """The number of rules R."""
        return len(self.rules)

    def with_probs(self, probs: Any) -> "PCFG":
        """The same rules with other probabilities (validated)."""
        return PCFG(self.rules, probs, start=self.start, unknown=self.unknown, lines=self.lines)

    def _index(self) -> None:
        seen: dict[Rule, int] = {}
        for i, r in enumerate(self.rules):
            if r in seen:
                raise ValueError(f"line {self.lines[i]}: duplicate rule {r} (first on line {self.lines[seen[r]]})")
            seen[r] = i
            if not NAME.match(r.lhs):
                raise ValueError(f"line {self.lines[i]}: bad nonterminal name {r.lhs!r}")
        lhs_order = list(dict.fromkeys(r.lhs for r in self.rules))
        if self.start not in lhs_order:
            raise ValueError(f"start symbol {self.start!r} has no rules")
        self.nonterminals = [self.start] + [a for a in lhs_order if a != self.start]
        self.nt_index = {a: i for i, a in enumerate(self.nonterminals)}
        words = []
        for i, r in enumerate(self.rules):
            for s, t in r.rhs:
                if t:
                    words.append(s)
                elif s not in self.nt_index:
                    raise ValueError(f"line {self.lines[i]}: undefined symbol {s!r} in rule {r} "
                                     f"({s!r} has no rules; quote it if it is a word: {quote(s)})")
        self.words = list(dict.fromkeys(words))
        self.word_index = {w: i for i, w in enumerate(self.words)}
        self.rule_lhs = torch.tensor([self.nt_index[r.lhs] for r in self.rules])
        self.rule_index = {r: i for i, r in enumerate(self.rules)}

    def _validate(self) -> None:
        first_line = {}
        for r, ln in zip(self.rules, self.lines):
            first_line.setdefault(r.lhs, ln)
        sums = torch.zeros(len(self.nonterminals), dtype=torch.float64).index_add(0, self.rule_lhs, self.probs)
        for a, s in zip(self.nonterminals, sums.tolist()):
            if abs(s - 1.0) > 1e-6:
                raise ValueError(f"line {first_line[a]}: the probabilities of the rules of {a!r} sum to {s:.9g}, "
                                 "not 1 (fix them or pass normalize=True)")
        # reachable from the start symbol
        reach, stack = {self.start}, [self.start]
        children = {a: set() for a in self.nonterminals}
        for r in self.rules:
            children[r.lhs].update(s for s, t in r.rhs if not t)
        while stack:
            for b in children[stack.pop()]:
                if b not in reach:
                    reach.add(b)
                    stack.append(b)
        unreachable = [a for a in self.nonterminals if a not in reach]
        if unreachable:
            raise ValueError("unreachable nonterminals (no derivation from the start symbol "
                             f"{self.start!r} uses them): " + ", ".join(f"{a!r} (line {first_line[a]})"
                                                                         for a in unreachable))
        # productive: derives some word string through rules of positive probability
        productive, changed = set(), True
        live = [r for r, p in zip(self.rules, self.probs.tolist()) if p > 0]
        while changed:
            changed = False
            for r in live:
                if r.lhs not in productive and all(t or s in productive for s, t in r.rhs):
                    productive.add(r.lhs)
                    changed = True
        unproductive = [a for a in self.nonterminals if a not in productive]
        if unproductive:
            raise ValueError("unproductive nonterminals (they derive no finite string of words): "
                             + ", ".join(f"{a!r} (line {first_line[a]})" for a in unproductive))

    def _compile(self) -> None:
        """Build the chart normal form (`probgen.models.pcfg.normal_form`)."""
        self.normal_form = NormalForm(self)
        self.chart_grammar = self.normal_form.chart_grammar
        self._cache: dict = {}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_cache"] = {}  # derived from probs; rebuilt on use
        return state

    def _cached(self, key: str, probs: torch.Tensor, make):
        """``make()`` for these ``probs``, remembered until called with other values
        (normal-form weights and best unary chains cost a few dozen small tensor ops)."""
        hit = self._cache.get(key)
        if hit is not None and hit[0].shape == probs.shape and torch.equal(hit[0], probs):
            return hit[1]
        value = make()
        self._cache[key] = (probs.detach().clone(), value)
        return value

    # -- data ----------------------------------------------------------------------------
    def check_data(self, data: Any) -> Any:
        """A list of token tuples, or a list of `Tree` for a treebank.

        Accepts a list of sentences (token lists or whitespace-separated strings) or of
        trees (`Tree` or bracketed strings). Unknown words raise ``ValueError``
        unless the grammar was built with ``unknown="<unk>"`` (a terminal of the grammar)."""
        if isinstance(data, (str, Tree)):
            data = [data]  # one sentence or one tree
        if isinstance(data, tuple):
            data = list(data)
        if not isinstance(data, list):
            raise ValueError("data must be a list of sentences (token lists or strings) or of trees, "
                             f"got {type(data).__name__}")
        if not data:
            raise ValueError("data is empty: expected a list of sentences (token lists or strings)")
        if all(isinstance(d, Tree) or (isinstance(d, str) and d.lstrip().startswith("(")) for d in data):
            trees = [d if isinstance(d, Tree) else Tree.fromstring(d) for d in data]
            for i, t in enumerate(trees):
                self._check_words(t.leaves(), i)
            return trees
        out = []
        known = self.word_index.__contains__
        for i, s in enumerate(data):
            if isinstance(s, str):
                toks = tuple(s.split())
            elif isinstance(s, (list, tuple)):
                toks = tuple(s)
            else:
                raise ValueError(f"sentence {i} must be a list of word strings or a string, got {type(s).__name__}"
                                 " (a treebank must contain only trees)")
            if not toks:
                raise ValueError(f"sentence {i} is empty")
            try:
                ok = all(map(known, toks))  # the common case, at C speed
            except TypeError:  # an unhashable token
                ok = False
            if not ok:
                if not all(isinstance(t, str) for t in toks):
                    raise ValueError(f"sentence {i} must be a list of word strings or a string, got a "
                                     f"{type(s).__name__} containing {type(next(t for t in toks if not isinstance(t, str))).__name__}")
                toks = tuple(self._check_words(list(toks), i))
            out.append(toks)
        return out

    def _check_words(self, toks: list[str], i: int) -> list[str]:
        bad = [t for t in toks if t not in self.word_index]
        if not bad:
            return toks
        if self.unknown == "error":
            raise ValueError(f"sentence {i} has words the grammar does not know: {sorted(set(bad))[:10]} "
                             "(build the grammar with unknown='<unk>' and a rule producing '<unk>' to map them)")
        return [t if t in self.word_index else self.unknown for t in toks]

    def _sentences(self, data: Any) -> list:
        data = self.check_data(data)
        if isinstance(data[0], Tree):
            raise ValueError("this takes sentences (token lists or strings), not trees")
        return data

    def _encode(self, sentences: Sequence[Sequence[str]]) -> tuple[torch.Tensor, chart_ops.Layout]:
        """The word ids of the (checked) sentences, concatenated ``(W,)``, and their chart layout."""
        lengths = [len(s) for s in sentences]
        ids = np.fromiter(map(self.word_index.__getitem__, itertools.chain.from_iterable(sentences)),
                          dtype=np.int64, count=sum(lengths))
        return torch.from_numpy(ids), chart_ops.Layout.make(lengths)

    def _batches(self, sentences: list) -> list[list[int]]:
        return chart_ops.length_batches([len(s) for s in sentences], n_rules=max(len(self.normal_form.bin), 1))

    def _sum_weights(self, probs: torch.Tensor) -> tuple:
        """Normal-form log weights for inside probabilities (no gradient), cached."""
        return self._cached("sum", probs, lambda: tuple(w.detach() for w in self.normal_form.weights(self._logp(probs))))

    def _max_weights(self, probs: torch.Tensor) -> tuple:
        """``(lex_w, bin_w, clo_w, chains)`` for Viterbi (`NormalForm.max_weights`), cached."""
        return self._cached("max", probs, lambda: self.normal_form.max_weights(self._logp(probs)))

    def init_params(self, data: Any = None, seed: int | None = None) -> dict[str, torch.Tensor]:
        return {"probs": self.probs.clone()}

    def _params(self, params: dict | None) -> torch.Tensor:
        probs = self.probs if params is None else torch.as_tensor(params["probs"], dtype=torch.float64)
        if probs.shape != self.probs.shape:
            raise ValueError(f"probs must have shape {tuple(self.probs.shape)} (one per rule), "
                             f"got {tuple(probs.shape)}")
        return probs

    @staticmethod
    def _logp(probs: torch.Tensor) -> torch.Tensor:
        return probs.clamp(min=0).log().clamp(min=NEG)

    # -- exact evaluation ----------------------------------------------------------------
    @chart_ops.single_threaded
    def log_prob(self, params: dict | None, data: Any) -> torch.Tensor:
        """``(N,)`` float64: the inside log-probability ``log p(sentence)`` of each
        sentence, or ``log p(tree)`` of each tree of a treebank (``-inf`` if impossible)."""
        probs = self._params(params)
        data = self.check_data(data)
        if isinstance(data[0], Tree):
            return torch.stack([self.tree_log_prob(t, probs) for t in data])
        weights = self._sum_weights(probs)
        batches = self._batches(data)
        with torch.no_grad():
            if len(batches) == 1:
                out = chart_ops.inside(self.chart_grammar, *weights, *self._encode(data))
            else:
                out = torch.empty(len(data), dtype=torch.float64)
                for rows in batches:
                    out[rows] = chart_ops.inside(self.chart_grammar, *weights,
                                                 *self._encode([data[i] for i in rows]))
        return out.masked_fill(out < NEG / 2, -math.inf)

    def tree_log_prob(self, tree: Tree, probs: torch.Tensor | None = None) -> torch.Tensor:
        """``log p(tree)``: the sum of the log probabilities of its rules."""
        probs = self.probs if probs is None else probs
        idx = self._tree_rules(tree)
        return probs[idx].log().sum()

    def _tree_rules(self, tree: Tree) -> list[int]:
        out = []
        for lhs, rhs in tree.productions():
            r = Rule(lhs, tuple((self.unknown if t and s not in self.word_index else s, t) for s, t in rhs))
            i = self.rule_index.get(r)
            if i is None:
                raise ValueError(f"the tree {str(tree)[:60]} uses {r}, which is not a rule of the grammar")
            out.append(i)
        return out

    @chart_ops.single_threaded
    def expected_counts(self, params: dict | None, sentences: list, per_sentence: bool = False
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """The E-step: expected rule counts given each sentence (the gradient of the log
        inside probability with respect to the log rule probabilities – the outside pass
        by backprop) and the log-likelihoods.

        Returns ``(counts, log_lik)``: counts ``(R,)`` summed over sentences (or ``(N, R)``
        with ``per_sentence=True``), log_lik ``(N,)``."""
        probs = self._params(params)
        sentences = self._sentences(sentences)
        R = len(self.rules)
        counts = torch.zeros((len(sentences), R) if per_sentence else (R,), dtype=torch.float64)
        ll = torch.empty(len(sentences), dtype=torch.float64)
        base = self._logp(probs)
        for rows in self._batches(sentences):
            tokens, layout = self._encode([sentences[i] for i in rows])
            logp = (base.expand(len(rows), R) if per_sentence else base).clone().requires_grad_(True)
            lz = chart_ops.inside(self.chart_grammar, *self.normal_form.weights(logp), tokens, layout)
            self._check_possible(lz, rows)
            (g,) = torch.autograd.grad(lz.sum(), logp)
            if per_sentence:
                counts[rows] = g
            else:
                counts += g
            ll[rows] = lz.detach()
        return counts, ll

    @staticmethod
    def _check_possible(lz: torch.Tensor, rows: list[int]) -> None:
        bad = (lz.detach() < NEG / 2).nonzero()
        if len(bad):
            raise ValueError(f"sentence {rows[int(bad[0, 0])]} has probability zero under the grammar "
                             "(no parse); remove it or add rules")

    def m_step(self, counts: torch.Tensor, previous: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Relative frequencies per left-hand side; a left-hand side with no counts keeps
        its ``previous`` probabilities."""
        previous = self.probs if previous is None else previous
        totals = torch.zeros(len(self.nonterminals), dtype=torch.float64).index_add(0, self.rule_lhs, counts)
        tot = totals[self.rule_lhs]
        probs = torch.where(tot > 0, counts / tot.clamp(min=1e-300), previous)
        return {"probs": probs}

    def treebank_counts(self, trees: list[Tree]) -> torch.Tensor:
        """``(R,)`` rule counts over a treebank (supervised sufficient statistics)."""
        counts = torch.zeros(len(self.rules), dtype=torch.float64)
        for t in trees:
            idx = torch.tensor(self._tree_rules(t))
            counts.index_add_(0, idx, torch.ones(len(idx), dtype=torch.float64))
        return counts

    @chart_ops.single_threaded
    def posteriors(self, params: dict | None, sentences: list) -> dict[str, Any]:
        """Span and rule posteriors of each sentence.

        Returns a dict: ``log_prob`` ``(N,)``; ``rules`` ``(N, R)`` expected count of each
        rule in the sentence's tree; ``spans`` a list of ``(n_b, n_b + 1, K)`` tensors,
        ``spans[b][i, j, a]`` the expected number of nodes labelled ``nonterminals[a]``
        covering words ``i..j-1`` (``j > i``); ``nonterminals`` the labels ``K``."""
        probs = self._params(params)
        sentences = self._sentences(sentences)
        counts, ll = self.expected_counts({"probs": probs}, sentences, per_sentence=True)
        K = len(self.nonterminals)
        logp = self._logp(probs)
        lex_w, bin_w, clo_w = self.normal_form.weights(logp)
        # chains through A: (C U)[T, A] = expected A-children of unary chains from T
        N = self.chart_grammar.n_nt
        U = torch.zeros(N, N, dtype=torch.float64)
        if len(self.normal_form.unary):
            U.index_put_((self.normal_form.unary[:, 0], self.normal_form.unary[:, 1]), probs[self.normal_form.unary[:, 2]], accumulate=True)
        CU = torch.linalg.inv(torch.eye(N, dtype=torch.float64) - U) @ U
        log_cu = CU.clamp(min=0).log()
        spans: list = [None] * len(sentences)
        for rows in self._batches(sentences):
            tokens, layout = self._encode([sentences[i] for i in rows])
            lz, probe, chart = chart_ops.inside(self.chart_grammar, lex_w.detach(), bin_w.detach(),
                                                clo_w.detach(), tokens, layout, probe=True)
            (top,) = torch.autograd.grad(lz.sum(), probe)     # (B, cells, N) top-of-chain posteriors
            beta = chart.detach()
            if len(self.normal_form.unary):  # + nodes that are unary children inside chains
                log_a = top.clamp(min=0).log() - beta          # log(outside / Z)
                inner = torch.logsumexp(log_a[..., :, None] + log_cu, -2) + beta
                top = top + inner.exp().nan_to_num(0.0)
            sent, start, width = layout.cells()
            order = torch.argsort(sent, stable=True)  # cells grouped by sentence
            per = torch.bincount(sent, minlength=len(rows)).tolist()
            for bi, idx in enumerate(torch.split(order, per)):
                nb = len(sentences[rows[bi]])
                span = torch.zeros(nb, nb + 1, K, dtype=torch.float64)
                span[start[idx], start[idx] + width[idx]] = top[idx, :K]
                spans[rows[bi]] = span
        return {"log_prob": torch.where(ll < NEG / 2, torch.full_like(ll, -math.inf), ll), "rules": counts,
                "spans": spans, "nonterminals": list(self.nonterminals)}

    @chart_ops.single_threaded
    def viterbi(self, params: dict | None, sentences: list) -> list[Tree | None]:
        """The most probable tree of each sentence (``None`` when it has no parse), each
        with ``.log_prob``; trees are in the original grammar (normal form undone)."""
        probs = self._params(params)
        sentences = self._sentences(sentences)
        lex_w, bin_w, clo_w, chains = self._max_weights(probs)
        cg = self.chart_grammar
        clo_slots, ent_slots, bl, br = self.normal_form.backtrace
        names = self.normal_form.symbols
        labels = [x if k == "orig" else None for x, k in zip(names, self.normal_form.kinds)]  # None: spliced
        N, R = cg.n_nt, max(len(cg.bin_lhs), 1)
        out: list = [None] * len(sentences)
        for rows in self._batches(sentences):
            batch = [sentences[i] for i in rows]
            tokens, layout = self._encode(batch)
            vc = chart_ops.viterbi(cg, lex_w, bin_w, clo_w, tokens, layout)
            # backpointers read one by one from flat memoryviews (Python ints, no copy of the chart)
            slot, split = _ints(vc.slot), _ints(vc.split)
            first, W = layout.first, len(tokens)

            def build(c: int, i: int, w: int, a: int, fb: list, words: Sequence[str]) -> list:
                """What the normal-form node ``a`` over cell ``c`` (words i..i+w-1) contributes
                to its parent in the original grammar: a tree, a word (preterminals), or the
                children of an intermediate symbol (spliced)."""
                if w == 1:
                    x = clo_slots[a][slot[c * N + a]]
                    kids = [words[i]]
                else:
                    x, r = ent_slots[a][slot[c * N + a]]
                    k = split[(c - W) * R + r] + 1
                    kids = build(fb[k - 1] + i, i, k, bl[r], fb, words)
                    kids += build(fb[w - k - 1] + i + k, i + k, w - k, br[r], fb, words)
                label = labels[x]
                items = [Tree(label, kids)] if label is not None else kids
                if x != a:  # the unary chain a => ... => x (best path)
                    for sym in reversed(chains[a][x]):
                        items = [Tree(names[sym], items)]
                return items

            fbs = list(zip(*first))  # fbs[b][w-1]: cell (b, 0, w)
            for bi, (words, score) in enumerate(zip(batch, vc.score.tolist())):
                if score < NEG / 2:
                    continue
                fb = fbs[bi]
                tree = build(fb[len(words) - 1], 0, len(words), cg.start, fb, words)[0]
                tree.log_prob = score
                out[rows[bi]] = tree
        return out

    # -- sampling ------------------------------------------------------------------------
    def expected_children(self, probs: torch.Tensor | None = None) -> torch.Tensor:
        """``M[A, B]`` = expected number of ``B`` children when ``A`` is expanded; the
        expected tree size is finite iff its spectral radius is below one."""
        probs = self.probs if probs is None else probs
        K = len(self.nonterminals)
        M = torch.zeros(K, K, dtype=torch.float64)
        for i, r in enumerate(self.rules):
            for s, t in r.rhs:
                if not t:
                    M[self.nt_index[r.lhs], self.nt_index[s]] += probs[i]
        return M

    def check_consistent(self, probs: torch.Tensor | None = None) -> float:
        """The spectral radius of `expected_children`; ``ValueError`` if it is ≥ 1
        (the expected size of a tree is infinite, so sampling may not terminate)."""
        rho = float(torch.linalg.eigvals(self.expected_children(probs)).abs().max())
        if rho >= 1 - 1e-9:
            raise ValueError(f"the grammar's expected tree size is infinite: the spectral radius of its "
                             f"expected-children matrix is {rho:.6g} >= 1, so sampling may never terminate; "
                             "lower the probabilities of recursive rules")
        return rho

    def program(self, probs: torch.Tensor | None = None, max_depth: int = 100, choices: dict | None = None) -> Tree:
        """The generative story as a recursive Pyro program: expanding a nonterminal
        draws one of its rules (``pyro.sample`` site ``"rule@<path>"``, a categorical
        over the rules of that left-hand side, ``<path>`` the node's address in the tree)
        and expands its nonterminal children. Returns the tree; ``ValueError`` beyond
        ``max_depth``."""
        import pyro
        probs = self.probs if probs is None else probs
        choose = choices or self._choices(probs)
        rhs = [r.rhs for r in self.rules]

        def expand(sym: str, path: str, depth: int) -> Tree:
            if depth > max_depth:
                raise ValueError(f"a sampled tree grew deeper than max_depth={max_depth}; "
                                 "raise max_depth or lower the probabilities of recursive rules")
            ids, d = choose[sym]
            k = int(pyro.sample(f"rule@{path}", d))
            return Tree(sym, [s if t else expand(s, f"{path}.{j}", depth + 1) for j, (s, t) in enumerate(rhs[ids[k]])])

        return expand(self.start, "0", 0)

    def _choices(self, probs: torch.Tensor) -> dict:
        """One categorical distribution per left-hand side (rule ids, distribution)."""
        import pyro.distributions as dist
        return {a: (ids.tolist(), dist.Categorical(probs[ids], validate_args=False))
                for a, ids in self._rule_table().items()}

    def _rule_table(self) -> dict[str, torch.Tensor]:
        table: dict[str, list[int]] = {}
        for i, r in enumerate(self.rules):
            table.setdefault(r.lhs, []).append(i)
        return {a: torch.tensor(v) for a, v in table.items()}

    def sample(self, params: dict | None, n: int, seed: int | None = None, max_depth: int = 100,
               max_length: int | None = None) -> list[Tree]:
        """``n`` trees drawn by running `program` (``tree.leaves()`` is the sentence;
        ``tree.log_prob`` is set). ``max_length`` keeps only sentences of at most that many
        words (rejection: a draw from the grammar conditioned on the length)."""
        import pyro
        from probgen.random import seeded
        probs = self._params(params)
        self.check_consistent(probs)
        logp = probs.log()
        out = []
        tries = 0
        # the Pyro program, run with its site bookkeeping but no handlers around it
        program, choices = self.program, self._choices(probs)
        with seeded(seed), pyro.validation_enabled(False):
            while len(out) < n:
                tree = program(probs, max_depth=max_depth, choices=choices)
                tries += 1
                if max_length is not None and len(tree.leaves()) > max_length:
                    if tries > 1000 * n:
                        raise ValueError(f"max_length={max_length} accepts almost no sampled sentences")
                    continue
                tree.log_prob = float(logp[self._tree_rules(tree)].sum())
                out.append(tree)
        return out

    # -- structure -----------------------------------------------------------------------
    def structure(self, *args: Any, params: bool = False, **options: Any):
        """The grammar as a directed graph: nonterminal → rule node → right-hand-side
        symbols (in order; edge attribute ``position``). Rule nodes have ``kind="factor"``
        and ``prob``; words have ``kind="terminal"``."""
        import networkx as nx
        if options:
            raise ValueError(f"unknown graph options {sorted(options)} for a PCFG; known: params")
        g = nx.DiGraph()
        g.graph["plates"] = {}
        for a in self.nonterminals:
            g.add_node(a, kind="nonterminal", plates=())
        for i, (r, p) in enumerate(zip(self.rules, self.probs.tolist())):
            node = f"rule{i}"
            g.add_node(node, kind="factor", prob=p, rule=str(r), label=f"{p:.3g}", plates=())
            g.add_edge(r.lhs, node, directed=True)
            for j, (s, t) in enumerate(r.rhs):
                name = quote(s) if t else s
                if t and name not in g:
                    g.add_node(name, kind="terminal", label=s, plates=())
                g.add_edge(node, name, directed=True, position=j)
        return g

    # -- bundled grammar and data --------------------------------------------------------
    @classmethod
    def default(cls) -> "PCFG":
        """The bundled grammar: a toy English fragment (20 nonterminals, 60 words, 80 rules)."""
        return cls.from_string(DEFAULT_GRAMMAR)

    @classmethod
    def example(cls, seed: int = 0) -> tuple["PCFG", list]:
        g = cls.from_string(EXAMPLE_GRAMMAR)
        trees = g.sample(None, 8, seed=seed, max_length=8)
        return g, [t.leaves() for t in trees]

    @classmethod
    def for_data(cls, data: Any, **options: Any) -> "PCFG":
        """The bundled grammar (``grammar=`` text to use another), checked against ``data``."""
        text = options.pop("grammar", None)
        g = cls.from_string(text, **options) if text else cls(**{"rules": cls.default().rules,
                                                                  "probs": cls.default().probs, **options})
        if data is not None:
            g.check_data(data)
        return g

    @classmethod
    def load_named_data(cls, name: str) -> list | None:
        """``"sentences"``: 200 sentences sampled (seed 0) from the bundled grammar."""
        if name != "sentences":
            return None
        text = resources.files("probgen").joinpath("datasets/pcfg_sentences.txt").read_text()
        return [line.split() for line in text.splitlines() if line.strip()]


EXAMPLE_GRAMMAR = """
S -> NP VP [1.0]
NP -> Det N [0.7] | 'she' [0.3]
VP -> V NP [0.6] | V [0.4]
Det -> 'the' [0.6] | 'a' [0.4]
N -> 'cat' [0.5] | 'dog' [0.5]
V -> 'sees' [0.7] | 'sleeps' [0.3]
"""

DEFAULT_GRAMMAR = """
S -> NP VP [0.8] | S Conj S [0.1] | Aux NP VP [0.1]
NP -> Det Nom [0.5] | PropN [0.2] | Pro [0.15] | NP PP [0.1] | Det Adj Nom [0.05]
Nom -> N [0.8] | N Nom [0.1] | Nom RelC [0.1]
RelC -> RelPro VP [1.0]
VP -> V NP [0.45] | V [0.2] | VP PP [0.15] | VP Adv [0.1] | V NP NP [0.05] | Vs SBar [0.05]
SBar -> Comp S [1.0]
PP -> P NP [1.0]
Det -> 'the' [0.5] | 'a' [0.3] | 'every' [0.1] | 'some' [0.1]
Adj -> 'old' [0.2] | 'small' [0.2] | 'green' [0.15] | 'happy' [0.15] | 'big' [0.15] | 'red' [0.15]
N -> 'dog' [0.05] | 'cat' [0.05] | 'man' [0.05] | 'woman' [0.05] | 'bird' [0.05] | 'house' [0.05] | 'car' [0.05] | 'letter' [0.05] | 'park' [0.1] | 'telescope' [0.05] | 'book' [0.1] | 'child' [0.1] | 'garden' [0.05] | 'city' [0.05] | 'river' [0.05] | 'table' [0.05] | 'teacher' [0.05]
PropN -> 'Alice' [0.3] | 'Bob' [0.3] | 'Paris' [0.2] | 'London' [0.2]
Pro -> 'she' [0.3] | 'he' [0.3] | 'they' [0.2] | 'it' [0.2]
V -> 'saw' [0.15] | 'ate' [0.1] | 'walked' [0.1] | 'liked' [0.15] | 'gave' [0.1] | 'found' [0.1] | 'read' [0.1] | 'slept' [0.1] | 'chased' [0.1]
Vs -> 'thinks' [0.4] | 'said' [0.3] | 'knows' [0.3]
P -> 'in' [0.3] | 'with' [0.3] | 'near' [0.2] | 'under' [0.2]
Adv -> 'quickly' [0.4] | 'today' [0.3] | 'often' [0.3]
Conj -> 'and' [0.6] | 'but' [0.4]
Aux -> 'does' [0.5] | 'did' [0.5]
RelPro -> 'that' [0.6] | 'who' [0.4]
Comp -> 'that' [1.0]
"""
