"""Probabilistic context-free grammars: chart algorithms against brute-force enumeration
and against NLTK, inside-outside EM, sampling, the text format and its validation."""
import math

import pytest
import torch

import probgen as pg
from probgen.models import PCFG, Tree

# NLTK's demo grammars, copied verbatim from nltk/grammar.py (toy_pcfg1, toy_pcfg2)
TOY_PCFG1 = """
    S -> NP VP [1.0]
    NP -> Det N [0.5] | NP PP [0.25] | 'John' [0.1] | 'I' [0.15]
    Det -> 'the' [0.8] | 'my' [0.2]
    N -> 'man' [0.5] | 'telescope' [0.5]
    VP -> VP PP [0.1] | V NP [0.7] | V [0.2]
    V -> 'ate' [0.35] | 'saw' [0.65]
    PP -> P NP [1.0]
    P -> 'with' [0.61] | 'under' [0.39]
    """
TOY_PCFG2 = """
    S    -> NP VP         [1.0]
    VP   -> V NP          [.59]
    VP   -> V             [.40]
    VP   -> VP PP         [.01]
    NP   -> Det N         [.41]
    NP   -> Name          [.28]
    NP   -> NP PP         [.31]
    PP   -> P NP          [1.0]
    V    -> 'saw'         [.21]
    V    -> 'ate'         [.51]
    V    -> 'ran'         [.28]
    N    -> 'boy'         [.11]
    N    -> 'cookie'      [.12]
    N    -> 'table'       [.13]
    N    -> 'telescope'   [.14]
    N    -> 'hill'        [.5]
    Name -> 'Jack'        [.52]
    Name -> 'Bob'         [.48]
    P    -> 'with'        [.61]
    P    -> 'under'       [.39]
    Det  -> 'the'         [.41]
    Det  -> 'a'           [.31]
    Det  -> 'my'          [.28]
    """

# Everything the normal form must handle: a ternary rule with a terminal inside it
# (S -> S 'and' S), n-ary rules, unary rules and a unary chain S -> VP -> V, and an
# ambiguous word ('fish' is N, Adj and V).
RICH = """
S -> NP VP [0.7] | S 'and' S [0.1] | VP [0.2]
NP -> Det N [0.5] | N [0.2] | NP PP [0.2] | Det Adj N [0.1]
VP -> V NP [0.5] | V [0.2] | VP PP [0.2] | V NP PP [0.1]
PP -> P NP [1.0]
N -> 'fish' [0.4] | 'dogs' [0.4] | Adj N [0.2]
Det -> 'the' [1.0]
Adj -> 'old' [0.6] | 'fish' [0.4]
V -> 'fish' [0.5] | 'saw' [0.5]
P -> 'with' [1.0]
"""


# ---- brute force -----------------------------------------------------------------------

def enumerate_trees(g, words):
    """Every tree of ``g`` (original grammar, no unary cycles) over ``words``, with its log
    probability: recursion over (symbol, span) and over every way to cut the span into
    the rule's right-hand side."""
    memo = {}
    logp = g.probs.log().tolist()

    def cuts(i, j, k):
        if k == 1:
            yield [(i, j)]
            return
        for m in range(i + 1, j - k + 2):
            for rest in cuts(m, j, k - 1):
                yield [(i, m)] + rest

    def trees(sym, i, j):
        key = (sym, i, j)
        if key in memo:
            return memo[key]
        memo[key] = []  # no unary cycles: a re-entrant call would be one
        out = []
        for r, rule in enumerate(g.rules):
            if rule.lhs != sym or len(rule.rhs) > j - i:
                continue
            for parts in cuts(i, j, len(rule.rhs)):
                options = [[]]
                for (s, is_word), (a, b) in zip(rule.rhs, parts):
                    if is_word:
                        subs = [(0.0, s)] if b - a == 1 and words[a] == s else []
                    else:
                        subs = trees(s, a, b)
                    options = [o + [t] for o in options for t in subs]
                for o in options:
                    out.append((logp[r] + sum(lp for lp, _ in o), Tree(sym, [t for _, t in o])))
        memo[key] = out
        return out

    return trees(g.start, 0, len(words))


def node_spans(tree):
    res = []

    def walk(t, i):
        j = i
        for c in t.children:
            j = walk(c, j) if isinstance(c, Tree) else j + 1
        res.append((t.label, i, j))
        return j

    walk(tree, 0)
    return res


RICH_SENTENCES = ["the dogs fish", "fish fish fish", "the old fish saw the dogs with the fish",
                  "dogs saw fish and fish fish", "saw the dogs", "fish"]


def test_inside_viterbi_posteriors_equal_brute_force_enumeration():
    g = PCFG.from_string(RICH)
    sents = [s.split() for s in RICH_SENTENCES]
    inside = g.log_prob(None, sents)
    best = pg.infer(g, sents, query="map")
    post = pg.infer(g, sents, query="marginals")
    for b, words in enumerate(sents):
        trees = enumerate_trees(g, words)
        assert trees, words
        lps = torch.tensor([lp for lp, _ in trees], dtype=torch.float64)
        z = torch.logsumexp(lps, 0)
        # both sides are sums of a few dozen float64 terms: agreement to 1e-12 relative
        assert inside[b].item() == pytest.approx(z.item(), rel=1e-12)
        top = max(lp for lp, _ in trees)
        assert best[b].log_prob == pytest.approx(top, rel=1e-12)
        assert any(t == best[b] for lp, t in trees if abs(lp - top) < 1e-12)
        assert g.tree_log_prob(best[b]).item() == pytest.approx(top, rel=1e-12)
        # rule posteriors (the outside pass by autograd) = weighted rule counts over trees
        w = (lps - z).exp()
        counts = torch.zeros(len(g.rules), dtype=torch.float64)
        spans = torch.zeros(len(words), len(words) + 1, len(g.nonterminals), dtype=torch.float64)
        for (lp, t), wt in zip(trees, w):
            for r in g._tree_rules(t):
                counts[r] += wt
            for label, i, j in node_spans(t):
                spans[i, j, g.nt_index[label]] += wt
        torch.testing.assert_close(post["rules"][b], counts, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(post["spans"][b], spans, rtol=1e-10, atol=1e-12)
        assert post["log_prob"][b].item() == pytest.approx(z.item(), rel=1e-12)


def test_impossible_sentence_has_log_prob_minus_inf_and_no_tree():
    g = PCFG.from_string(RICH)
    lp = g.log_prob(None, [["the"], ["the", "dogs", "fish"]])
    assert lp[0] == -math.inf and math.isfinite(lp[1])
    assert pg.infer(g, [["the"]], query="map") == [None]
    with pytest.raises(ValueError, match="probability zero"):
        pg.fit(g, [["the"]], engine="em", steps=2, progress=False)


def test_grammar_without_binary_rules():
    # only lexical and unary rules: every sentence longer than one word is impossible, and
    # the chart steps above width one have no rules to combine
    g = PCFG.from_string("S -> 'a' [0.5] | T [0.5]\nT -> 'b' [1.0]")
    sents = [["a"], ["b"], ["a", "b"]]
    lp = g.log_prob(None, sents)
    assert lp[:2].tolist() == pytest.approx([math.log(0.5)] * 2, rel=1e-15) and lp[2] == -math.inf
    best = pg.infer(g, sents, query="map")
    assert [str(t) for t in best[:2]] == ["(S a)", "(S (T b))"] and best[2] is None
    spans = pg.infer(g, sents[1:2], query="marginals")["spans"][0]
    assert spans[0, 1].tolist() == [1.0, 1.0]  # S and T both span 'b'


# ---- NLTK parity -------------------------------------------------------------------------

@pytest.mark.parametrize("text", [TOY_PCFG1, TOY_PCFG2], ids=["toy_pcfg1", "toy_pcfg2"])
def test_viterbi_and_inside_equal_nltk(text):
    nltk = pytest.importorskip("nltk")
    from nltk.parse import InsideChartParser, ViterbiParser
    g = PCFG.from_string(text)
    ref = nltk.PCFG.fromstring(text)
    # 200 sampled sentences; at most 10 words so that NLTK's exhaustive InsideChartParser
    # (it enumerates every parse) keeps the test to a few seconds
    sents = [t.leaves() for t in g.sample(None, 200, seed=0, max_length=10)]
    ours_inside = g.log_prob(None, sents)
    ours_best = pg.infer(g, sents, query="map")
    vit, ins = ViterbiParser(ref), InsideChartParser(ref)
    for words, lp, tree in zip(sents, ours_inside.tolist(), ours_best):
        parses = list(ins.parse(words))
        total = math.log(math.fsum(p.prob() for p in parses))
        assert lp == pytest.approx(total, rel=1e-9)
        best = next(vit.parse(words))
        assert tree.log_prob == pytest.approx(math.log(best.prob()), rel=1e-9)
        # NP -> NP PP and VP -> VP PP attachments can tie exactly (the same multiset of
        # rules); then any of the tied best parses is a right answer
        tied = {p.pformat(margin=10**9) for p in parses if math.isclose(p.prob(), best.prob(), rel_tol=1e-12)}
        if len(tied) == 1:
            assert str(tree) == best.pformat(margin=10**9)
        else:
            assert str(tree) in tied


# ---- EM ----------------------------------------------------------------------------------

RECOVERY = """
S -> NP VP [1.0]
NP -> Det N [0.6] | 'I' [0.25] | NP PP [0.15]
VP -> V NP [0.6] | V [0.25] | VP PP [0.15]
PP -> P NP [1.0]
Det -> 'the' [0.7] | 'a' [0.3]
N -> 'man' [0.6] | 'park' [0.4]
V -> 'saw' [0.5] | 'walked' [0.5]
P -> 'in' [0.55] | 'with' [0.45]
"""


def test_inside_outside_never_decreases_likelihood():
    g = PCFG.from_string(TOY_PCFG1)
    sents = [t.leaves() for t in g.sample(None, 100, seed=3, max_length=12)]
    fit = pg.fit(g, sents, engine="em", start="random", seed=1, steps=15, tol=0.0, progress=False)
    ll = [h["log_likelihood"] for h in fit.history]
    assert len(ll) == 15
    # EM is monotone; allow float64 rounding of a mean of 100 log-probabilities
    assert all(b >= a - 1e-9 * abs(a) for a, b in zip(ll, ll[1:]))
    assert ll[-1] > ll[0] + 1.0 / len(sents)   # the corpus gained more than a nat
    # the history is per sentence (the mean), the E-step's at the parameters before the last M-step
    assert fit.log_prob(sents).mean().item() >= ll[-1] - 1e-9 * abs(ll[-1])


def test_inside_outside_recovers_rule_probabilities():
    truth = PCFG.from_string(RECOVERY)
    trees = truth.sample(None, 2000, seed=7)
    sents = [t.leaves() for t in trees]
    fit = pg.fit(truth, sents, engine="em", start="uniform", steps=100, tol=1e-9, progress=False)
    est = fit.params["probs"]
    # sampling error: with n_A expansions of a left-hand side A in the sample, a rule
    # probability's complete-data standard error is sqrt(p(1-p)/n_A). Parsing hides
    # which attachment (NP -> NP PP or VP -> VP PP) was used, which inflates the
    # unsupervised estimator's variance over that; 5 standard errors still leaves a
    # false-alarm rate below 1e-5 per rule if the inflation is under 25%.
    counts = truth.treebank_counts(trees)
    n_lhs = torch.zeros(len(truth.nonterminals), dtype=torch.float64).index_add(0, truth.rule_lhs, counts)
    se = (truth.probs * (1 - truth.probs) / n_lhs[truth.rule_lhs]).sqrt()
    assert ((est - truth.probs).abs() <= 5 * se + 1e-12).all(), (est, truth.probs, se)
    # and the attachment rules genuinely moved from the uniform start (1/3)
    assert abs(est[3].item() - 0.15) < 0.05 and abs(est[6].item() - 0.15) < 0.05


def test_treebank_relative_frequencies():
    g = PCFG.from_string(RECOVERY)
    trees = g.sample(None, 40, seed=2)
    fit = pg.fit(g, [str(t) for t in trees], engine="em", progress=False)
    counts = torch.zeros(len(g.rules), dtype=torch.float64)
    for t in trees:
        for lhs, rhs in t.productions():
            counts[g.rules.index(next(r for r in g.rules if r.lhs == lhs and r.rhs == rhs))] += 1
    totals = {a: sum(c for r, c in zip(g.rules, counts) if r.lhs == a) for a in g.nonterminals}
    expected = torch.tensor([c / totals[r.lhs] for r, c in zip(g.rules, counts.tolist())], dtype=torch.float64)
    torch.testing.assert_close(fit.params["probs"], expected)
    # log_prob of trees is the joint probability of each tree
    torch.testing.assert_close(fit.log_prob(trees), torch.stack([g.tree_log_prob(t, expected) for t in trees]))


# ---- sampling ----------------------------------------------------------------------------

def test_sampled_sentence_frequencies_match_inside_probabilities():
    g, _ = PCFG.example()
    trees = g.sample(None, 3000, seed=5)
    sents = [" ".join(t.leaves()) for t in trees]
    for s in ["she sleeps", "she sees", "the cat sleeps"]:
        p = g.log_prob(None, [s]).exp().item()
        freq = sents.count(s) / len(sents)
        # binomial sampling error, 4 standard deviations
        assert abs(freq - p) < 4 * math.sqrt(p * (1 - p) / len(sents))
    for t in trees[:20]:
        assert t.log_prob == pytest.approx(g.tree_log_prob(t).item())


def test_infinite_expected_size_and_depth_limit():
    g = PCFG.from_string("S -> S S [0.6] | 'a' [0.4]")
    with pytest.raises(ValueError, match="spectral radius"):
        g.sample(None, 1, seed=0)
    chain = PCFG.from_string("S -> 'a' S [0.95] | 'a' [0.05]")
    with pytest.raises(ValueError, match="max_depth"):
        chain.sample(None, 50, seed=0, max_depth=3)


def test_fit_sample_through_engines_and_pyro_sites():
    import pyro
    g, data = PCFG.example()
    fit = pg.fit(g, data)
    assert fit.engine == "exact" and torch.equal(fit.params["probs"], g.probs)
    torch.testing.assert_close(fit.log_prob(data), g.log_prob(None, data))
    trees = fit.sample(4, seed=0)
    assert len(trees) == 4 and all(isinstance(t, Tree) for t in trees)
    tr = pyro.poutine.trace(g.program).get_trace()
    sites = [n for n, s in tr.nodes.items() if s["type"] == "sample"]
    assert sites[0] == "rule@0" and all(n.startswith("rule@") for n in sites)


# ---- text format, validation, data -------------------------------------------------------

@pytest.mark.parametrize("text", [TOY_PCFG1, TOY_PCFG2, RICH])
def test_round_trip(text):
    g = PCFG.from_string(text)
    assert PCFG.from_string(str(g)) == g
    g2 = PCFG.from_string("S -> A B [3] | 'x' [1]\nA -> 'a' [2] | \"it's\" [2]\nB -> 'b'", normalize=True)
    assert g2.probs.tolist() == [0.75, 0.25, 0.5, 0.5, 1.0]
    assert PCFG.from_string(str(g2)) == g2


@pytest.mark.parametrize("text,match", [
    ("S -> A [0.5]\nA -> 'a' [1.0]", r"line 1: the probabilities of the rules of 'S' sum to 0.5"),
    ("S -> A B [1.0]\nA -> 'a' [1.0]", r"line 1: undefined symbol 'B'"),
    ("S -> 'a' [1.0]\nA -> 'b' [1.0]", r"unreachable nonterminals .*'A' \(line 2\)"),
    ("S -> 'a' [0.5] | A [0.5]\nA -> A 'b' [1.0]", r"unproductive nonterminals .*'A' \(line 2\)"),
    ("S -> 'a' [0.5]\nS -> 'a' [0.5]", r"line 2: duplicate rule S -> 'a' \(first on line 1\)"),
    ("S -> NP VP [1.0\n", r"line 1: cannot read"),
    ("S NP VP [1.0]", r"line 1: expected 'LHS -> right-hand side"),
    ("S -> 'a' [1.0]\nT -> [1.0]", r"line 2: empty right-hand side"),
    ("S -> 'a'", r"line 1: rule S -> \.\.\. has no probability"),
    ("S -> 'a' [1.5]", r"line 1: probability 1.5"),
    ("", r"no rules"),
])
def test_validation_errors(text, match):
    with pytest.raises(ValueError, match=match):
        PCFG.from_string(text)


def test_unknown_words():
    g = PCFG.from_string(TOY_PCFG1)
    with pytest.raises(ValueError, match=r"words the grammar does not know: \['dog'\]"):
        g.log_prob(None, g.check_data(["the dog ate"]))
    with pytest.raises(ValueError, match="not one"):
        PCFG.from_string(TOY_PCFG1, unknown="<unk>")
    unk = PCFG.from_string(TOY_PCFG1.replace("'telescope' [0.5]", "'telescope' [0.4] | '<unk>' [0.1]"),
                           unknown="<unk>")
    data = unk.check_data(["the dog ate", "I saw my cat"])
    assert data[0] == ("the", "<unk>", "ate")
    lp = pg.fit(unk, data).log_prob(["the dog ate"])
    assert lp.item() == pytest.approx(math.log(0.5 * 0.8 * 0.1 * 0.2 * 0.35))


def test_bad_data_and_options():
    g, data = PCFG.example()
    for bad, match in [(5, "list of sentences"), ([], "empty"), ([["the", 3]], "sentence 0"),
                       ([""], "sentence 0 is empty")]:
        with pytest.raises(ValueError, match=match):
            pg.fit(g, bad)
    with pytest.raises(ValueError, match="unknown em options"):
        pg.fit(g, data, engine="em", lr=0.1)
    with pytest.raises(ValueError, match="start must be"):
        pg.fit(g, data, engine="em", start="zeros")
    with pytest.raises(ValueError, match="shape"):
        pg.fit(g, data, init={"probs": torch.ones(3)})
    with pytest.raises(ValueError, match="'map' and 'marginals'|not 'encode'"):
        pg.infer(g, data, query="encode")
    with pytest.raises(ValueError, match="bracket|balanced"):
        Tree.fromstring("(S (NP John)")


def test_trees_text_graph_and_drawing(tmp_path):
    s = "(S (NP (Det the) (N man)) (VP (V saw) (NP I)))"
    t = Tree.fromstring(s)
    assert str(t) == s and t.leaves() == ["the", "man", "saw", "I"]
    nltk = pytest.importorskip("nltk")
    assert nltk.Tree.fromstring(s).pformat(margin=10**9) == str(t)
    g = PCFG.from_string(TOY_PCFG1)
    graph = pg.graph(g)
    kinds = {d["kind"] for _, d in graph.nodes(data=True)}
    assert kinds == {"nonterminal", "factor", "terminal"}
    assert graph.out_degree("S") == 1 and list(graph.successors("rule0")) == ["NP", "VP"]
    assert graph.nodes["rule2"]["prob"] == 0.25
    import shutil
    if shutil.which("dot"):
        t.render(str(tmp_path / "tree.svg"))
        assert (tmp_path / "tree.svg").read_text().lstrip().startswith(("<?xml", "<svg"))
        from probgen.graph import render
        render(g, str(tmp_path / "grammar.png"))
        assert (tmp_path / "grammar.png").stat().st_size > 0


def test_cli_data_and_default_grammar():
    data = PCFG.load_named_data("sentences")
    assert len(data) == 200 and PCFG.load_named_data("nope") is None
    g = PCFG.for_data(data)
    assert len(g.nonterminals) >= 15 and len(g.words) >= 50
    assert torch.isfinite(g.log_prob(None, g.check_data(data[:20]))).all()


def test_comments_continuation_lines_and_start():
    g = PCFG.from_string("""# a grammar
    S -> A 'x' [0.5]   # a comment after a quoted word
       | '#' [0.5]
    A -> 'a' [1.0]
    """)
    assert [str(r) for r in g.rules] == ["S -> A 'x'", "S -> '#'", "A -> 'a'"]
    assert g.words == ["x", "#", "a"]
    assert g.log_prob(None, ["a x", "#"]).exp().tolist() == pytest.approx([0.5, 0.5])
    assert PCFG.from_string("A -> 'a' [1.0]\nS -> A A [1.0]", start="S").start == "S"
