"""Decoding request bodies with bounds on the work one body may cause.

A body is at most 3 MiB (the app's `client_max_size`, upstream's request limit), but a small body
can still cost without bound once decoded:
- YAML aliases: 400 bytes of nested anchors (`a1: &a1 [*a0, *a0, ...]`) name 9**9 nodes; PyYAML
  builds them as shared references in milliseconds, and the first copy, walk or `json.dumps` of
  the result then stalls the whole server for minutes. Every YAML body is composed first, and its
  node graph, with each alias counted as the nodes it stands for, must stay within
  `ALIAS_EXPANSION` nodes beyond the ones written out, and never refer to itself (as go-yaml's
  "excessive aliasing" check in upstream's decoder).
- Nesting: every walker of an object (validation, strategic merge, deepcopy) recurses, so JSON and
  YAML deeper than `MAX_DEPTH` are refused at decoding instead of failing later with a 500.
- Bodies above `OFFLOAD_ABOVE` bytes are decoded on a small thread pool, so one big body does not
  hold the event loop (and every other tenant's request) for the whole parse.

Errors are `BodyError` (a ValueError) with a message for a 400 Status.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import yaml

MAX_DEPTH = 100  # Kubernetes objects nest ~15 deep; each walker costs 2-3 Python frames a level
ALIAS_EXPANSION = 10_000  # nodes YAML aliases may add beyond the nodes written out
OFFLOAD_ABOVE = 256 * 1024

T = TypeVar("T")
_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="body-decode")


class BodyError(ValueError):
    """A body that is not decoded: malformed, too deep, or expanding too much."""


# -- YAML ----------------------------------------------------------------------------------------

_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser when present


class _Loader(_Base):  # type: ignore[misc]
    """The safe loader, producing only JSON values: timestamps stay strings (as sigs.k8s.io/yaml
    turns YAML into JSON), and tags with no JSON form are refused."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in _Base.yaml_implicit_resolvers.items()
}


def _not_json(loader: Any, node: yaml.Node) -> Any:
    raise yaml.constructor.ConstructorError(None, None, f"{node.tag} has no JSON form", node.start_mark)


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Base.construct_yaml_str)
for _tag in ("binary", "set", "omap", "pairs"):
    _Loader.add_constructor(f"tag:yaml.org,2002:{_tag}", _not_json)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def check_node_graph(root: yaml.Node) -> int:
    """Refuses a composed YAML document whose aliases expand beyond ALIAS_EXPANSION nodes, refer
    to themselves, or nest deeper than MAX_DEPTH; else the nodes its aliases add. Linear in the
    distinct nodes (sizes memoized)."""
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (nodes it expands to, depth)
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            kids = [sizes[id(k)] for k in _children(node)]
            size = 1 + sum(s for s, _ in kids)
            depth = 1 + max((d for _, d in kids), default=0)
            if depth > MAX_DEPTH:
                raise BodyError(f"the body nests deeper than {MAX_DEPTH} levels")
            sizes[key] = (size, depth)
            continue
        if key in sizes:
            continue
        on_path.add(key)
        stack.append((node, True))
        for kid in _children(node):
            if id(kid) in on_path:
                raise BodyError(
                    f"YAML alias at line {kid.start_mark.line + 1} refers to a node that "
                    "contains it; JSON has no recursive values"
                )
            if id(kid) not in sizes:
                stack.append((kid, False))
    expanded = sizes[id(root)][0]
    if expanded - len(sizes) > ALIAS_EXPANSION:
        raise BodyError(
            f"YAML aliases expand the body to {expanded} nodes from {len(sizes)} written "
            f"out; at most {ALIAS_EXPANSION} more are allowed"
        )
    return expanded - len(sizes)


def yaml_value(raw: bytes | str) -> Any:
    """One YAML document as JSON values (None for an empty body). Raises BodyError."""
    loader = _Loader(raw)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        aliased = check_node_graph(node)
        value = loader.construct_document(node)
    except (yaml.YAMLError, RecursionError) as e:
        raise BodyError(f"error converting YAML to JSON: {e}") from None
    finally:
        loader.dispose()
    # aliases construct shared objects; a handler changing one copy must not change the others
    return json.loads(json.dumps(value)) if aliased else value


# -- JSON ----------------------------------------------------------------------------------------


def check_depth(value: Any) -> None:
    """Refuses a JSON value nesting deeper than MAX_DEPTH (walks containers only, iteratively)."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise BodyError(f"the body nests deeper than {MAX_DEPTH} levels")
        if isinstance(v, dict):
            stack.extend((c, depth + 1) for c in v.values() if isinstance(c, (dict, list)))
        elif isinstance(v, list):
            stack.extend((c, depth + 1) for c in v if isinstance(c, (dict, list)))


def json_value(raw: bytes | str) -> Any:
    """A JSON body (None when empty). Raises BodyError."""
    try:
        value = json.loads(raw or b"null")
    except RecursionError:  # json's C scanner stops at the interpreter's recursion limit
        raise BodyError(f"the body nests deeper than {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise BodyError(f"json parse error: {e}") from None
    check_depth(value)
    return value


def yaml_or_json(raw: bytes) -> Any:
    """An apply body: kubectl sends JSON (fast path), other appliers YAML."""
    try:
        return json_value(raw)
    except BodyError:
        return yaml_value(raw)


async def off_loop(decode: Callable[[bytes], T], raw: bytes) -> T:
    """`decode(raw)`, on the decoding pool when the body is big enough to hold the loop."""
    if len(raw) <= OFFLOAD_ABOVE:
        return decode(raw)
    return await asyncio.get_running_loop().run_in_executor(_POOL, decode, raw)
