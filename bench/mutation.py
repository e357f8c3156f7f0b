"""Mutation check of the privacy-critical code: does some test notice when a path is bent?

Each mutant changes one thing in one target function (a comparison flipped, ``and``/``or``
swapped, a ``not`` removed, a constant moved by one or a boolean negated, a return value
replaced by ``None``, a call statement deleted). It is written into a temporary copy of the
``reenact`` package (the tree is never edited) and the selected tests run against that copy
in a forked child (the heavy third-party imports are done once in the parent, the copy is
compiled once, so a mutant costs about a second). A mutant is *killed* when the tests fail
(or run past the timeout: 5x the unmutated run, at least 20 s).

Per mutant only the tests that run its line are run (traced once on the unmutated copy); a
line no test runs (module constants, signature defaults: evaluated at import) gets all of them.

Targets (``--target``, repeatable): ``module:name`` where ``name`` is a function, a class
(all its methods) or ``*`` (every function and method of the module plus its module-level
numeric constants). Default: the face-shaped redactions (``reenact.blend.redact``), the
same-context baseline's windows (``reenact.pipeline.baseline``), all of the
``reenact.pipeline.privacy`` package (untracked cover, the checkers and the check rule, the
ladder ``PrivacyGuard`` with its blend-refusal and fail-closed paths) and ``reenact.faces.privacy_thresholds``, the deidentify policy
``reenact.pipeline.identity:SyntheticIdentities``, the small-face rule
``reenact.pipeline.stream:too_small`` and the detection cadence ``reenact.faces.cadence``
(every frame searched, full passes on cuts and after a loss, lost faces held).

Tests (``--tests``): a pytest selection; default: the ``privacy`` marker over the privacy test
files, the redaction's and baseline's and the cadence's, which must stay fast (< ~30 s in all).

Surviving mutants that cannot change behaviour are listed in :data:`EQUIVALENT` with the reason
and reported apart (not counted as killed, left out of the share).

Besides the mechanical mutants, :data:`SCENARIOS` are hand-written breaks of what the privacy
check's re-check rule (:mod:`reenact.pipeline.privacy.guard`: a steady face carries its track's
last measured check) could hide: a blur that weakens mid-track while the face holds still,
carried faces left unredacted or redacted on a weaker rung, the carried faces' pixel check
skipped. Each runs all the selected tests and counts like any mutant; one that survives means
the rule hides it.

Run: ``python bench/mutation.py [--target MOD:NAME ...] [--tests ARGS] [--timeout S] [--list]``.
Prints ``goal mutants_killed_privacy: X (target >= 0.9) PASS|FAIL`` where X is killed /
(mutants - equivalent), every equivalent mutant with its reason and every surviving one as
``file:line  function: source line  [mutation]``.
"""

from __future__ import annotations

import argparse
import ast
import compileall
import copy
import importlib.util
import os
import py_compile
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

DEFAULT_TARGETS = (
    "reenact.blend.redact:*",
    "reenact.pipeline.baseline:*",
    "reenact.pipeline.privacy.checkers:*",
    "reenact.pipeline.privacy.guard:*",
    "reenact.pipeline.identity:SyntheticIdentities",
    "reenact.faces.privacy_thresholds:*",
    "reenact.pipeline.stream:too_small",
    "reenact.faces.cadence:*",
)
DEFAULT_TESTS = ("-m privacy tests/pipeline/test_pipeline_privacy.py tests/pipeline/test_privacy_ladder.py "
                 "tests/pipeline/test_privacy_recheck.py tests/pipeline/test_privacy_batch.py "
                 "tests/pipeline/test_identity_batch.py "
                 "tests/faces/test_cadence.py tests/blend/test_redact.py tests/pipeline/test_baseline.py")
GOAL = 0.9

#: Surviving mutants that cannot change behaviour, keyed by :attr:`Mutant.key` (``function:
#: source line  [mutation]``, ``#k`` for the k-th identical mutation of one line), with the
#: reason. They are reported apart and left out of the share (killed / (mutants - equivalent));
#: one that a test does kill is reported as a stale entry, and so is a key no mutant has.
EQUIVALENT: dict[str, str] = {
    "_redact_window_: weights = torch.ones_like(patch[0]) if mask is None else mask  [0 -> 1]":
        "patch[0], patch[1] and patch[-1] are the three channels of one window: the same shape, and only it is used",
    "_redact_window_: weights = torch.ones_like(patch[0]) if mask is None else mask  [0 -> -1]":
        "patch[0], patch[1] and patch[-1] are the three channels of one window: the same shape, and only it is used",
    "_redact_window_: view.copy_(out.round_().clamp_(0, 255).permute(1, 2, 0))  [0 -> -1] #2":
        "every redaction mixes the window (0..255) with a value in 0..255 (averages, a mean, 0): no value "
        "below 0 for the clamp to catch",
    "_redact_window_: view.copy_(out.round_().clamp_(0, 255).permute(1, 2, 0))  [255 -> 256]":
        "every redaction mixes the window (0..255) with a value in 0..255 (averages, a mean, 0): no value "
        "above 255 for the clamp to catch",
    'redact_faces_: check_shape(regions, ["N", 5], "regions", what="(cx, cy, semi_across, semi_along, tilt)")  '
    "[call statement deleted]":
        "head_boxes, called next with the same regions, checks the same shape with the same message (for "
        "tensors; a regions argument that is no tensor at all fails there with another exception)",
    "redact_faces_: for region, (left, top, right, bottom) in zip(regions, windows, strict=True):  [True -> False]":
        "the windows are computed from the regions' rows: the lengths always agree",
    "check_identities: sim = float(cosine_similarity(code[None], ref[None].to(code.device)).reshape(-1)[0])  "
    "[0 -> -1]":
        "the similarity of one pair is one number: [-1] is [0]",
    "offline_dlib: @functools.lru_cache(maxsize=1)  [1 -> 2]":
        "offline_dlib takes no arguments: the cache never holds more than one entry",
    "embed_jobs: encoder = pieces[0][0].encoder  [0 -> -1] #2":
        "the pieces are grouped by encoder: the last piece's checker has the first one's encoder",
    'ladder_for: def ladder_for(method: str, head_redaction: str = "blur", redraws: int = 1) '
    '-> tuple[str, ...]:  [1 -> 2]':
        "ladder_for only asks whether redraws > 0 (how many is PrivacyGuard's redraws, set by the caller)",
    "_Face: orig: int = 0  [0 -> 1]":
        "never used: PrivacyGuard.apply builds every _Face with its orig index",
    "_Face: orig: int = 0  [0 -> -1]":
        "never used: PrivacyGuard.apply builds every _Face with its orig index",
    "PrivacyGuard.__init__: render: Render | None = None, redraw: Redraw | None = None, redraws: int = 0,  "
    "[0 -> -1]":
        "a draw is made only while a track's draws are below redraws: below 0 and below -1 are both never",
    "PrivacyGuard._ladder: for face, row in zip(to_check, sims, strict=True):  [True -> False]":
        "_similarities returns one row per face it was given, so the lengths always agree",
    'PrivacyGuard._next_rung: if rung == "redraw" and self.redrawn.get(track, 0) < self.redraws and '
    'self.redraw is not None:  [0 -> 1]':
        "the default is read only when _render made no draw for the track, i.e. redraws is 0, and then "
        "neither 0 nor 1 is below it",
    "PrivacyGuard._take_originals: if track >= 0 and all(bool(torch.isfinite(v).all()) for v in codes.values()):  "
    "[and <-> or]":
        "what it adds to the cache is never read: untracked entries (_cached needs track >= 0), and a track "
        "whose original is NaN fails its check, ends on solid and stays there (no later frame is checked)",
    "PrivacyGuard._take_originals: if track >= 0 and all(bool(torch.isfinite(v).all()) for v in codes.values()):  "
    "[0 -> -1]":
        "caches untracked originals under track -1, which _cached never reads (it needs track >= 0)",
    "PrivacyGuard._embed_one_by_one: codes = {c.name: c.embed(frames, index, points)[0] for c in "
    "self.checkers}  [0 -> -1]":
        "one face is embedded: row -1 is row 0",
    "PrivacyGuard._done: self.track_rung[record.track_id] = max(self.track_rung.get(record.track_id, 0), "
    "face.rung)  [0 -> -1]":
        "rungs are >= 0, so max(-1, rung) is max(0, rung)",
    "<module>: GENUINE_QUANTILE = 0.001  [0.001 -> 1.001]":
        "read only by bench/calibrate_privacy.py when the thresholds are measured again; no run reads it "
        "(the thresholds it produced are the PRIVACY_THRESHOLDS numbers, which the tests pin)",
    "<module>: GENUINE_QUANTILE = 0.001  [0.001 -> -0.999]":
        "as above: only the calibration bench reads it",
    "PrivacyGuard._cached: return track >= 0 and entry is not None and 0 <= frame_index - entry[0] < ORIGINAL_REFRESH_FRAMES  [<= -> <]":
        "asks only about a frame after the cached one: a track has one face per frame and each frame is "
        "checked once (a batch embeds its uncached faces before it reads the cache), so the distance is never 0",
    "PrivacyGuard._cached: return track >= 0 and entry is not None and 0 <= frame_index - entry[0] < ORIGINAL_REFRESH_FRAMES  [0 -> 1] #2":
        "1 <= d is 0 < d for integers: the same as above, the distance is never 0",
    "PrivacyGuard._cached: return track >= 0 and entry is not None and 0 <= frame_index - entry[0] < ORIGINAL_REFRESH_FRAMES  [0 -> -1]":
        "no untracked (track -1) original is ever cached (_originals keeps tracks >= 0), so entry is None",
    "PrivacyGuard._render: ok = [(f, c) for f, c in zip(group, codes, strict=True) if c is not None or "
    'rung == "grown_mask"]  [True -> False]':
        "codes is built with one entry per face of group just above: the lengths always agree",
    "_Check: @dataclass(frozen=True)  [True -> False]":
        "no _Check is ever changed after it is made: frozen only makes that an error",
    "PrivacyGuard._carries: and ref.headroom >= CARRY_HEADROOM and 0 < frame_indices[face.row] - ref.frame < "
    "RECHECK_FRAMES  [< -> <=]":
        "a track has one face per frame and a frame is planned once, so a face is never at distance 0 from "
        "its track's last check (as for _cached)",
    "PrivacyGuard._may_carry: and 0 < frame_indices[face.row] - frame_indices[anchor.row] < RECHECK_FRAMES  "
    "[< -> <=]":
        "the anchor is an earlier face of the same track: the distance is never 0",
    "PrivacyGuard._carries: and ref.headroom >= CARRY_HEADROOM and 0 < frame_indices[face.row] - ref.frame < "
    "RECHECK_FRAMES  [>= -> >]":
        "the headroom is a difference of float cosines: one exactly at the bound is not a case a run meets "
        "(0.05 is not a float; the test at 0.045 and 0.055 pins the bound)",
    "PrivacyGuard._ladder: if track < 0 or (kept is not None and kept.frame > frame_indices[face.row]):  "
    "[> -> >=]":
        "a track has one face per frame: a measured face is never at the frame of its track's kept check",
    "PrivacyGuard._ladder: self.last_check.pop(track, None)  [call statement deleted]":
        "a measured face with no carriable check ends on solid or a synthetic rung, and a track's rung only "
        "climbs: no later face of the track is on the rung a stale entry has, so it is never carried",
}

#: Hand-written mutants (module docstring): (module, source text, its replacement, what it breaks)
SCENARIOS: tuple[tuple[str, str, str, str], ...] = (
    ("reenact.blend.redact",
     '    _check_frame(frame)\n    if source is not None:',
     '    _check_frame(frame)\n    global _WEAKEN\n'
     '    _WEAKEN = globals().get("_WEAKEN", 0) + int(method == "blur" and shape == "ellipse")\n'
     '    if method == "blur" and shape == "ellipse" and _WEAKEN > 5:\n        return\n'
     '    if source is not None:',
     "the face-shaped blur stops blurring after its 5th face (a redaction that weakens mid-track)"),
    ("reenact.pipeline.privacy.guard",
     "            out = self._apply_rung(self.ladder[rung], frames, out, group)\n        weakened = []",
     "            pass\n        weakened = []",
     "carried faces are not redacted"),
    ("reenact.pipeline.privacy.guard",
     "            out = self._apply_rung(self.ladder[rung], frames, out, group)\n        weakened = []",
     '            out = self._apply_rung(self.ladder[min(rung, self.first_box)], frames, out, group)\n'
     "        weakened = []",
     "carried faces get their ladder's first redaction rung instead of the one their track reached"),
    ("reenact.pipeline.privacy.guard",
     "            if change(frames, out, face.row, face.record.box) < CARRY_CHANGE * ref.change:",
     "            if False:",
     "carried faces skip the pixel check (a weakened redaction is carried)"),
)

FLIPS: dict[type[ast.cmpop], tuple[type[ast.cmpop], ...]] = {
    ast.Lt: (ast.LtE, ast.GtE), ast.LtE: (ast.Lt, ast.Gt), ast.Gt: (ast.GtE, ast.LtE),
    ast.GtE: (ast.Gt, ast.Lt), ast.Eq: (ast.NotEq,), ast.NotEq: (ast.Eq,), ast.Is: (ast.IsNot,),
    ast.IsNot: (ast.Is,), ast.In: (ast.NotIn,), ast.NotIn: (ast.In,),
}
SYMBOL = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=",
          ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in"}


@dataclass(frozen=True)
class Mutant:
    module: str
    path: Path
    site: int  # index of the node in the target's walk order
    variant: int
    line: int
    what: str
    key: str = ""  # stable description (see EQUIVALENT): function, source line, mutation


# --- finding the target nodes ------------------------------------------------------------

def _module_path(module: str) -> Path:
    spec = importlib.util.find_spec(module.split(".")[0])
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"cannot find package of {module}")
    return ROOT.joinpath(*module.split(".")).with_suffix(".py")


def _target_roots(tree: ast.Module, name: str) -> list[ast.AST]:
    """The AST nodes whose insides are mutated for target ``name``."""
    roots: list[ast.AST] = []
    for node in tree.body:
        if name == "*":
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                roots.append(node)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Constant) \
                    and isinstance(node.value.value, (int, float)) and not isinstance(node.value.value, bool):
                roots.append(node.value)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
            roots.append(node)
    if not roots:
        raise SystemExit(f"target {name!r} not found")
    return roots


def _is_docstring(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    parent = parents.get(node)
    return isinstance(parent, ast.Expr) and isinstance(node, ast.Constant) and isinstance(node.value, str)


def _sites(tree: ast.Module, name: str) -> list[ast.AST]:
    """Every node of the target in a fixed order (the same for any copy of ``tree``)."""
    out: list[ast.AST] = []
    for root in _target_roots(tree, name):
        for node in ast.walk(root):
            if isinstance(node, ast.ClassDef) and node is not root:
                continue
            out.append(node)
    return out


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _in_annotation_or_fstring(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        parent = parents[node]
        if isinstance(parent, ast.JoinedStr) or isinstance(parent, ast.Raise):
            return True
        if isinstance(parent, (ast.arg, ast.AnnAssign)) and getattr(parent, "annotation", None) is node:
            return True
        if isinstance(parent, (ast.FunctionDef, ast.AsyncFunctionDef)) and parent.returns is node:
            return True
        node = parent
    return False


def _variants(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> list[tuple[str, Callable[[ast.AST], None]]]:
    """(description, apply) for each mutation of ``node``; apply edits a copy in place."""
    out: list[tuple[str, Callable[[ast.AST], None]]] = []
    if _in_annotation_or_fstring(node, parents):
        return out
    if isinstance(node, ast.Compare):
        for j, op in enumerate(node.ops):
            for new in FLIPS.get(type(op), ()):
                def flip(n: ast.AST, j: int = j, new: type[ast.cmpop] = new) -> None:
                    n.ops[j] = new()  # type: ignore[attr-defined]
                out.append((f"{SYMBOL[type(op)]} -> {SYMBOL[new]}", flip))
    elif isinstance(node, ast.BoolOp):
        swap = ast.Or if isinstance(node.op, ast.And) else ast.And
        out.append(("and <-> or", lambda n: setattr(n, "op", swap())))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        out.append(("not removed", lambda n: setattr(n, "op", ast.UAdd())))
    elif isinstance(node, ast.Constant) and not _is_docstring(node, parents):
        v = node.value
        if isinstance(v, bool):
            out.append((f"{v} -> {not v}", lambda n: setattr(n, "value", not n.value)))  # type: ignore[attr-defined]
        elif isinstance(v, (int, float)):
            out.append((f"{v!r} -> {v + 1!r}", lambda n: setattr(n, "value", n.value + 1)))  # type: ignore[attr-defined]
            out.append((f"{v!r} -> {v - 1!r}", lambda n: setattr(n, "value", n.value - 1)))  # type: ignore[attr-defined]
    elif isinstance(node, ast.Return) and node.value is not None and not (
            isinstance(node.value, ast.Constant) and node.value.value is None):
        out.append(("return value -> None", lambda n: setattr(n, "value", ast.Constant(None))))
    elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        out.append(("call statement deleted", lambda n: setattr(n, "value", ast.Constant(None))))
    return out


def _fix_not(tree: ast.AST) -> ast.AST:
    """``not x`` mutated to ``+x`` means ``x``: unwrap it so the source stays plain."""
    class Unwrap(ast.NodeTransformer):
        def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
            self.generic_visit(node)
            return node.operand if isinstance(node.op, ast.UAdd) and getattr(node, "_mutant", False) else node
    return Unwrap().visit(tree)


def _function_of(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> str:
    """Qualified name of the function (or class) around ``node``; ``<module>`` outside any."""
    names = []
    while node in parents:
        node = parents[node]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
    return ".".join(reversed(names)) or "<module>"


def mutants(targets: list[str]) -> Iterator[tuple[Mutant, str]]:
    """Every mutant with the full source of its mutated module."""
    seen: dict[str, int] = {}
    for target in targets:
        module, _, name = target.partition(":")
        path = _module_path(module)
        source = path.read_text()
        lines = source.splitlines()
        base = ast.parse(source)
        parents = _parents(base)
        for site, node in enumerate(_sites(base, name)):
            for variant, (what, _apply) in enumerate(_variants(node, parents)):
                tree = copy.deepcopy(base)
                node_copy = _sites(tree, name)[site]
                _variants(node_copy, _parents(tree))[variant][1](node_copy)
                if isinstance(node_copy, ast.UnaryOp):
                    node_copy._mutant = True  # type: ignore[attr-defined]
                    tree = _fix_not(tree)  # type: ignore[assignment]
                line = getattr(node, "lineno", 0)
                code = lines[line - 1].strip() if line else ""
                key = f"{_function_of(node, parents)}: {code}  [{what}]"
                seen[key] = seen.get(key, 0) + 1
                if seen[key] > 1:  # the same mutation twice on one line: numbered in walk order
                    key = f"{key} #{seen[key]}"
                yield (Mutant(module, path, site, variant, line, what, key),
                       ast.unparse(ast.fix_missing_locations(tree)))


def scenarios(targets: list[str]) -> Iterator[tuple[Mutant, str]]:
    """The :data:`SCENARIOS` of the targets' modules, with the full source of their module."""
    modules = {target.partition(":")[0] for target in targets}
    for k, (module, old, new, what) in enumerate(SCENARIOS):
        if module not in modules:
            continue
        path = _module_path(module)
        source = path.read_text()
        if source.count(old) != 1:
            raise SystemExit(f"scenario {what!r}: its source text is not found once in {module}; update SCENARIOS")
        # line 0: no test is selected by its line, so all the selected tests run
        yield Mutant(module, path, -1, k, 0, what, f"scenario: {what}"), source.replace(old, new)


# --- running the tests against a copy ----------------------------------------------------

def _preload() -> None:
    """Import the heavy third-party modules once, before forking (never ``reenact`` itself)."""
    for name in ("numpy", "torch", "scipy", "scipy.optimize", "PIL.Image", "av", "kornia", "yaml",
                 "pytorch_msssim", "pytest", "onnxruntime", "cv2"):
        try:
            __import__(name)
        except ImportError:
            pass


def run_tests(copy_root: Path, test_args: list[str], timeout: float,
              trace: tuple[set[str], Path] | None = None) -> tuple[int, float]:
    """Run pytest in a forked child with ``copy_root`` first on sys.path; (exit code, seconds).

    A child that runs past ``timeout`` is killed and counts as failing (exit code -9). With
    ``trace`` (files, out) the child writes which lines of those files each test ran to
    ``out`` (JSON ``[[nodeid, [[file, line], ...]], ...]`` in the order the tests ran)."""
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
            os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
            sys.path[:0] = [str(copy_root), str(ROOT)]
            os.chdir(ROOT)
            plugins = [] if trace is None else [_LineTracer(*trace)]
            rc = pytest.main(["-q", "-x", "-p", "no:cacheprovider", "-p", "no:randomly", "-o", "pythonpath=",
                              *test_args], plugins=plugins)
            for plugin in plugins:
                plugin.write()
            os._exit(int(rc))
        except BaseException:
            os._exit(99)
    deadline = start + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), time.perf_counter() - start
        if time.perf_counter() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return -9, time.perf_counter() - start
        time.sleep(0.05)


class _LineTracer:
    """pytest plugin: the lines of ``files`` (absolute paths) each test runs, written to ``out``."""

    def __init__(self, files: set[str], out: Path) -> None:
        self.files, self.out = files, out
        self.current: set[tuple[str, int]] | None = None
        self.runs: list[tuple[str, set[tuple[str, int]]]] = []

    def _local(self, frame: object, event: str, arg: object) -> Callable[..., object] | None:
        if self.current is not None:
            self.current.add((frame.f_code.co_filename, frame.f_lineno))  # type: ignore[attr-defined]
        return self._local

    def _global(self, frame: object, event: str, arg: object) -> Callable[..., object] | None:
        if frame.f_code.co_filename not in self.files:  # type: ignore[attr-defined]
            return None
        return self._local(frame, event, arg)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item: object, nextitem: object) -> Iterator[None]:
        self.current = set()
        sys.settrace(self._global)
        try:
            yield
        finally:
            sys.settrace(None)
            self.runs.append((item.nodeid, self.current))  # type: ignore[attr-defined]
            self.current = None

    def write(self) -> None:
        import json

        self.out.write_text(json.dumps([[nodeid, sorted(lines)] for nodeid, lines in self.runs]))


def tests_per_line(copy_root: Path, test_args: list[str], paths: set[Path],
                   timeout: float) -> dict[tuple[Path, int], list[str]]:
    """Which tests run each line of ``paths`` (repository paths), in the order they run."""
    import json

    files = {str(copy_root / p.relative_to(ROOT)): p for p in paths}
    with tempfile.TemporaryDirectory(prefix="reenact-trace-") as tmp:
        out = Path(tmp) / "lines.json"
        rc, _s = run_tests(copy_root, test_args, timeout, trace=(set(files), out))
        if rc != 0 or not out.exists():
            raise SystemExit(f"tracing the tests' lines failed (exit {rc})")
        runs = json.loads(out.read_text())
    per_line: dict[tuple[Path, int], list[str]] = {}
    for nodeid, lines in runs:
        for file, line in lines:
            per_line.setdefault((files[file], line), []).append(nodeid)
    return per_line


def _options_only(test_args: list[str]) -> list[str]:
    """``test_args`` without its test paths (replaced by node ids per mutant)."""
    return [a for a in test_args if a.startswith("-") or not (ROOT / a.split("::")[0]).exists()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", action="append", help="module:function|Class|* (repeatable)")
    parser.add_argument("--tests", default=DEFAULT_TESTS, help=f"pytest arguments (default: {DEFAULT_TESTS!r})")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds per mutant before it counts as killed (default: 5x the unmutated run, "
                             "at least 20 s)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = parser.parse_args(argv)
    targets = args.target or list(DEFAULT_TARGETS)
    test_args = shlex.split(args.tests)
    all_mutants = list(mutants(targets)) + list(scenarios(targets))
    if args.list:
        for m, _src in all_mutants:
            print(f"{m.path.relative_to(ROOT)}:{m.line}  {m.key}")
        print(f"{len(all_mutants)} mutants")
        return 0

    started = time.perf_counter()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _preload()
    with tempfile.TemporaryDirectory(prefix="reenact-mutants-") as tmp:
        copy_root = Path(tmp)
        shutil.copytree(ROOT / "reenact", copy_root / "reenact",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        # bytecode (the copy's, and pytest's rewritten tests) is cached in the temporary folder,
        # never beside the sources, and shared by the children
        sys.pycache_prefix = str(copy_root / "pycache")
        sys.dont_write_bytecode = False
        # compiled once here, so a child compiles only the module it mutates; the .pyc files are
        # checked by the source's hash (not its mtime and size, which a mutant written within the
        # same second can share with the source before it), so no stale bytecode is ever run
        compileall.compile_dir(copy_root / "reenact", quiet=1,
                               invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
        rc, seconds = run_tests(copy_root, test_args, args.timeout or 300.0)
        if rc != 0:
            print(f"the selected tests fail on the unmutated code (exit {rc}); fix that first")
            return 2
        timeout = args.timeout or max(20.0, 5 * seconds)
        print(f"unmutated: tests pass in {seconds:.1f} s; a mutant running past {timeout:.0f} s counts as killed")
        # a mutant runs only the tests that run its line (all of them for a line no test runs:
        # module constants and signature defaults are evaluated at import, before any test)
        per_line = tests_per_line(copy_root, test_args, {m.path for m, _src in all_mutants}, 4 * timeout)
        options = _options_only(test_args)
        # the copy, not the tree, is what the tests import: a copy that cannot be imported must fail them
        sentinel = copy_root / "reenact" / "pipeline" / "privacy" / "guard.py"
        original = sentinel.read_text()
        sentinel.write_text("raise ImportError('mutation sentinel')\n" + original)
        rc, _s = run_tests(copy_root, test_args, timeout)
        sentinel.write_text(original)
        if rc == 0:
            print("the tests passed with a broken copy: they do not import the copy; aborting")
            return 2

        killed, survivors, equivalent, stale = 0, [], [], []
        for k, (m, src) in enumerate(all_mutants, 1):
            dest = copy_root / m.path.relative_to(ROOT)
            before = dest.read_text()
            dest.write_text(src)
            selected = per_line.get((m.path, m.line))
            rc, seconds = run_tests(copy_root, [*options, *selected] if selected else test_args, timeout)
            dest.write_text(before)
            where = f"{m.path.relative_to(ROOT)}:{m.line}"
            status = "killed" if rc != 0 else "equivalent" if m.key in EQUIVALENT else "SURVIVED"
            ran = f"{len(selected)} tests" if selected else "all tests"
            print(f"[{k}/{len(all_mutants)}] {status:10s} {where}  {m.what}  ({ran}, {seconds:.1f} s)", flush=True)
            if rc != 0:
                killed += 1
                if m.key in EQUIVALENT:
                    stale.append(f"{where}  killed but listed as equivalent: {m.key}")
            elif m.key in EQUIVALENT:
                equivalent.append(f"{where}  {m.key}: {EQUIVALENT[m.key]}")
            else:
                survivors.append(f"{where}  {m.key}")
    keys = {m.key for m, _src in all_mutants}
    stale += [f"no such mutant: {key}" for key in EQUIVALENT if key not in keys and _in_targets(key, targets)]
    counted = len(all_mutants) - len(equivalent)
    share = killed / counted if counted else 0.0
    print(f"mutants: {len(all_mutants)}, killed: {killed}, equivalent: {len(equivalent)}, "
          f"survived: {len(survivors)}; run took {time.perf_counter() - started:.0f} s")
    for e in equivalent:
        print(f"equivalent {e}")
    for s in survivors:
        print(f"survivor {s}")
    for e in stale:
        print(f"stale EQUIVALENT entry: {e}")
    if str(ROOT) not in sys.path:
        sys.path.append(str(ROOT))  # last: the mutated copies stay first for the test runs
    from testing.goals import goal

    line = goal("mutants_killed_privacy", share, ">=", GOAL)
    print(line)
    return 0 if line.endswith("PASS") and not stale else 1


def _in_targets(key: str, targets: list[str]) -> bool:
    """Whether an EQUIVALENT key could belong to the targets of this run (a run of some of the
    targets does not call the others' entries stale)."""
    return targets == list(DEFAULT_TARGETS)


if __name__ == "__main__":
    sys.exit(main())
