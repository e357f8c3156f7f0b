"""``reenact models list|pull|import|verify``: the model weight cache (reenact.models)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "list, pull, import and verify model weights"
#: what a stopped ``models`` command leaves (:func:`reenact.exits.run_guarded`): a download's
#: ``.part`` stays for the next pull to resume; every other file is written atomically
LEFT = ("nothing partial was written, except a download in progress: its .part file stays in the cache's "
        "downloads/ folder and the same command resumes it")


def add_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="models_command", required=True)
    ls = sub.add_parser("list", allow_abbrev=False, help="packs, their components, sources, licences and cache state")
    ls.add_argument("pack", nargs="?", default=None, help="only this pack")
    ls.add_argument("--json", action="store_true", help="print JSON")
    pull = sub.add_parser("pull", allow_abbrev=False, help="download (checked, resumable) and convert a pack's weights")
    pull.add_argument("pack", help="pack name, e.g. full")
    pull.add_argument("--component", default=None, help="only this component, e.g. generator")
    imp = sub.add_parser("import", allow_abbrev=False, help="convert a local file into the cache (NVlabs .pkl, rosinality .pt, ...)")
    imp.add_argument("target", help="PACK/COMPONENT, e.g. full/generator; or `paper` with the authors' folder(s)")
    imp.add_argument("file", type=Path, nargs="+",
                     help="the local weight file (for `paper`: one folder, or the pretrained-models and checkpoint folders)")
    ver = sub.add_parser("verify", allow_abbrev=False, help="re-hash and re-load a pack's cached weights")
    ver.add_argument("pack", help="pack name")
    ver.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    return {"list": _list, "pull": _pull, "import": _import, "verify": _verify}[args.models_command](args)


def _list(args: argparse.Namespace) -> int:
    from reenact.errors import ConfigError
    from reenact.models.pack_status import component_states, pack_verdict
    from reenact.packs import registry as weights  # imports torch: loaded here, after parsing

    names = [args.pack] if args.pack else weights.list_packs()
    packs = {}
    refused = []
    for name in names:
        try:
            packs[name] = component_states(name)
        except ConfigError as exc:
            if args.pack:
                raise
            refused.append(f"error: pack {name!r} refused: {exc}")  # the other packs are still listed
    if args.json:
        rows = [{"pack": s.pack, "component": s.component, "kind": s.kind, "source": s.source,
                 "sha256": weights.get_component(s.pack, s.component).sha256, "licence": s.licence,
                 "state": s.state, "path": str(s.path) if s.path else None, "how": s.how}
                for states in packs.values() for s in states]
        verdicts = {name: pack_verdict(name, states) for name, states in packs.items()}
        print(json.dumps({"cache": str(weights.cache_dir()), "packs": verdicts, "components": rows}, indent=1))
    else:
        print(f"cache: {weights.cache_dir()}")
        for name, states in packs.items():
            print(pack_verdict(name, states))
            for s in states:
                print(f"  {s.line()}")
                print(f"  {'':<18}   source: {s.source or 'reenact-train'}; licence: {s.licence}")
    for line in refused:
        print(line, file=sys.stderr)
    return 2 if refused else 0


def _pull(args: argparse.Namespace) -> int:
    from reenact.packs import registry as weights

    got = weights.pull(args.pack, args.component, progress=not args.quiet)
    if not args.quiet:
        for comp_name, path in got.items():
            print(f"{args.pack}/{comp_name}: {path if path is not None else 'not available (see warning)'}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from reenact.packs import registry as weights

    if "/" not in args.target and weights.get_pack(args.target).components["generator"].kind == "stylegan1":
        from reenact.packs.paper_import import import_paper

        for comp_name, imported in import_paper(args.file, args.target).items():
            if not args.quiet:
                print(f"imported {args.target}/{comp_name}: {imported}")
        return 0
    if len(args.file) != 1:
        from reenact.errors import InputError

        raise InputError(f"import {args.target}: give one file, got {len(args.file)}")
    path = weights.import_file(args.file[0], args.target)
    if not args.quiet:
        print(f"imported {args.file[0]} as {args.target}: {path}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from reenact.models.pack_status import component_states, pack_verdict, verify_line
    from reenact.packs import registry as weights

    results = weights.verify(args.pack)
    if args.json:
        print(json.dumps([{"component": v.component, "ok": v.ok, "path": str(v.path) if v.path else None,
                           "message": v.message} for v in results], indent=1))
    elif not args.quiet:
        broken = [v.component for v in results if not v.ok and v.path is not None]
        verdict = pack_verdict(args.pack, component_states(args.pack))
        if broken:
            verdict = f"{args.pack}: broken: {', '.join(broken)} failed the check (below)"
        print(verdict)
        for v in results:
            print(f"  {verify_line(args.pack, v.component, v.ok, v.path, v.message)}")
    return 0 if all(v.ok for v in results) else 1
