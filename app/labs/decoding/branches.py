"""The branch tree: the road not taken at any token.

Owns: ``BranchNode`` and ``BranchTree`` (plain data, ``to_dict``/``from_dict``, and as a typed
value ``data``/``from_data``: ``records.BranchTreeData``; cumulative probabilities along a path,
a path as a Workbench generation record), ``iter_branch`` / ``branch`` (continue a run from any
node with another token, or the sampler's own, the KV cache reused up to that node:
``goto_prefix``; a ``NodeRecord`` per new node) and ``children`` (n sampled continuations of one
node, optionally as parallel sequences of one batched context). Every branch is kept in the tree
with the probability of each edge. On a server a branch is a new request continuing the path's
text. The lab's two tree jobs, as generators of typed records returning a ``TreeSummary``:
``iter_tree`` (a new tree holding a recorded run; one ``TreeRecord``) and ``iter_grow`` (a
branch or N children on a copy of a ``BranchTreeData``; a ``NodeRecord`` per new node).

Threads: runs on the thread that calls it, which must own the backend (the lab's worker thread
in the window); the window keeps the tree itself as a ``BranchTreeData`` (immutable) on the GUI
thread and the worker grows a ``BranchTree`` made from it. ``cancel`` (a ``threading.Event``)
is checked before every token, or handed to the server's stream; what was produced before is
kept. No Qt.
"""

from __future__ import annotations

import codecs
import dataclasses
import math
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generator, Sequence

import numpy as np

from app.core.jsonsafe import json_safe
from app.core.sampling import SamplerState, apply_chain, history_needed, resolve_inputs
from app.core.streams import drain
from backends.base import Finished, SamplerSettings, Step, TokenAlt

from .kv import _has_sequences, _stop_at, _tokenize, goto_prefix
from .lockstep import _alts
from .records import BranchTreeData, NodeRecord, TopEntry, TreeNode, TreeRecord, TreeSummary, defined, or_nan
from .remote import is_remote
from .strategies import NEUTRAL

if TYPE_CHECKING:
    from backends.kinds import Backend, LocalEngine
    from backends.openai_compat import OpenAICompatBackend

__all__ = ["BranchNode", "BranchTree", "iter_branch", "branch", "children", "iter_tree", "iter_grow"]


@dataclass
class BranchNode:
    """One node of a ``BranchTree``: the token on the edge from its parent (node 0, the root,
    stands for the prompt: no token, probability 1). ``p_raw`` is the model's probability of
    the token at that point (raw softmax), ``p_final`` its probability under the sampler chain
    of the run that added the node (``run``: index into ``BranchTree.runs``); ``forced``: the
    user chose it; ``top``: the alternatives at that position (``{"id", "token", "p_raw",
    "p_final"}``, top-N by raw probability), what a right-click offers; ``data``: the token's
    bytes (``path_text`` decodes them); ``estimated``: values from a server's top-N;
    ``finish_reason``: set on the node where a run ended."""

    id: int
    parent: int | None
    token_id: int | None
    piece: str
    data: bytes
    p_raw: float
    p_final: float
    entropy_raw: float = math.nan
    rank: int = 0
    forced: bool = False
    run: int = -1
    estimated: bool = False
    top: list[dict] = field(default_factory=list)
    children: list[int] = field(default_factory=list)
    finish_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["data"] = self.data.hex()
        return json_safe(d)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BranchNode":
        kw = {f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d}
        kw["data"] = bytes.fromhex(d.get("data", ""))
        for name in ("p_raw", "p_final", "entropy_raw"):
            if kw.get(name) is None:
                kw[name] = math.nan
        kw["top"] = list(kw.get("top", []))
        kw["children"] = list(kw.get("children", []))
        return cls(**kw)

    def record(self) -> NodeRecord:
        """What a branch job yields for this node (``NodeRecord``)."""
        return NodeRecord(self.id, self.parent, self.piece, or_nan(self.p_raw))

    def value(self) -> TreeNode:
        """The node as a typed, immutable value (``TreeNode``; its dict form is ``to_dict``'s)."""
        top = tuple(TopEntry(None if a.get("id") is None else int(a["id"]), str(a.get("token", "")),
                             or_nan(a.get("p_raw")), defined(a.get("p_final"))) for a in self.top)
        return TreeNode(self.id, self.parent, self.token_id, self.piece, self.data.hex(), or_nan(self.p_raw),
                        or_nan(self.p_final), or_nan(self.entropy_raw), int(self.rank), bool(self.forced),
                        int(self.run), bool(self.estimated), top, tuple(int(c) for c in self.children),
                        self.finish_reason)

    @classmethod
    def from_value(cls, n: TreeNode) -> "BranchNode":
        return cls(n.id, n.parent, n.token_id, n.piece, bytes.fromhex(n.data), n.p_raw, n.p_final, n.entropy_raw,
                   n.rank, n.forced, n.run, n.estimated, [dataclasses.asdict(a) for a in n.top], list(n.children),
                   n.finish_reason)


class BranchTree:
    """Every branch of one prompt, as plain data (``to_dict``/``from_dict`` round-trip through
    JSON). ``prompt_tokens`` is None for a tree grown on a server (its edges then have no token
    ids). ``runs``: one dict per ``branch`` call (``kind``, ``from``, ``token_id``/``token_text``,
    ``settings``, ``seed``, ``leaf``, ``finish_reason``, ``new_nodes``). A path that comes back to
    an existing (parent, token) reuses that node: its probabilities stay those of the run that
    made it."""

    def __init__(self, prompt: str, prompt_tokens: Sequence[int] | None = None, model: str = "") -> None:
        self.prompt = prompt
        self.prompt_tokens = [int(t) for t in prompt_tokens] if prompt_tokens is not None else None
        self.model = model
        self.nodes: list[BranchNode] = [BranchNode(0, None, None, "", b"", 1.0, 1.0)]
        self.runs: list[dict[str, Any]] = []

    @classmethod
    def for_backend(cls, backend: Backend, prompt: str, *, parse_special: bool = False) -> "BranchTree":
        """An empty tree for ``prompt`` on ``backend`` (tokenized for a local model)."""
        name = getattr(getattr(backend, "info", None), "name", "") or getattr(backend, "model", "") or ""
        if is_remote(backend):
            return cls(prompt, None, name)
        return cls(prompt, _tokenize(backend, prompt, parse_special), name)

    @classmethod
    def from_steps(cls, prompt: str, prompt_tokens: Sequence[int] | None, steps: Sequence[Step | dict],
                   settings: SamplerSettings | None = None, model: str = "") -> "BranchTree":
        """A tree holding one recorded run (e.g. the window's last generation) as its first path."""
        tree = cls(prompt, prompt_tokens, model)
        tree.runs.append({"kind": "recorded", "from": 0, "settings": settings.to_dict() if settings else None,
                          "seed": settings.seed if settings else None, "leaf": 0, "finish_reason": None,
                          "new_nodes": 0})
        node = 0
        for st in steps:
            st = st if isinstance(st, Step) else Step.from_dict(st)
            node = tree.add(node, st.token_id, st.piece, st.token.encode("utf-8"), st, run=0)
        tree.runs[0]["leaf"] = node
        tree.runs[0]["new_nodes"] = len(tree.nodes) - 1
        return tree

    # ---------------------------------------------------------------- building
    def add(self, parent: int, token_id: int | None, piece: str, data: bytes | None, step: Step | None = None, *,
            p_raw: float = math.nan, p_final: float = math.nan, run: int = -1, forced: bool = False,
            top: list[dict] | None = None, entropy_raw: float = math.nan, rank: int = 0,
            estimated: bool = False) -> int:
        """Add the edge ``parent`` -> token (or find it: same token id, or same piece for id-less
        edges) and return the child's id. ``step`` fills the probabilities, ``top`` and flags."""
        if step is not None:
            p_raw, p_final, entropy_raw, rank = step.p_raw, step.p_final, step.entropy_raw, step.rank
            estimated = step.estimated
            forced = forced or step.forced
            top = _alts(step.top, len(step.top))
        if data is None:
            data = piece.encode("utf-8")
        for cid in self.nodes[parent].children:
            ch = self.nodes[cid]
            if (token_id is not None and ch.token_id == token_id) or (
                    token_id is None and ch.token_id is None and ch.piece == piece):
                return cid
        nid = len(self.nodes)
        self.nodes.append(BranchNode(nid, parent, None if token_id is None else int(token_id), piece, data,
                                     float(p_raw), float(p_final), float(entropy_raw), int(rank), bool(forced),
                                     int(run), bool(estimated), list(top or []), []))
        self.nodes[parent].children.append(nid)
        return nid

    # ---------------------------------------------------------------- reading
    def node(self, node_id: int) -> BranchNode:
        return self.nodes[node_id]

    @property
    def root(self) -> BranchNode:
        return self.nodes[0]

    def path(self, node_id: int) -> list[int]:
        """Node ids from the first token to ``node_id`` (the root excluded)."""
        out = []
        n = self.nodes[node_id]
        while n.parent is not None:
            out.append(n.id)
            n = self.nodes[n.parent]
        return out[::-1]

    def path_tokens(self, node_id: int) -> list[int | None]:
        return [self.nodes[i].token_id for i in self.path(node_id)]

    def path_generation(self, node_id: int, settings: SamplerSettings | None = None) -> dict[str, Any]:
        """The path from the root to ``node_id`` as a generation record (``generation_record``)
        that opens in the Workbench: each edge's probabilities, entropy, rank and alternatives."""
        from app.core.export import generation_record

        dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
        steps = []
        n_prompt = len(self.prompt_tokens or ())
        for i, nid in enumerate(self.path(node_id)):
            n = self.nodes[nid]
            top = tuple(TokenAlt(a.get("id"), str(a.get("token", "")), float(a.get("p_raw") or 0.0),
                                 float(a.get("p_final") or 0.0)) for a in n.top)
            p_raw = n.p_raw if n.p_raw is not None and math.isfinite(n.p_raw) else 0.0
            p_fin = n.p_final if n.p_final is not None and math.isfinite(n.p_final) else p_raw
            ent = n.entropy_raw if math.isfinite(n.entropy_raw) else 0.0
            steps.append(Step(index=i, position=n_prompt + i, token_id=n.token_id, token=dec.decode(n.data),
                              piece=n.piece, p_raw=p_raw, p_final=p_fin, rank=n.rank, entropy_raw=ent,
                              entropy_final=ent, kl_final_raw=0.0, top=top, forced=n.forced,
                              estimated=n.estimated))
        text = self.path_text(node_id)
        fin = Finished(self.nodes[node_id].finish_reason or "length", text, len(steps), 0.0)
        return generation_record(self.prompt, settings or NEUTRAL, steps, fin, self.model)

    def path_text(self, node_id: int) -> str:
        return b"".join(self.nodes[i].data for i in self.path(node_id)).decode("utf-8", errors="replace")

    def path_probability(self, node_id: int, *, final: bool = False) -> float:
        """The product of the edge probabilities from the root (p_raw, or p_final)."""
        return math.prod(self.nodes[i].p_final if final else self.nodes[i].p_raw for i in self.path(node_id))

    def path_logprob(self, node_id: int) -> float:
        ps = [self.nodes[i].p_raw for i in self.path(node_id)]
        return math.fsum(math.log(p) if p > 0 else -math.inf for p in ps)

    def depth(self, node_id: int) -> int:
        return len(self.path(node_id))

    def leaves(self) -> list[int]:
        return [n.id for n in self.nodes if not n.children and n.id != 0]

    def to_dict(self) -> dict[str, Any]:
        return json_safe({"prompt": self.prompt, "prompt_tokens": self.prompt_tokens, "model": self.model,
                           "nodes": [n.to_dict() for n in self.nodes], "runs": self.runs})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BranchTree":
        tree = cls(d["prompt"], d.get("prompt_tokens"), d.get("model", ""))
        tree.nodes = [BranchNode.from_dict(n) for n in d["nodes"]]
        tree.runs = [dict(r) for r in d.get("runs", [])]
        return tree

    def data(self) -> BranchTreeData:
        """The tree as a typed, immutable value (its dict form is ``to_dict``'s; runs JSON-ready)."""
        return BranchTreeData(self.prompt, None if self.prompt_tokens is None else tuple(self.prompt_tokens),
                              self.model, tuple(n.value() for n in self.nodes),
                              tuple(json_safe(r) for r in self.runs))

    @classmethod
    def from_data(cls, d: BranchTreeData) -> "BranchTree":
        """A tree to grow, made from a ``BranchTreeData`` (which stays as it was)."""
        tree = cls(d.prompt, d.prompt_tokens, d.model)
        tree.nodes = [BranchNode.from_value(n) for n in d.nodes]
        tree.runs = [dict(r) for r in d.runs]
        return tree


def _branch_settings(settings: SamplerSettings | None, max_tokens: int, seed: int) -> SamplerSettings:
    st = (settings or SamplerSettings()).replace(max_tokens=int(max_tokens), seed=int(seed))
    st.validate()
    return st


def iter_branch(backend: Backend, tree: BranchTree, node_id: int, token_id: int | None = None,
                settings: SamplerSettings | None = None, max_tokens: int = 16, seed: int = 42,
                cancel: threading.Event | None = None, *, token_text: str | None = None, kind: str = "branch"
                ) -> Generator[NodeRecord, None, int]:
    """Continue from ``node_id``: first with ``token_id`` when given (the road not taken;
    ``token_text`` on a server), then with tokens drawn by ``settings``' chain (a numpy
    generator seeded with ``seed``), for ``max_tokens`` tokens in all, ending early at an end
    token, a stop string of ``settings``, a full context or ``cancel``. Yields each node as it
    is added (its ``NodeRecord``; a node the path comes back to is yielded again); returns the
    leaf's id. Every edge records p_raw and p_final under ``settings``.

    Local: the KV cache is reused up to the node (``goto_prefix``: nothing is evaluated when the
    cache is already there, the node's tokens after the last shared one otherwise); the logits
    of every step are exactly those of a plain session that had generated the same path.
    Remote: a new request continuing the text of the path (the server tokenizes it again, so its
    first tokens may be cut differently than the tree's); a forced ``token_text`` is appended to
    that text, its edge probability taken from the alternatives recorded at that position when
    they list it (NaN otherwise)."""
    st = _branch_settings(settings, max_tokens, seed)
    if node_id < 0 or node_id >= len(tree.nodes):
        raise ValueError(f"no node {node_id} in the tree")
    run = len(tree.runs)
    info: dict[str, Any] = {"kind": kind, "from": node_id, "token_id": token_id, "token_text": token_text,
                            "settings": st.to_dict(), "seed": int(seed), "leaf": node_id, "finish_reason": None,
                            "new_nodes": 0}
    tree.runs.append(info)
    n0 = len(tree.nodes)
    if is_remote(backend):
        leaf, reason = yield from _branch_remote(backend, tree, node_id, token_text, st, cancel, run)
    else:
        if token_text is not None and token_id is None:
            raise ValueError("a local branch takes a token id (token_text is for servers)")
        leaf, reason = yield from _branch_local(backend, tree, node_id, token_id, st, cancel, run)
    info["leaf"] = leaf
    info["finish_reason"] = reason
    info["new_nodes"] = len(tree.nodes) - n0
    if leaf != node_id:
        tree.nodes[leaf].finish_reason = reason
    return leaf


def _branch_local(backend: LocalEngine, tree: BranchTree, node_id: int, token_id: int | None, st: SamplerSettings,
                  cancel: threading.Event | None, run: int) -> Generator[NodeRecord, None, tuple[int, str]]:
    if tree.prompt_tokens is None:
        raise ValueError("this tree was grown on a server (no prompt tokens): continue it there")
    path_ids = tree.path_tokens(node_id)
    path = [t for t in path_ids if t is not None]
    if len(path) != len(path_ids):
        raise ValueError("the path to this node has no token ids (it came from a server)")
    if token_id is not None and not 0 <= int(token_id) < backend.n_vocab:
        raise ValueError(f"token id {token_id} is outside the vocabulary (0..{backend.n_vocab - 1})")
    history = tree.prompt_tokens + [int(t) for t in path]
    goto_prefix(backend, tree.prompt_tokens, path)
    rng = np.random.Generator(np.random.PCG64(st.seed))
    xtc_rng = np.random.Generator(np.random.PCG64([st.seed, 0x585443]))  # as a session's (XTC's own draw)
    bias, breakers = resolve_inputs(st, backend)
    state = SamplerState.initial(st)  # Mirostat and adaptive-p start afresh at the branch point
    need = history_needed(st)
    node, data, reason = node_id, b"", "length"
    for i in range(st.max_tokens):
        if cancel is not None and cancel.is_set():
            reason = "cancelled"
            break
        if len(history) >= backend.n_ctx:
            reason = "context"
            break
        window = history[-need:] if need > 0 else ()
        res = apply_chain(backend.logits(), st, window, top_n=st.top_n, logit_bias=bias, rng=xtc_rng, state=state,
                          dry_breakers=breakers)
        forced_id = token_id if i == 0 else None
        forced = forced_id is not None
        tok = int(forced_id) if forced_id is not None else int(res.draw(rng))
        state = res.next_state(tok, drawn=not forced) or state
        step = res.to_step(tok, index=len(history) - len(tree.prompt_tokens), position=len(history), text="",
                           piece=backend.piece(tok), piece_of=backend.piece, forced=forced)
        eog = backend.is_eog(tok)
        raw = b"" if eog else backend.token_bytes(tok)
        node = tree.add(node, tok, step.piece, raw, step, run=run, forced=forced)
        history.append(tok)
        data += raw
        if eog:
            reason = "eos"
        elif st.stop and _stop_at(data.decode("utf-8", errors="ignore"), st.stop) >= 0:
            reason = "stop"
        elif i + 1 < st.max_tokens:
            # fed before the node is yielded: run as one of parallel sequences, every job's token
            # is queued when the round's first logits are asked for, so a round is ONE decode
            backend.feed(tok)
        yield tree.nodes[node].record()
        if reason in ("eos", "stop"):
            break
    return node, reason


def _branch_remote(backend: OpenAICompatBackend, tree: BranchTree, node_id: int, token_text: str | None,
                   st: SamplerSettings, cancel: threading.Event | None,
                   run: int) -> Generator[NodeRecord, None, tuple[int, str]]:
    node = node_id
    text = tree.prompt + tree.path_text(node_id)
    budget = st.max_tokens
    if token_text:
        p = math.nan
        for cid in tree.nodes[node_id].children:  # the alternatives recorded at this position
            for a in tree.nodes[cid].top:
                if a.get("token") == token_text:
                    p = a.get("p_raw", math.nan)
                    break
            if not math.isnan(p):
                break
        node = tree.add(node, None, token_text, token_text.encode("utf-8"), p_raw=p, p_final=math.nan, run=run,
                        forced=True, estimated=True)
        text += token_text
        budget -= 1
        yield tree.nodes[node].record()
        if budget <= 0:
            return node, "length"
    reason = "length"
    for item in backend.stream(text, st.replace(max_tokens=budget), cancel=cancel):
        if isinstance(item, Finished):
            reason = item.reason
            break
        node = tree.add(node, None, item.piece, item.token.encode("utf-8"), item, run=run)
        yield tree.nodes[node].record()
    return node, reason


def branch(backend: Backend, tree: BranchTree, node_id: int, token_id: int | None = None,
           settings: SamplerSettings | None = None, max_tokens: int = 16, seed: int = 42,
           cancel: threading.Event | None = None, *, token_text: str | None = None) -> int:
    """``iter_branch`` drained: the id of the new path's last node."""
    return drain(iter_branch(backend, tree, node_id, token_id, settings, max_tokens, seed, cancel,
                             token_text=token_text))


def children(backend: Backend, tree: BranchTree, node_id: int, n: int, settings: SamplerSettings | None = None,
             max_tokens: int = 16, seed: int = 42, cancel: threading.Event | None = None, *,
             max_parallel: int = 1) -> list[int]:
    """Sample ``n`` continuations from one node (child i with seed ``seed + i``); their leaf ids
    (a continuation identical to an earlier one ends on the same leaf). Stops early at ``cancel``.

    ``max_parallel`` > 1 (local models): up to that many children at once as parallel sequences
    of one batched context on the backend's model (each from the node's path, with its own seed;
    llama.cpp's batch noise can move a draw now and then against one at a time); the backend's own
    cache is not touched then."""
    if int(n) < 1:
        raise ValueError("n must be at least 1")
    n = int(n)
    if int(max_parallel) > 1 and n > 1 and not is_remote(backend) and _has_sequences(backend):
        return _parallel_children(backend, tree, node_id, n, settings, max_tokens, seed, cancel,
                                  min(int(max_parallel), n))
    leaves = []
    for i in range(n):
        if cancel is not None and cancel.is_set():
            break
        leaves.append(drain(iter_branch(backend, tree, node_id, None, settings, max_tokens, int(seed) + i, cancel,
                                        kind="child")))
    return leaves


def _parallel_children(backend: LocalEngine, tree: BranchTree, node_id: int, n: int,
                       settings: SamplerSettings | None, max_tokens: int, seed: int, cancel: threading.Event | None,
                       width: int) -> list[int]:
    from app.core.parallel import JobResult, run_jobs

    depth = len(tree.prompt_tokens or ()) + len(tree.path_tokens(node_id)) + int(max_tokens) + 8
    ctx = backend.model.context(n_ctx=min(max(256, depth * width), max(backend.n_ctx, 32768)), n_seq=width,
                                n_threads=getattr(getattr(backend, "info", None), "n_threads", None))
    jobs = [(lambda seq, i=i: iter_branch(seq, tree, node_id, None, settings, max_tokens, int(seed) + i, cancel,
                                          kind="child")) for i in range(n)]
    leaves: list[int | None] = [None] * n
    try:
        for idx, item in run_jobs(jobs, context=ctx, max_parallel=width, cancel=cancel):
            if isinstance(item, JobResult):
                if item.error is not None:
                    raise item.error
                leaves[idx] = item.value
    finally:
        ctx.close()
    return [x for x in leaves if x is not None]


def iter_tree(prompt: str, prompt_tokens: Sequence[int] | None, steps: Sequence[Step | dict],
              settings: SamplerSettings | None = None, model: str = "") -> Generator[TreeRecord, None, TreeSummary]:
    """A new tree whose first path is one recorded run (``BranchTree.from_steps``; the window's
    Workbench run): yields one ``TreeRecord`` (its size), returns the ``TreeSummary`` (the tree,
    and its last leaf to open). No backend: ``prompt_tokens`` is the tokenized prompt (None on a
    server)."""
    tree = BranchTree.from_steps(prompt, prompt_tokens, steps, settings, model)
    yield TreeRecord(len(tree.nodes))
    leaves = tree.leaves()
    return TreeSummary(tree.data(), leaves[-1] if leaves else 0)


def iter_grow(backend: Backend, tree: BranchTreeData, node_id: int, token_id: int | None = None,
              settings: SamplerSettings | None = None, max_tokens: int = 16, seed: int = 42,
              cancel: threading.Event | None = None, *, token_text: str | None = None, n_children: int = 0,
              max_parallel: int = 1) -> Generator[NodeRecord, None, TreeSummary]:
    """Grow a copy of ``tree`` (which stays as it was) from ``node_id``: with ``n_children`` 0 one
    branch (``iter_branch`` with ``token_id`` / ``token_text``, seed ``seed``), else that many
    sampled children (seeds seed..seed+n-1), as parallel sequences when ``max_parallel`` > 1 and
    the backend has them (``children``; their nodes are yielded once all are in), else one after
    the other. Yields a ``NodeRecord`` per node reached; returns the ``TreeSummary``: the grown
    tree and the leaf to open (the last path's; ``node_id`` when nothing was added). ``cancel``
    ends it early, what was grown is kept."""
    grown = BranchTree.from_data(tree)
    n_children = int(n_children)
    if n_children > 1 and int(max_parallel) > 1 and not is_remote(backend) and _has_sequences(backend):
        n0 = len(grown.nodes)
        leaves = children(backend, grown, node_id, n_children, settings, max_tokens, seed, cancel,
                          max_parallel=max_parallel)
        for node in grown.nodes[n0:]:
            yield node.record()
        return TreeSummary(grown.data(), leaves[-1] if leaves else node_id)
    leaf = node_id
    for i in range(max(1, n_children)):
        if cancel is not None and cancel.is_set():
            break
        leaf = yield from iter_branch(backend, grown, node_id, None if n_children else token_id, settings,
                                      max_tokens, int(seed) + i, cancel, token_text=None if n_children else token_text,
                                      kind="child" if n_children else "branch")
    return TreeSummary(grown.data(), leaf)
